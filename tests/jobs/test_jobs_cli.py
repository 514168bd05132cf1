"""``stream-pipeline jobs …`` against a real ``stream-pipeline serve`` with a token: the whole
lifecycle from a YAML file, results followed until the job ends (and Ctrl-C), and every bad input
as one line on stderr with exit status 2."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_pipeline.cli import main
from tests.jobs.conftest import free_socket
from tests.jobs.test_client import LIVE, TOKEN, Served, paced, served

__all__ = ["served"]  # the module's service fixture, shared with test_client


@pytest.fixture
def env(served: Served, monkeypatch: pytest.MonkeyPatch) -> Served:
    """The CLI's environment: the service's URL and token, as an operator would set them."""
    monkeypatch.setenv("STREAM_PIPELINE_SERVER", served.url)
    monkeypatch.setenv("STREAM_PIPELINE_TOKEN", TOKEN)
    return served


def jobs(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``stream-pipeline jobs ARGS`` in this process: (exit status, stdout, stderr)."""
    try:
        code: Any = main(["jobs", *args])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return int(code), out, err


def jobs_process(*args: str, **kw: Any) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "stream_pipeline.cli", "jobs", *args]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def connected(pid: int, port: int) -> bool:
    """Whether process ``pid`` has an established TCP connection to 127.0.0.1:``port``."""
    try:
        fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
    except OSError:  # it exited, or closed a file while we looked
        return False
    sockets = {fd[len("socket:[") : -1] for fd in fds if fd.startswith("socket:[")}
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        remote, state, inode = fields[2], fields[3], fields[9]
        if inode in sockets and state == "01" and int(remote.split(":")[1], 16) == port:
            return True
    return False


