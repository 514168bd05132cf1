"""RTSP cameras against a real GStreamer RTSP server on loopback (see TESTING.md)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from stream_pipeline.consumers import CallbackSink, JsonlSink
from stream_pipeline.errors import SourceOpenError
from stream_pipeline.frames import SegResult
from stream_pipeline.model import SegmentationModel
from stream_pipeline.pipeline import Pipeline, PipelineConfig
from stream_pipeline.sources import ReconnectPolicy, SourceSpec
from tests.support.rtsp import RtspServer, ServerFactory

pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(90)]

FAST = ReconnectPolicy(initial_delay=0.2, max_delay=1.0)


def _spec(url: str, sid: str = "cam", **kw: object) -> SourceSpec:
    fields: dict[str, object] = {"open_timeout": 5, "read_timeout": 2, "reconnect": FAST, **kw}
    return SourceSpec(url, id=sid, **fields)  # type: ignore[arg-type]


async def _until(cond: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Recorder:
    def __init__(self) -> None:
        self.results: dict[str, list[SegResult]] = {}

    def __call__(self, r: SegResult) -> None:
        assert r.frame is not None
        self.results.setdefault(r.frame.meta.source_id, []).append(r)

    def count(self, sid: str = "cam") -> int:
        return len(self.results.get(sid, []))


async def test_live_stream_is_segmented(
    rtsp_server: RtspServer, tiny_model: SegmentationModel
) -> None:
    rec = Recorder()
    cfg = PipelineConfig(sources=(_spec(rtsp_server.url()),), device="cpu", duration=3.0)
    async with Pipeline(cfg, [CallbackSink(rec)], model=tiny_model) as p:
        await p.run()
    got = rec.results["cam"]
    assert len(got) >= 15
    assert got[0].class_map.shape == (360, 640)
    now = time.time()
    assert all(now - 30 < r.frame.meta.captured_at <= now for r in got)  # type: ignore[union-attr]
    lat = p.status().latency_ms["total"]
    assert lat.p50 < 1000


async def test_server_restart_reconnects_and_counts_on(
    rtsp_server: RtspServer, tiny_model: SegmentationModel
) -> None:
    rec = Recorder()
    cfg = PipelineConfig(sources=(_spec(rtsp_server.url()),), device="cpu")
    async with Pipeline(cfg, [CallbackSink(rec)], model=tiny_model) as p:
        run = asyncio.ensure_future(p.run())
        await _until(lambda: rec.count() >= 10, 20, "first frames")
        rtsp_server.kill()
        await _until(
            lambda: p.status().sources[0].state == "reconnecting", 10, "reconnecting state"
        )
        before = rec.count()
        rtsp_server.restart()
        await _until(lambda: rec.count() >= before + 10, 30, "frames after the restart")
        p.stop()
        await asyncio.wait_for(run, 20)
    status = p.status().sources[0]
    assert status.reconnects >= 1
    ids = [r.frame.meta.frame_id for r in rec.results["cam"]]  # type: ignore[union-attr]
    pts = [r.frame.meta.pts_seconds for r in rec.results["cam"]]  # type: ignore[union-attr]
    assert ids == sorted(set(ids)) and ids[-1] >= before + 9  # ids keep counting
    assert all(b > a for a, b in itertools.pairwise(pts))  # timestamps stay monotonic


async def test_frozen_server_triggers_watchdog(
    rtsp_server: RtspServer, tiny_model: SegmentationModel
) -> None:
    rec = Recorder()
    cfg = PipelineConfig(sources=(_spec(rtsp_server.url()),), device="cpu")
    async with Pipeline(cfg, [CallbackSink(rec)], model=tiny_model) as p:
        run = asyncio.ensure_future(p.run())
        await _until(lambda: rec.count() >= 10, 20, "first frames")
        rtsp_server.freeze()
        frozen_at = time.monotonic()
        await _until(lambda: p.status().sources[0].reconnects >= 1, 15, "the watchdog's reconnect")
        noticed = time.monotonic() - frozen_at
        assert noticed < 2 + 4  # read timeout 2 s, plus slack for a loaded machine
        rtsp_server.thaw()
        before = rec.count()
        await _until(lambda: rec.count() >= before + 5, 30, "frames after thaw")
        p.stop()
        await asyncio.wait_for(run, 20)


async def test_silent_camera_open_does_not_hang(
    rtsp_server_factory: ServerFactory, tiny_model: SegmentationModel
) -> None:
    server = rtsp_server_factory(paths=("/cam",), silent_paths=("/mute",))
    spec = _spec(server.url("/mute"), reconnect=ReconnectPolicy(max_attempts=1, initial_delay=0.1))
    cfg = PipelineConfig(sources=(spec,), device="cpu")
    started = time.monotonic()
    # Whether the open or the first read times out, the source fails within its timeouts.
    try:
        async with Pipeline(cfg, model=tiny_model) as p:
            await p.run()
        assert p.status().sources[0].state == "failed"
    except SourceOpenError as exc:
        assert "mute" in str(exc)
    assert time.monotonic() - started < 30


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream_pipeline.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_wrong_path_and_wrong_credentials_are_clear(
    rtsp_server_factory: ServerFactory, tiny_package: Path, tmp_path: Path
) -> None:
    server = rtsp_server_factory(user="alice", password="wonderland")
    bad_path = server.url("/nothing", user="alice", password="wonderland")
    res = _cli(
        "run",
        "--source",
        bad_path,
        "--model",
        str(tiny_package),
        "--predictions-out",
        "p.jsonl",
        cwd=tmp_path,
    )
    assert res.returncode == 2 and "404" in res.stderr and "Traceback" not in res.stderr, res.stderr
    bad_pass = server.url("/cam", user="alice", password="queenofhearts")
    res = _cli(
        "run",
        "--source",
        bad_pass,
        "--model",
        str(tiny_package),
        "--predictions-out",
        "p.jsonl",
        cwd=tmp_path,
    )
    assert res.returncode == 2 and "401 Unauthorized" in res.stderr, res.stderr
    assert "queenofhearts" not in res.stderr + res.stdout
    assert "rtsp://alice:***@127.0.0.1" in res.stderr


async def test_wrong_credentials_retry_says_401_each_time(
    rtsp_server_factory: ServerFactory,
    tiny_model: SegmentationModel,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = rtsp_server_factory(user="alice", password="wonderland")
    url = server.url("/cam", user="alice", password="not-the-password")
    policy = ReconnectPolicy(
        initial_delay=0.1, max_delay=0.3, max_attempts=3, retry_first_open=True
    )
    cfg = PipelineConfig(sources=(_spec(url, reconnect=policy),), device="cpu")
    with caplog.at_level(logging.WARNING):
        async with Pipeline(cfg, model=tiny_model) as p:
            await p.run()
    status = p.status().sources[0]
    assert status.state == "failed" and "401" in (status.last_error or "")
    retries = [r for r in caplog.records if "401" in r.getMessage()]
    assert len(retries) >= 3
    assert "not-the-password" not in caplog.text + json.dumps(p.status().to_dict())


async def test_four_cameras_one_failing(
    rtsp_server_factory: ServerFactory, tiny_model: SegmentationModel
) -> None:
    good = rtsp_server_factory(paths=("/a", "/b", "/c"), width=320, height=180)
    doomed = rtsp_server_factory(paths=("/d",), width=320, height=180)
    rec = Recorder()
    specs = [_spec(good.url(f"/{x}"), x) for x in "abc"] + [_spec(doomed.url("/d"), "d")]
    cfg = PipelineConfig(sources=tuple(specs), device="cpu", max_batch=4)
    async with Pipeline(cfg, [CallbackSink(rec)], model=tiny_model) as p:
        run = asyncio.ensure_future(p.run())
        await _until(lambda: all(rec.count(s) >= 5 for s in "abcd"), 30, "all four streaming")
        doomed.kill()
        await _until(lambda: p.status().sources[3].state == "reconnecting", 10, "d reconnecting")
        counts = {s: rec.count(s) for s in "abc"}
        await asyncio.sleep(3)
        assert all(rec.count(s) >= counts[s] + 15 for s in "abc"), {s: rec.count(s) for s in "abc"}
        p.stop()
        await asyncio.wait_for(run, 20)
    batch_sizes = [r.timings.batch_size for s in "abc" for r in rec.results[s]]
    assert max(batch_sizes) > 1  # the cameras share the one batched worker


def test_password_never_in_outputs_or_logs(
    rtsp_server_factory: ServerFactory, tiny_package: Path, tmp_path: Path
) -> None:
    server = rtsp_server_factory(user="alice", password="hunter2hunter2")
    url = server.url("/cam", user="alice", password="hunter2hunter2")
    res = _cli(
        "run",
        "--source",
        f"cam={url}",
        "--model",
        str(tiny_package),
        "--predictions-out",
        "p.jsonl",
        "--video-out",
        "v.mp4",
        "--duration",
        "3",
        "--json-status",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["sources"][0]["results"] > 5
    assert summary["sources"][0]["url"].startswith("rtsp://alice:***@")
    blobs = res.stdout + res.stderr + (tmp_path / "p.jsonl").read_text()
    assert "hunter2hunter2" not in blobs
    assert b"hunter2hunter2" not in (tmp_path / "v.mp4").read_bytes()


async def test_results_json_sink_from_camera(
    rtsp_server: RtspServer, tiny_model: SegmentationModel, tmp_path: Path
) -> None:
    out = tmp_path / "p.jsonl"
    cfg = PipelineConfig(sources=(_spec(rtsp_server.url(), max_frames=20),), device="cpu")
    async with Pipeline(cfg, [JsonlSink(out)], model=tiny_model) as p:
        await p.run()
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["frame_id"] for x in lines] == list(range(20))


def test_rtsp_output_is_read_back(
    rtsp_server_factory: ServerFactory, tiny_package: Path, tmp_path: Path
) -> None:
    received = tmp_path / "received.mkv"
    sink_server = rtsp_server_factory(paths=(), record_paths=("/push",), record_file=received)
    # Paced like a camera: the preview sink takes the latest frame; at 10 fps it keeps up even
    # on a loaded CI machine.
    res = _cli(
        "run",
        "--source",
        "synthetic://street?frames=40&fps=10&width=320&height=180&realtime=1",
        "--model",
        str(tiny_package),
        "--rtsp-out",
        sink_server.url("/push"),
        "--quiet",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert sink_server.wait_record_frames("/push", at_least=30, timeout=20) >= 30
    sink_server.wait_record_end("/push", timeout=20)
    sink_server.stop()
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(received)],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    stream = json.loads(probe.stdout)["streams"][0]
    assert stream["codec_name"] == "h264" and (stream["width"], stream["height"]) == (320, 180)
    # The server's own recording may lose its last frames at EOS; the counter above is exact.
    assert int(stream["nb_read_frames"]) >= 20


def test_rtsp_output_survives_server_absence(
    rtsp_server_factory: ServerFactory, tiny_package: Path, tmp_path: Path
) -> None:
    # Nobody listens at first: the job still runs, drops are counted, nothing crashes.
    from tests.support.rtsp import free_port

    port = free_port()
    res = _cli(
        "run",
        "--source",
        "synthetic://street?frames=30&width=160&height=96",
        "--model",
        str(tiny_package),
        "--rtsp-out",
        f"rtsp://127.0.0.1:{port}/push",
        "--predictions-out",
        "p.jsonl",
        "--json-status",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    sink = next(s for s in summary["sinks"] if s["type"] == "rtsp-out")
    assert sink["delivered"] == 0 and sink["last_error"] and sink["reconnects"] >= 1
    assert sink["dropped"] > 0 and sink["state"] == "stopped"
    assert len((tmp_path / "p.jsonl").read_text().splitlines()) == 30


async def test_udp_transport_on_request(
    rtsp_server: RtspServer, tiny_model: SegmentationModel
) -> None:
    rec = Recorder()
    cfg = PipelineConfig(
        sources=(_spec(rtsp_server.url(), transport="udp", max_frames=10),), device="cpu"
    )
    async with Pipeline(cfg, [CallbackSink(rec)], model=tiny_model) as p:
        await asyncio.wait_for(p.run(), 30)
    assert rec.count() == 10
