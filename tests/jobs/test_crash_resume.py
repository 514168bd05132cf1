"""``kill -9`` of the whole ``stream-pipeline serve`` process group mid file job (and a SIGTERM),
then a restart on the same state dir: the job resumes by itself and its JSONL holds every frame
exactly once."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jobs.processes import poll

FRAMES = 500


@pytest.mark.timeout(120)
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["kill-9", "sigterm"])
def test_stop_mid_file_job_then_restart_writes_every_frame_once(
    serve_group: Any, tmp_path: Path, tiny_package: Path, sig: signal.Signals
) -> None:
    first = serve_group()
    spec = {
        "name": "clip",
        "model": str(tiny_package),
        "sources": [
            {"id": "clip", "url": f"synthetic://street?frames={FRAMES}&width=128&height=96"}
        ],
        "sinks": [{"type": "jsonl", "path": "clip/predictions.jsonl"}],
    }
    with httpx.Client(base_url=first.url, timeout=20) as client:
        created = client.post("/jobs", json=spec)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        poll(client, job_id, lambda s: s["sinks"][0]["delivered"] >= 100, 30)
    first.kill(sig)
    if sig is signal.SIGTERM:
        assert first.proc.returncode == 0
    jsonl = tmp_path / "out" / "clip" / "predictions.jsonl"
    written = jsonl.read_bytes().count(b"\n")
    assert 100 <= written < FRAMES, "the kill must land mid-job"

    second = serve_group()
    with httpx.Client(base_url=second.url, timeout=20) as client:
        done = poll(client, job_id, lambda s: s["state"] in ("completed", "failed"), 60)
        assert done["state"] == "completed", done
    data = jsonl.read_bytes()
    assert data.endswith(b"\n")
    ids = [json.loads(line)["frame_id"] for line in data.splitlines()]
    assert ids == list(range(FRAMES))


@pytest.mark.timeout(90)
def test_sigterm_with_an_event_stream_open_exits_in_bounded_time(
    serve_group: Any, tiny_package: Path
) -> None:
    import socket
    from urllib.parse import urlsplit

    server = serve_group()
    live = "synthetic://street?frames=0&realtime=1&width=64&height=48"
    spec = {"name": "l", "model": str(tiny_package), "sources": [{"id": "s", "url": live}]}
    with httpx.Client(base_url=server.url, timeout=20) as client:
        # The jobs routes joined the server app (WHIP, WHEP, the page) and its OpenAPI document.
        paths = client.get("/openapi.json").json()["paths"]
        assert "/jobs" in paths and "/healthz" in paths
        job_id = client.post("/jobs", json=spec).json()["id"]
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=20) as viewer:
        request = f"GET /jobs/{job_id}/results HTTP/1.1\r\nHost: x\r\n\r\n"
        viewer.sendall(request.encode())
        got = b""
        while b"data: " not in got:
            chunk = viewer.recv(65536)
            assert chunk, "the event stream closed before its first result"
            got += chunk
        started = time.monotonic()
        server.kill(signal.SIGTERM)  # fails if it takes more than 30 s
        assert time.monotonic() - started < 20
        assert server.proc.returncode == 0
