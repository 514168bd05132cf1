"""The typed jobs client against a real ``stream-pipeline serve`` (a process with a token, on a
free loopback port): the whole lifecycle, results as server-sent events until the job ends, and
every refusal as one worded :class:`JobsClientError`."""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stream_pipeline.jobs.client import DEFAULT_SERVER, JobsClient, JobsClientError, sse_data
from stream_pipeline.jobs.spec import JobSpec, JobStatus
from tests.jobs.conftest import free_socket
from tests.jobs.processes import Serve

TOKEN = "tests-only-token-5e1f"
SMALL = "width=64&height=48&fps=30"
LIVE = f"synthetic://street?frames=0&realtime=1&{SMALL}"


def paced(frames: int) -> str:
    """A finite source paced at 30 fps: it runs long enough to be watched, then ends."""
    return f"synthetic://street?frames={frames}&realtime=1&{SMALL}"


@dataclass
class Served:
    """A running service: its URL, output dir and the model its jobs use."""

    url: str
    output_dir: Path
    model: Path

    def spec(self, name: str, url: str, **extra: Any) -> dict[str, Any]:
        return {
            "name": name,
            "model": str(self.model),
            "sources": [{"id": name, "url": url}],
            "sinks": [{"type": "jsonl", "path": f"{name}/predictions.jsonl"}],
            **extra,
        }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_package: Path) -> Iterator[Served]:
    """``stream-pipeline serve --state-dir`` with ``$STREAM_PIPELINE_TOKEN`` set, for the module."""
    root = tmp_path_factory.mktemp("jobs-client")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STREAM_PIPELINE_TOKEN", TOKEN)  # the service reads it at start
        serve = Serve(root / "state", root / "out", tiny_package)
    try:
        yield Served(serve.url, root / "out", tiny_package)
    finally:
        serve.kill(signal.SIGTERM)


