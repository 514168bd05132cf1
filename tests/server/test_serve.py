"""``stream-pipeline serve`` as a user runs it: a process, its flags, its exit codes."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.rtsp import free_port
from tests.support.webrtc import WhepClient, until

pytestmark = pytest.mark.timeout(90)

CLI = [sys.executable, "-m", "stream_pipeline.cli"]
LIVE = "street=synthetic://street?seed=3&fps=15&frames=0&width=320&height=180"


async def _serve(tiny_package: Path, *flags: str) -> tuple[asyncio.subprocess.Process, str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--port", str(port), "--model", str(tiny_package), "--device", "cpu",
        "--threads", "1", *flags,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, "STREAM_PIPELINE_TOKEN": ""},
    )  # fmt: skip
    assert proc.stderr is not None
    line = await asyncio.wait_for(proc.stderr.readline(), 60)
    assert b"serving on http://127.0.0.1:" in line, line
    return proc, f"http://127.0.0.1:{port}"


async def _get(http: aiohttp.ClientSession, url: str, token: str = "") -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with http.get(url, headers=headers) as resp:
        return resp.status, await resp.json()


async def test_serve_runs_sources_answers_whep_and_stops_on_sigterm(
    netns: None, tiny_package: Path
) -> None:
    proc, url = await _serve(tiny_package, "--source", LIVE, "--token", "tok")
    try:
        async with aiohttp.ClientSession() as http:
            status, body = await _get(http, url + "/healthz")
            assert status == 200 and body["status"] == "ok"
            status, body = await _get(http, url + "/streams")
            assert status == 401
            status, body = await _get(http, url + "/streams", "tok")
            assert status == 200 and [s["id"] for s in body["streams"]] == ["street"]
            viewer = WhepClient(http, url, token="tok")
            try:
                await viewer.watch("street")
                await viewer.connected()
                await until(lambda: viewer.frames >= 5, 20, "frames from serve")
            finally:
                await viewer.close()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 20) == 0
        assert time.monotonic() - t0 < 10
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--host", "0.0.0.0"], "a token is required when listening on 0.0.0.0"),
        (["--ice-server", "http://example.org"], "--ice-server"),
        (["--source", "street=synthetic://nowhere"], "synthetic"),
    ],
)
async def test_serve_refuses_bad_flags_with_one_line(flags: list[str], message: str) -> None:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--port", "0", *flags,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "STREAM_PIPELINE_TOKEN": ""},
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2, err
    assert len(lines) == 1 and message in lines[0], lines