def one_line_error(code: int, out: str, err: str) -> str:
    assert code == 2, (code, out, err)
    assert err.startswith("stream-pipeline: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and TOKEN not in err and not out
    return err


def show(capsys: pytest.CaptureFixture[str], job_id: str) -> dict[str, Any]:
    code, out, err = jobs(capsys, "show", job_id)
    assert code == 0, err
    status: dict[str, Any] = json.loads(out)
    return status


def wait_state(capsys: pytest.CaptureFixture[str], job_id: str, ok: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 30
    while True:
        status = show(capsys, job_id)
        if ok(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_lifecycle_from_a_yaml_file(
    env: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "jobs.yaml"
    file.write_text(
        yaml.safe_dump([env.spec("k-gate", LIVE, restart="always"), env.spec("k-clip", paced(60))])
    )
    code, out, err = jobs(capsys, "create", str(file))
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["ID", "NAME", "STATE"]
    created = {r.split()[1]: r.split()[0] for r in rows}
    assert set(created) == {"k-gate", "k-clip"}
    gate, clip = created["k-gate"], created["k-clip"]

    # --follow: one JSON object a line, until the file job ends; then exit 0.
    code, out, err = jobs(capsys, "results", clip, "--follow")
    assert code == 0, err
    predictions = [json.loads(line) for line in out.splitlines()]
    assert predictions and {p["source_id"] for p in predictions} == {"k-clip"}
    assert wait_state(capsys, clip, lambda s: s["state"] == "completed")["state"] == "completed"

    code, out, _ = jobs(capsys, "list")
    listed = {line.split()[0]: line.split()[2] for line in out.splitlines()[1:]}
    assert listed[clip] == "completed" and listed[gate] in ("queued", "starting", "running")
    code, out, _ = jobs(capsys, "list", "--json")
    assert {j["id"] for j in json.loads(out)} >= {gate, clip}
    code, out, _ = jobs(capsys, "list", "-q")
    assert {gate, clip} <= set(out.split())

    wait_state(capsys, gate, lambda s: s["state"] == "running" and s["sources"][0]["frames"])
    code, out, err = jobs(capsys, "results", gate)  # without --follow: the next one
    assert code == 0, err
    assert [json.loads(line)["source_id"] for line in out.splitlines()] == ["k-gate"]

    code, out, err = jobs(capsys, "add-source", gate, f"k-gate-2={LIVE}")
    assert code == 0, err
    assert [s["id"] for s in json.loads(out)["sources"]] == ["k-gate", "k-gate-2"]
    code, out, err = jobs(capsys, "remove-source", gate, "k-gate-2")
    assert [s["id"] for s in json.loads(out)["sources"]] == ["k-gate"]

    for command, state in (("pause", "paused"), ("resume", "running"), ("stop", "stopped")):
        code, out, err = jobs(capsys, command, gate)
        assert code == 0, err
        assert json.loads(out)["state"] == state
    assert show(capsys, gate)["state"] == "stopped"


def test_create_takes_one_spec_or_a_jobs_mapping(
    env: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one = tmp_path / "one.json"
    one.write_text(json.dumps(env.spec("k-one", paced(3))))
    mapping = tmp_path / "many.yml"
    mapping.write_text(yaml.safe_dump({"jobs": [env.spec("k-two", paced(3))]}))
    for file in (one, mapping):
        code, out, err = jobs(capsys, "create", "-q", str(file))
        assert code == 0, err
        (job_id,) = out.split()
        assert show(capsys, job_id)["id"] == job_id


def test_follow_in_a_process_ends_with_the_job_and_ctrl_c_exits_0(
    env: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "jobs.yaml"
    file.write_text(
        yaml.safe_dump([env.spec("k-slow", paced(150)), env.spec("k-cam", LIVE, restart="always")])
    )
    code, out, err = jobs(capsys, "create", "-q", str(file))
    assert code == 0, err
    slow, cam = out.split()
    # Paused until the follower is connected: a job that ended before is a 409, not a follow.
    assert jobs(capsys, "pause", slow)[0] == 0

    follow = jobs_process("results", slow, "--follow")
    watch = jobs_process("results", cam, "--follow")
    try:
        port = int(env.url.rsplit(":", 1)[1])
        deadline = time.monotonic() + 60
        while not connected(follow.pid, port) and time.monotonic() < deadline:
            assert follow.poll() is None, follow.communicate()
            time.sleep(0.05)
        assert jobs(capsys, "resume", slow)[0] == 0
        out, err = follow.communicate(timeout=60)  # the job ends, so does the command
        assert follow.returncode == 0, err
        frame_ids = [json.loads(line)["frame_id"] for line in out.splitlines()]
        assert frame_ids and frame_ids == sorted(set(frame_ids))
        assert show(capsys, slow)["state"] == "completed"

        assert watch.stdout is not None
        first = json.loads(watch.stdout.readline())  # it is following: a frame came
        assert first["source_id"] == "k-cam"
        watch.send_signal(signal.SIGINT)
        _, err = watch.communicate(timeout=30)
        assert watch.returncode == 0 and "Traceback" not in err, err
    finally:
        for p in (follow, watch):
            if p.poll() is None:
                p.kill()
                p.wait()
    jobs(capsys, "stop", cam)


BAD_FILES = {
    "missing.yaml": (None, "jobs create {path}: No such file or directory"),
    "broken.yaml": ("name: [unclosed", "jobs create {path}: not valid"),
    "broken.json": ('{"name": ', "jobs create {path}: not valid"),
    "scalar.yaml": ("just words", "expected a job spec, a list of them"),
    "empty.json": ("[]", "expected a job spec, a list of them"),
}


@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_a_bad_file_is_one_line_and_creates_nothing(
    name: str, env: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text, expected = BAD_FILES[name]
    path = tmp_path / name
    if text is not None:
        path.write_text(text)
    before = jobs(capsys, "list", "-q")[1]
    err = one_line_error(*jobs(capsys, "create", str(path)))
    assert expected.format(path=path) in err
    assert jobs(capsys, "list", "-q")[1] == before


def test_a_spec_the_service_refuses_prints_its_field_naming_message(
    env: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cases: dict[str, dict[str, Any]] = {
        "sinks.0.path: must be a relative path under --output-dir": {
            "sinks": [{"type": "jsonl", "path": "/etc/x"}]
        },
        "sources.0.id: String should match pattern": {"sources": [{"id": "", "url": LIVE}]},
        "confidence_mode: '<block_does_not_provide_example>'": {
            "confidence_mode": "<block_does_not_provide_example>"
        },
        "segment_second: Extra inputs are not permitted": {
            "sinks": [{"type": "video", "path": "v", "segment_second": 5}]
        },
    }
    before = jobs(capsys, "list", "-q")[1]
    for expected, change in cases.items():
        file = tmp_path / "bad.yaml"
        file.write_text(yaml.safe_dump({**env.spec("k-bad", LIVE), **change}))
        err = one_line_error(*jobs(capsys, "create", str(file)))
        assert expected in err and "(HTTP 422 from POST /jobs)" in err, err
    assert jobs(capsys, "list", "-q")[1] == before


def test_a_refused_spec_in_a_list_names_it_and_what_was_created_before(
    env: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = env.spec("k-second", LIVE, restart="sometimes")
    file = tmp_path / "two.yaml"
    file.write_text(yaml.safe_dump([env.spec("k-first", paced(3)), bad]))
    err = one_line_error(*jobs(capsys, "create", str(file)))
    assert f"jobs create {file}: jobs[1] (k-second): restart: Input should be" in err
    (first,) = [j for j in json.loads(jobs(capsys, "list", "--json")[1]) if j["name"] == "k-first"]
    assert f"[created before it: {first['id']}]" in err
    assert all(j["name"] != "k-second" for j in json.loads(jobs(capsys, "list", "--json")[1]))


def test_unknown_ids_bad_arguments_and_a_missing_service(
    env: Served, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for command in ("show", "pause", "resume", "stop", "results"):
        err = one_line_error(*jobs(capsys, command, "nope"))
        assert "no job 'nope' (HTTP 404" in err
    file = tmp_path / "cam.json"
    file.write_text(json.dumps(env.spec("k-ids", LIVE)))
    cam = jobs(capsys, "create", "-q", str(file))[1].strip()
    err = one_line_error(*jobs(capsys, "remove-source", cam, "x"))
    assert f"no source 'x' in job {cam} (HTTP 404" in err
    assert jobs(capsys, "stop", cam)[0] == 0
    assert "add-source wants SID=URL" in one_line_error(*jobs(capsys, "add-source", "j", "u"))
    assert "jobs needs a command" in one_line_error(*jobs(capsys))
    assert "must be http(s)://" in one_line_error(*jobs(capsys, "--server", "h:1", "list"))

    sock = free_socket()
    closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()
    for argv in (["--server", closed, "list"], ["list", "--server", closed]):
        err = one_line_error(*jobs(capsys, *argv))
        assert f"cannot reach the jobs service at {closed}: connection refused" in err


def test_the_token_is_required_and_checked(
    env: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("STREAM_PIPELINE_TOKEN")
    err = one_line_error(*jobs(capsys, "list"))
    assert "missing bearer token" in err and "(HTTP 401 from GET /jobs)" in err
    assert "set $STREAM_PIPELINE_TOKEN" in err
    monkeypatch.setenv("STREAM_PIPELINE_TOKEN", "guessed")
    err = one_line_error(*jobs(capsys, "list"))
    assert "wrong bearer token" in err and "guessed" not in err


def test_a_real_process_words_a_failure_in_one_line(env: Served) -> None:
    proc = jobs_process("show", "nope", env={**os.environ, "STREAM_PIPELINE_TOKEN": "x"})
    out, err = proc.communicate(timeout=60)
    one_line_error(proc.returncode, out, err)
    assert "wrong bearer token" in err