def wait_until(client: JobsClient, job_id: str, ok: Any, seconds: float = 30) -> JobStatus:
    deadline = time.monotonic() + seconds
    while True:
        status = client.show(job_id)
        if ok(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def frames(status: JobStatus) -> int:
    return sum(s.frames for s in status.sources)


def test_lifecycle_with_results_until_the_job_ends(served: Served) -> None:
    with JobsClient(served.url, token=TOKEN) as client:
        # A typed spec and a plain mapping are both accepted.
        clip = client.create(JobSpec.model_validate(served.spec("c-clip", paced(60))))
        assert isinstance(clip, JobStatus) and clip.name == "c-clip"
        seen = list(client.results(clip.id))  # follows until the job ends, then stops
        assert seen, "no result came before the job ended"
        ids = [p["frame_id"] for p in seen]
        assert ids == sorted(set(ids)) and {p["source_id"] for p in seen} == {"c-clip"}
        done = wait_until(client, clip.id, lambda s: s.state == "completed")
        assert done.state == "completed" and done.sinks[0].delivered == 60

        live = client.create(served.spec("c-live", LIVE, restart="always"))
        assert [j.id for j in client.list()][-2:] == [clip.id, live.id]
        wait_until(client, live.id, lambda s: s.state == "running" and frames(s) > 0)
        first = next(client.results(live.id, follow=False))
        assert first["source_id"] == "c-live"

        added = client.add_source(live.id, {"id": "c-live-2", "url": LIVE})
        assert [s.id for s in added.sources] == ["c-live", "c-live-2"]
        removed = client.remove_source(live.id, "c-live-2")
        assert [s.id for s in removed.sources] == ["c-live"]

        assert client.pause(live.id).state == "paused"
        assert client.show(live.id).state == "paused"
        assert client.resume(live.id).state == "running"
        wait_until(client, live.id, lambda s: frames(s) > 0)
        stopped = client.stop(live.id)
        assert stopped.state == "stopped" and stopped.sinks[0].delivered > 0
        lines = (served.output_dir / "c-live" / "predictions.jsonl").read_bytes().splitlines()
        assert len(lines) == stopped.sinks[0].delivered


def refusal(call: Any) -> JobsClientError:
    with pytest.raises(JobsClientError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and TOKEN not in message
    return caught.value


def test_refusals_carry_the_servers_message_and_status(served: Served) -> None:
    with JobsClient(served.url, token=TOKEN) as client:
        bad = served.spec("c-bad", LIVE, sinks=[{"type": "jsonl", "path": "../outside.jsonl"}])
        err = refusal(lambda: client.create(bad))
        assert err.status == 422
        assert "sinks.0.path: leaves --output-dir" in str(err) and "HTTP 422" in str(err)
        assert all(j.name != "c-bad" for j in client.list())  # nothing was created

        err = refusal(lambda: client.show("nope"))
        assert err.status == 404 and "no job 'nope'" in str(err)
        err = refusal(lambda: client.pause("nope"))
        assert err.status == 404

        done = client.create(served.spec("c-short", paced(3)))
        wait_until(client, done.id, lambda s: s.state == "completed")
        err = refusal(lambda: next(client.results(done.id)))
        assert err.status == 409 and "completed" in str(err)


def test_a_missing_or_wrong_token_is_a_401(served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAM_PIPELINE_TOKEN", raising=False)
    with JobsClient(served.url) as client:
        err = refusal(client.list)
        assert err.status == 401 and "missing bearer token" in str(err)
        assert "STREAM_PIPELINE_TOKEN" in str(err)
    with JobsClient(served.url, token="not-the-token") as client:
        err = refusal(client.list)
        assert err.status == 401 and "wrong bearer token" in str(err)
        assert "not-the-token" not in str(err)
    monkeypatch.setenv("STREAM_PIPELINE_TOKEN", TOKEN)  # the default comes from the environment
    with JobsClient(served.url) as client:
        assert isinstance(client.list(), list)


def test_an_unreachable_service_is_one_clear_line() -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with JobsClient(f"http://127.0.0.1:{port}", timeout=5) as client:
        err = refusal(client.list)
    assert err.status is None
    assert str(err).startswith(f"cannot reach the jobs service at http://127.0.0.1:{port}: ")
    assert "refused" in str(err)


def test_the_server_url_is_checked_and_defaults_to_serves_port(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from stream_pipeline.cli import _parser

    serve = _parser().parse_args(["serve"])
    assert f"http://{serve.host}:{serve.port}" == DEFAULT_SERVER
    monkeypatch.delenv("STREAM_PIPELINE_SERVER", raising=False)
    with JobsClient() as client:
        assert client.base_url == DEFAULT_SERVER
    monkeypatch.setenv("STREAM_PIPELINE_SERVER", "http://10.0.0.9:9000/")
    with JobsClient() as client:
        assert client.base_url == "http://10.0.0.9:9000"
    for bad in ("10.0.0.9:9000", "ftp://x", "http://"):
        with pytest.raises(JobsClientError, match="must be http"):
            JobsClient(bad)


def test_server_sent_events_are_parsed_as_the_standard_has_them() -> None:
    stream = [
        ": a comment, then an event in two data lines",
        'data: {"a":',
        "data:1}",
        "",
        "event: ping",
        "data: not a message",
        "",
        "",  # a blank line with no event before it dispatches nothing
        "id: 7",
        "data: last",
        "",
        "data: torn, no blank line after it",
    ]
    assert list(sse_data(stream)) == ['{"a":\n1}', "last"]


@pytest.mark.slow
def test_following_a_service_that_stops_ends_in_one_clear_error(
    tmp_path: Path, tiny_package: Path
) -> None:
    serve = Serve(tmp_path / "state", tmp_path / "out", tiny_package)
    try:
        with JobsClient(serve.url) as client:  # loopback, no token
            job = client.create(Served(serve.url, tmp_path, tiny_package).spec("c-gone", LIVE))
            results = client.results(job.id)
            assert next(results)["source_id"] == "c-gone"
            serve.proc.send_signal(signal.SIGTERM)
            err = refusal(lambda: list(results))
        assert err.status is None
        assert f"closed the results of job {job.id} before the job ended" in str(err)
    finally:
        serve.kill(signal.SIGTERM)
