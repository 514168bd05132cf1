"""RTSP jobs against the real GStreamer RTSP server (TESTING.md): a wrong password and an
unreachable camera show their error and retry visibly (counted, with backoff) instead of looping
silently; the password is in no response, metric or log line; and a ``${CAM1_PASSWORD}`` URL
streams with the password from the environment while the state database keeps the reference."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.conftest import Service, serve_jobs
from tests.jobs.test_api import frames, wait_for
from tests.support.rtsp import RtspServer, ServerFactory, free_port

pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(120)]

USER, PASSWORD = "alice", "Wonder-land-7f3k"  # the camera's credentials
WRONG = "Queen-of-hearts-9x2q"  # what a job is (wrongly) given
UNREACHABLE = "Open-sesame-4r8w"  # the password of a camera nobody listens for


def _job(name: str, url: str, model: Path, restart: str = "on-failure") -> dict[str, Any]:
    return {
        "name": name,
        "model": str(model),
        "sources": [{"id": name, "url": url}],
        "sinks": [{"type": "jsonl", "path": f"{name}.jsonl"}],
        "restart": restart,
    }


async def _create(svc: Service, spec: dict[str, Any], seen: list[str]) -> str:
    created = await svc.client.post("/jobs", json=spec)
    assert created.status_code == 201, created.text
    seen.append(created.text)
    return str(created.json()["id"])


async def _everything_shown(svc: Service, job_ids: Iterable[str], seen: list[str]) -> str:
    """Every response the API gives about these jobs, the metrics, and what was seen before."""
    texts = [*seen, (await svc.client.get("/jobs")).text, (await svc.client.get("/metrics")).text]
    texts += [(await svc.client.get(f"/jobs/{job_id}")).text for job_id in job_ids]
    return "\n".join(texts)


def _assert_nowhere(secrets: Iterable[str], shown: str, caplog: pytest.LogCaptureFixture) -> None:
    logged = "\n".join(f"{r.getMessage()} {r.exc_text or ''} {r.args!r}" for r in caplog.records)
    assert caplog.records, "nothing was logged: the check below would prove nothing"
    for secret in secrets:
        assert secret not in shown, f"{secret!r} in an API response or /metrics"
        assert secret not in logged, f"{secret!r} in a log record"
        assert secret not in caplog.text


@pytest.fixture
def camera(rtsp_server_factory: ServerFactory) -> RtspServer:
    return rtsp_server_factory(user=USER, password=PASSWORD, width=160, height=96, fps=15)


async def test_wrong_password_and_unreachable_camera_show_their_error(
    camera: RtspServer, tiny_package: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong_url = camera.url("/cam", USER, WRONG)
    closed_url = f"rtsp://bob:{UNREACHABLE}@127.0.0.1:{free_port()}/cam"
    seen: list[str] = []
    async with asyncio.timeout(90), serve_jobs(tmp_path / "state", tmp_path / "out") as svc:
        wrong = await _create(svc, _job("wrong", wrong_url, tiny_package), seen)
        closed = await _create(svc, _job("closed", closed_url, tiny_package), seen)
        never = await _create(svc, _job("never", wrong_url, tiny_package, "never"), seen)
        good = await _create(svc, _job("good", camera.auth_url("/cam"), tiny_package), seen)

        # Each failing job says why, with the URL redacted, and keeps retrying with backoff.
        for job_id, needle in ((wrong, "401"), (closed, "Connection refused")):
            status = await wait_for(svc, job_id, lambda s: s["restarts"] >= 2 and s["error"])
            assert status["state"] in ("starting", "running"), status
            assert needle in status["error"] and "***@127.0.0.1" in status["error"], status
            assert status["sources"][0]["url"].startswith(("rtsp://alice:***@", "rtsp://bob:***@"))
        # Not a silent loop: every retry is counted (and logged), and the counts go on (backoff
        # is capped at 1 s by the fixture).
        before = {
            j: (await svc.client.get(f"/jobs/{j}")).json()["restarts"] for j in (wrong, closed)
        }
        await wait_for(svc, wrong, lambda s: s["restarts"] > before[wrong])
        await wait_for(svc, closed, lambda s: s["restarts"] > before[closed])
        warned = [
            r for r in caplog.records if r.levelno >= logging.WARNING and wrong in r.getMessage()
        ]
        assert len(warned) >= 2 and all("401" in r.getMessage() for r in warned)
        # restart "never": the first failure is final.
        failed = await wait_for(svc, never, lambda s: s["state"] == "failed")
        assert "401" in failed["error"] and failed["restarts"] == 0
        # The right password on the same camera streams meanwhile.
        await wait_for(svc, good, lambda s: frames(s, "good") >= 5)

        # Errors the API gives about a source echo no password either.
        again = await svc.client.post(
            f"/jobs/{good}/sources", json={"id": "wrong", "url": wrong_url}
        )
        assert again.status_code == 409, again.text
        bad_id = await svc.client.post(f"/jobs/{good}/sources", json={"id": "-", "url": wrong_url})
        assert bad_id.status_code == 422 and "id" in bad_id.json()["error"], bad_id.text
        seen += [again.text, bad_id.text]
        shown = await _everything_shown(svc, (wrong, closed, never, good), seen)
    _assert_nowhere((WRONG, UNREACHABLE, PASSWORD), shown, caplog)


async def test_the_failing_source_itself_shows_the_error(
    camera: RtspServer, tiny_package: Path, tmp_path: Path
) -> None:
    async with asyncio.timeout(60), serve_jobs(tmp_path / "state", tmp_path / "out") as svc:
        job_id = await _create(
            svc, _job("wrong", camera.url("/cam", USER, WRONG), tiny_package), []
        )
        status = await wait_for(svc, job_id, lambda s: s["restarts"] >= 1)
        source = status["sources"][0]
        assert "401" in (source["last_error"] or ""), source


async def test_env_reference_streams_and_the_state_keeps_the_reference(
    camera: RtspServer,
    tiny_package: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("CAM1_PASSWORD", PASSWORD)
    url = f"rtsp://{USER}:${{CAM1_PASSWORD}}@127.0.0.1:{camera.port}/cam"
    seen: list[str] = []
    state = tmp_path / "state"
    async with asyncio.timeout(90), serve_jobs(state, tmp_path / "out") as svc:
        job_id = await _create(svc, _job("cam1", url, tiny_package), seen)
        status = await wait_for(svc, job_id, lambda s: frames(s, "cam1") >= 10)
        assert status["state"] == "running" and status["error"] is None, status
        assert status["sources"][0]["url"] == f"rtsp://{USER}:***@127.0.0.1:{camera.port}/cam"
        stopped = await svc.client.delete(f"/jobs/{job_id}")
        assert stopped.status_code == 200 and stopped.json()["sinks"][0]["delivered"] >= 10
        seen.append(stopped.text)
        shown = await _everything_shown(svc, (job_id,), seen)
    lines = (tmp_path / "out" / "cam1.jsonl").read_text().splitlines()
    assert len(lines) >= 10 and PASSWORD not in "\n".join(lines)
    # The stored spec holds the reference as written, never the password it stands for.
    with sqlite3.connect(state / "jobs.sqlite3") as db:
        specs = [row[0] for row in db.execute("SELECT spec FROM jobs")]
    assert len(specs) == 1 and "${CAM1_PASSWORD}" in specs[0]
    stored = b"".join(p.read_bytes() for p in state.rglob("*") if p.is_file())
    assert PASSWORD.encode() not in stored  # the WAL and the database file alike
    _assert_nowhere((PASSWORD,), shown, caplog)
