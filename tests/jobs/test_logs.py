"""Logs of the jobs service: ``stream-pipeline serve --log-format json`` as a real process against
a real RTSP camera with credentials — every stderr line is a JSON object, the lines about a job
carry its job and source ids, and the password is in no log line, metric or response. Then the
formatters and the context on their own."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from stream_pipeline.logs import (
    JsonFormatter,
    carry_context,
    job_context,
    make_handler,
    redact_credentials,
    set_ids,
)
from tests.support.rtsp import ServerFactory

pytestmark = pytest.mark.timeout(120)

CLI = [sys.executable, "-m", "stream_pipeline.cli"]
PASSWORD = "secret"  # the camera's; the wrong one also holds it: neither may leak
KEYS = {"ts", "level", "logger", "message", "job", "source"}


@dataclass
class Served:
    """A ``serve --log-format json`` process, its URL and every stderr line so far."""

    proc: asyncio.subprocess.Process
    url: str = ""
    lines: list[str] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None


async def _read(served: Served, started: asyncio.Future[str]) -> None:
    assert served.proc.stderr is not None
    async for raw in served.proc.stderr:
        line = raw.decode().rstrip("\n")
        served.lines.append(line)
        with contextlib.suppress(ValueError, AttributeError):
            message = json.loads(line)["message"]
            if message.startswith("serving on ") and not started.done():
                started.set_result(message.split()[2].rstrip("/"))
    if not started.done():
        started.set_exception(AssertionError("serve exited:\n" + "\n".join(served.lines)))


@contextlib.asynccontextmanager
async def serve_json(tmp_path: Path, model: Path) -> AsyncIterator[Served]:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--port", "0", "--log-format", "json", "--model", str(model),
        "--device", "cpu", "--threads", "1",
        "--state-dir", str(tmp_path / "state"), "--output-dir", str(tmp_path / "out"),
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
        env={**os.environ, "STREAM_PIPELINE_TOKEN": ""},
    )  # fmt: skip
    served = Served(proc)
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    served.reader = asyncio.create_task(_read(served, started))
    try:
        served.url = await asyncio.wait_for(started, 60)
        yield served
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 30)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        await asyncio.wait_for(served.reader, 10)


async def until(client: httpx.AsyncClient, job_id: str, ok: Any, what: str) -> dict[str, Any]:
    """Poll the job until ``ok(status)``; fail naming ``what`` after 30 s."""
    try:
        async with asyncio.timeout(30):
            while True:
                status: dict[str, Any] = (await client.get(f"/jobs/{job_id}")).json()
                if ok(status):
                    return status
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"{what}: {status}") from None


def spec(name: str, model: Path, source_id: str, url: str) -> dict[str, Any]:
    return {
        "name": name,
        "model": str(model),
        "sources": [{"id": source_id, "url": url}],
        "sinks": [{"type": "jsonl", "path": f"{name}.jsonl"}],
        "restart": "always",
    }


async def test_json_logs_name_job_and_source_and_never_the_password(
    tmp_path: Path, tiny_package: Path, rtsp_server_factory: ServerFactory
) -> None:
    camera = rtsp_server_factory(user="alice", password=PASSWORD)
    good_url = camera.url("/cam", user="alice", password=PASSWORD)
    bad_url = camera.url("/cam", user="alice", password=PASSWORD + "-wrong")
    texts: list[str] = []  # every response body and the metrics
    async with asyncio.timeout(100), serve_json(tmp_path, tiny_package) as served:
        async with httpx.AsyncClient(base_url=served.url, timeout=20) as c:

            async def get(path: str) -> httpx.Response:
                resp = await c.get(path)
                texts.append(resp.text)
                return resp

            created = [
                await c.post("/jobs", json=spec("wrong", tiny_package, "cam-wrong", bad_url)),
                await c.post("/jobs", json=spec("right", tiny_package, "cam-right", good_url)),
            ]
            texts += [r.text for r in created]
            wrong, right = (r.json()["id"] for r in created)
            status = await until(
                c, wrong, lambda s: s["restarts"] >= 1 and s["error"], "wrong retries"
            )
            assert "401" in (status["error"] or ""), status
            await until(c, right, lambda s: s["sources"][0]["frames"] > 0, "right streams")
            # The camera dies: the right job's source thread logs its reconnects.
            camera.kill()
            await until(c, right, lambda s: s["sources"][0]["reconnects"] >= 1, "reconnects")
            for path in ("/jobs", f"/jobs/{wrong}", f"/jobs/{right}", "/metrics", "/readyz"):
                await get(path)
            metrics = texts[-2]
            assert f'job="{right}",source="cam-right"' in metrics
        served.proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(served.proc.wait(), 30) == 0

    assert served.reader is not None
    await asyncio.wait_for(served.reader, 10)
    records = [json.loads(line) for line in served.lines]  # every line is JSON …
    for record in records:
        assert set(record) >= KEYS, record  # … with the fields a shipper indexes
    about = {
        job: [r for r in records if job in r["message"] or r["job"] == job]
        for job in (wrong, right)
    }
    for job, lines in about.items():
        assert lines, f"no log line about job {job}"
        assert all(r["job"] == job for r in lines), lines
    # The wrong job's failures, and the right job's source (its own thread) reconnecting.
    assert any("401" in r["message"] and r["level"] == "WARNING" for r in about[wrong])
    from_source = [r for r in about[right] if r["source"] == "cam-right"]
    assert any("reconnecting" in r["message"] for r in from_source), about[right]
    for r in records:
        if r["logger"].startswith("stream_pipeline.sources"):
            assert r["job"] and r["source"], r
    everything = "\n".join(served.lines + texts)
    assert PASSWORD not in everything
    assert "alice:***@" in everything  # the URLs are there, redacted


def test_text_and_json_lines_carry_the_ids_of_the_context() -> None:
    out = io.StringIO()
    handler = make_handler("text", out)
    log = logging.getLogger("stream_pipeline.test_logs")
    log.addHandler(handler)
    try:
        job_context("3f9c1a0b").run(log.warning, "no camera at %s", "rtsp://u:pw@h:554/x")

        def in_thread() -> None:
            set_ids(source="cam-1")
            log.error("stalled")

        # A thread starts with an empty context: carry_context brings the starter's job id.
        for target in (
            job_context("7a7a").run(carry_context, in_thread),
            carry_context(in_thread, job="fallback"),  # the starter had none
        ):
            thread = threading.Thread(target=target)
            thread.start()
            thread.join()
        log.warning("no job here")
        handler.setFormatter(JsonFormatter())
        try:
            raise ValueError("bad url rtsp://u:pw@h/x")
        except ValueError:
            job_context("3f9c1a0b").run(log.exception, "failed")
    finally:
        log.removeHandler(handler)
    text, stalled, fallback, bare, js = out.getvalue().splitlines()
    assert (
        text == "WARNING stream_pipeline.test_logs job=3f9c1a0b: no camera at rtsp://u:***@h:554/x"
    )
    assert stalled == "ERROR stream_pipeline.test_logs job=7a7a source=cam-1: stalled"
    assert bare == "WARNING stream_pipeline.test_logs: no job here"
    assert fallback == "ERROR stream_pipeline.test_logs job=fallback source=cam-1: stalled"
    record = json.loads(js)
    assert record["job"] == "3f9c1a0b" and record["source"] is None
    assert record["message"] == "failed" and record["level"] == "ERROR"
    assert "ValueError: bad url rtsp://u:***@h/x" in record["exc"]
    assert record["ts"].endswith("Z")


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        ("rtsp://alice:secret@10.0.0.5:554/s", "rtsp://alice:***@10.0.0.5:554/s"),
        ("open 'rtsp://a:p@ss@h/x' failed", "open 'rtsp://a:***@h/x' failed"),
        (
            "mqtt://:tok@broker:1883/t and http://h:80/x",
            "mqtt://:***@broker:1883/t and http://h:80/x",
        ),
        ("rtsp://10.0.0.5:554/stream", "rtsp://10.0.0.5:554/stream"),
        ("user@example.org: a:b@c", "user@example.org: a:b@c"),
    ],
)
def test_credentials_in_urls_are_redacted(text: str, redacted: str) -> None:
    assert redact_credentials(text) == redacted


async def test_an_unknown_log_format_is_one_line_and_status_2() -> None:
    proc = await asyncio.create_subprocess_exec(
        *CLI, "serve", "--port", "0", "--log-format", "xml",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    lines = err.decode().strip().splitlines()
    assert proc.returncode == 2
    assert len(lines) == 1 and "--log-format" in lines[0] and "'xml'" in lines[0], lines
