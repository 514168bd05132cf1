"""``stream-pipeline jobs …``: the jobs API from the command line, through :class:`JobsClient`.

    stream-pipeline jobs [--server URL] create FILE | list [--json|-q] | show ID | pause ID |
        resume ID | stop ID | add-source ID [SID=]URL | remove-source ID SID |
        results ID [--follow]

``--server`` defaults to ``$STREAM_PIPELINE_SERVER``, else ``http://127.0.0.1:8080``; the token
comes from ``$STREAM_PIPELINE_TOKEN``. A status is printed as JSON (``list`` and ``create``: a
table, or JSON with ``--json``); results as one JSON object a line. Every failure — a missing or
unparsable file, a spec the service refuses (its message names the field), an unknown job, a 401,
a service that cannot be reached — is one line on stderr and exit status 2 (raised as a
:class:`~stream_pipeline.errors.StreamPipelineError` for the CLI's ``main`` to word).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream_pipeline.errors import ConfigError

if TYPE_CHECKING:
    from stream_pipeline.jobs.client import JobsClient
    from stream_pipeline.jobs.spec import JobStatus

__all__ = ["add_jobs_parser", "run_jobs_command"]

_COMMANDS = ("create", "list", "show", "pause", "resume", "stop", "add-source", "remove-source")


def _connection_args(parser: argparse.ArgumentParser, defaults: bool) -> None:
    # On `jobs` with their defaults, and again on each subcommand without (SUPPRESS leaves the
    # value parsed before it alone), so that `jobs list --server URL` works as well.
    parser.add_argument(
        "--server",
        default=None if defaults else argparse.SUPPRESS,
        metavar="URL",
        help="the service ($STREAM_PIPELINE_SERVER, default http://127.0.0.1:8080); "
        "the token comes from $STREAM_PIPELINE_TOKEN",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        default=30.0 if defaults else argparse.SUPPRESS,
        help="seconds per request (default: 30)",
    )


def add_jobs_parser(sub: Any) -> None:
    """Add ``jobs`` and its subcommands to the CLI's subparsers ``sub``."""
    jobs = sub.add_parser(
        "jobs", help="create, list, watch and stop jobs of a running `serve --state-dir`"
    )
    _connection_args(jobs, defaults=True)
    common = argparse.ArgumentParser(add_help=False)
    _connection_args(common, defaults=False)
    cmds = jobs.add_subparsers(dest="jobs_command", parser_class=type(jobs))

    def command(name: str, what: str, *ids: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = cmds.add_parser(name, help=what, parents=[common])
        for dest in ids:
            parser.add_argument(dest, help="job id" if dest == "id" else None)
        return parser

    create = command("create", "create the job(s) of a JSON or YAML file")
    create.add_argument("file", help="one job spec, a list of them, or {jobs: [...]}")
    listing = command("list", "every job, oldest first")
    for p in (create, listing):
        how = p.add_mutually_exclusive_group()
        how.add_argument("--json", action="store_true", help="a JSON list of statuses")
        how.add_argument("-q", "--quiet", action="store_true", help="job ids only, one a line")
    command("show", "a job's status as JSON", "id")
    command("pause", "pause a job (sources stop, sinks stay open)", "id")
    command("resume", "resume a paused job", "id")
    command("stop", "stop a job (its sinks flushed and closed)", "id")
    add = command("add-source", "hot-add a source to a running job", "id")
    add.add_argument("source", metavar="SID=URL", help="the new source's id and URL")
    command("remove-source", "hot-remove a source from a job", "id", "source_id")
    results = command("results", "the job's predictions, one JSON object a line", "id")
    results.add_argument(
        "-f", "--follow", action="store_true", help="until the job ends or Ctrl-C (else: the next)"
    )


def run_jobs_command(args: argparse.Namespace) -> int:
    """Run the parsed ``jobs`` subcommand; its exit status."""
    from stream_pipeline.jobs.client import JobsClient

    command = args.jobs_command
    if command is None:
        raise ConfigError(f"jobs needs a command: {', '.join(_COMMANDS)} or results")
    with JobsClient(args.server, timeout=args.timeout) as client:
        if command == "results":
            return _results(client, args.id, args.follow)
        if command == "create":
            statuses = _create(client, Path(args.file))
        elif command == "list":
            statuses = client.list()
        else:
            _print_json(_control(client, args).model_dump(mode="json"))
            return 0
    if args.json:
        _print_json([s.model_dump(mode="json") for s in statuses])
    elif args.quiet:
        sys.stdout.write("".join(s.id + "\n" for s in statuses))
    else:
        sys.stdout.write(_table(statuses))
    return 0


def _control(client: JobsClient, args: argparse.Namespace) -> JobStatus:
    command, job_id = args.jobs_command, args.id
    if command == "add-source":
        sid, sep, url = args.source.partition("=")
        if not (sep and sid and url):
            raise ConfigError(f"add-source wants SID=URL, got {args.source!r}")
        return client.add_source(job_id, {"id": sid, "url": url})
    if command == "remove-source":
        return client.remove_source(job_id, args.source_id)
    actions = {"show": client.show, "pause": client.pause, "resume": client.resume}
    return actions.get(command, client.stop)(job_id)


def _specs(path: Path) -> list[Any]:
    """The job specs of ``path`` as written (the service validates them, naming the field)."""
    from stream_pipeline.jobs.declare import read_spec_file

    raw = read_spec_file(path, label="jobs create")
    if isinstance(raw, dict) and set(raw) == {"jobs"}:
        raw = raw["jobs"]
    specs = raw if isinstance(raw, list) else [raw]
    if not specs or not all(isinstance(s, dict) for s in specs):
        raise ConfigError(
            f"jobs create {path}: expected a job spec, a list of them, or {{'jobs': [...]}}"
        )
    return specs


def _create(client: JobsClient, path: Path) -> list[JobStatus]:
    """Each spec of ``path`` in order; a refusal names the spec and what was created before."""
    from stream_pipeline.jobs.client import JobsClientError

    specs = _specs(path)
    created: list[JobStatus] = []
    for i, spec in enumerate(specs):
        try:
            created.append(client.create(spec))
        except JobsClientError as exc:
            if len(specs) == 1:
                raise
            done = ", ".join(s.id for s in created) or "none"
            raise JobsClientError(
                f"jobs create {path}: jobs[{i}] ({spec.get('name', '?')}): {exc} "
                f"[created before it: {done}]",
                exc.status,
            ) from None
    return created


def _results(client: JobsClient, job_id: str, follow: bool) -> int:
    try:
        with contextlib.closing(client.results(job_id, follow=follow)) as predictions:
            for prediction in predictions:
                sys.stdout.write(json.dumps(prediction, separators=(",", ":")) + "\n")
                sys.stdout.flush()  # a pipe (`| jq`) sees each frame as it comes
    except KeyboardInterrupt:
        pass  # Ctrl-C is how one stops following a live job: not an error
    except BrokenPipeError:
        # `… | head -3`: the reader left. Point stdout at /dev/null so that the interpreter's
        # own flush at exit does not fail again (the Python docs' recipe for SIGPIPE).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def _table(statuses: list[JobStatus]) -> str:
    """Statuses as an aligned text table: id, name, state, sources, frames, fps, error."""
    rows = [("ID", "NAME", "STATE", "SOURCES", "FRAMES", "FPS", "RESTARTS", "ERROR")]
    for s in statuses:
        error = " ".join((s.error or "").split())
        rows.append(
            (
                s.id,
                s.name,
                s.state,
                str(len(s.sources)),
                str(sum(x.frames for x in s.sources)),
                f"{sum(x.fps for x in s.sources):.1f}",
                str(s.restarts),
                error if len(error) <= 60 else error[:59] + "…",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "".join(
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in rows
    )


def _print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")
