#!/usr/bin/env python3
"""Benchmark: does a slow webhook and a dead broker slow the pipeline down? (issue 19)

    .venv/bin/python scripts/bench_delivery.py                 # 5 runs of each, 300 frames
    .venv/bin/python scripts/bench_delivery.py --runs 7 --frames 600

The same H.264 video, the same model and the same local output (JSONL with RLE masks) in both
configurations; "remote" adds a webhook sink whose receiver (an aiohttp server on loopback)
takes 2 s to answer each request, and an MQTT sink whose broker port has nobody listening.
Throughput is frames / (last result handed to the local sink − start of the run), so the remote
sinks' drain at the end is not counted (their spools keep what is pending). Runs alternate
(baseline, remote, baseline, …); the table shows each run, the medians and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import socket
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import make_video  # the same synthetic street video as bench.py

from stream_pipeline.consumers import CallbackSink, JsonlSink, MqttSink, Sink, WebhookSink
from stream_pipeline.frames import SegResult
from stream_pipeline.model import SegmentationModel, load_model
from stream_pipeline.pipeline import Pipeline, PipelineConfig
from stream_pipeline.sources import SourceSpec


def _receiver_main(delay: float, port: Any, seen: Any, stop: Any) -> None:
    """The receiver's process: answers each POST with 200 after ``delay`` seconds."""

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        await asyncio.sleep(delay)
        with seen.get_lock():
            seen.value += 1
        return web.Response(text="ok")

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/hook", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.value = runner.addresses[0][1]
        await asyncio.to_thread(stop.wait)
        await runner.cleanup()

    asyncio.run(serve())


def slow_receiver(delay: float) -> tuple[str, Any, Any]:
    """An HTTP server in a process of its own (so its CPU is not the pipeline's) that answers
    200 after ``delay`` seconds; returns its URL, a stop event and the count of requests."""
    ctx = multiprocessing.get_context("spawn")
    port, seen, stop = ctx.Value("i", 0), ctx.Value("i", 0), ctx.Event()
    ctx.Process(target=_receiver_main, args=(delay, port, seen, stop), daemon=True).start()
    deadline = time.monotonic() + 20
    while not port.value and time.monotonic() < deadline:
        time.sleep(0.05)
    return f"http://127.0.0.1:{port.value}/hook", stop, seen


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def one_run(
    video: Path, model: SegmentationModel, work: Path, remote: tuple[str, str] | None
) -> tuple[float, float]:
    """Frames per second of one run (to the last result the local sink got), and the process's
    CPU milliseconds per frame (what the run cost, whatever else the machine is doing)."""
    last = [0.0]
    count = [0]

    def tick(_: SegResult) -> None:
        last[0] = time.perf_counter()
        count[0] += 1

    sinks: list[Sink] = [JsonlSink(work / "pred.jsonl"), CallbackSink(tick)]
    if remote is not None:
        hook, mqtt = remote
        sinks.append(WebhookSink(hook, work / "spool-hook", max_batch=16, drain_timeout=0))
        sinks.append(MqttSink(mqtt, work / "spool-mqtt", drain_timeout=0))
    cfg = PipelineConfig(sources=(SourceSpec(str(video), id="bench"),), device="cpu")
    async with Pipeline(cfg, sinks, model=model) as p:
        start, cpu = time.perf_counter(), time.process_time()
        await p.run()
        cpu = time.process_time() - cpu
    (work / "pred.jsonl").unlink()
    return count[0] / (last[0] - start), 1000 * cpu / max(count[0], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--delay", type=float, default=2.0, help="webhook seconds per request")
    args = ap.parse_args()

    model = load_model("default", device="cpu")
    hook, stop, seen = slow_receiver(args.delay)
    mqtt = f"mqtt://127.0.0.1:{closed_port()}/bench/{{source}}"
    rows: dict[str, list[float]] = {"baseline": [], "remote": []}
    cpu: dict[str, list[float]] = {"baseline": [], "remote": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        video = make_video(work / "in.mp4", args.frames, args.width, args.height)
        asyncio.run(one_run(video, model, work, None))  # warm-up: numba, onnxruntime, caches
        for i in range(args.runs):
            for name in ("baseline", "remote"):
                run_dir = work / f"{name}-{i}"
                run_dir.mkdir()
                remote = (hook, mqtt) if name == "remote" else None
                fps, ms = asyncio.run(one_run(video, model, run_dir, remote))
                rows[name].append(fps)
                cpu[name].append(ms)
                print(
                    f"run {i + 1} {name:<8} {fps:7.1f} frames/s {ms:6.1f} CPU ms/frame",
                    file=sys.stderr,
                )
    stop.set()
    base, remote = statistics.median(rows["baseline"]), statistics.median(rows["remote"])
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    print(f"date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC")
    print(
        f"video: {args.frames} frames {args.width}x{args.height}, default model, CPU; "
        f"webhook {args.delay:.0f} s/request ({seen.value} requests answered), broker down"
    )
    print()
    print("| configuration | runs (frames/s) | median frames/s | median CPU ms/frame |")
    print("|---|---|---|---|")
    for name, label in (("baseline", "JSONL only"), ("remote", "JSONL + slow webhook + dead MQTT")):
        runs = ", ".join(f"{v:.1f}" for v in rows[name])
        ms = statistics.median(cpu[name])
        print(f"| {label} | {runs} | {statistics.median(rows[name]):.1f} | {ms:.1f} |")
    print()
    print(f"throughput ratio remote / baseline (of the medians): {remote / base:.3f}")
    # Each remote run against the baseline run just before it: on a busy machine the load
    # changes between pairs more than within one.
    pairs = [r / b for r, b in zip(rows["remote"], rows["baseline"], strict=True)]
    cpu_pairs = [r / b for r, b in zip(cpu["remote"], cpu["baseline"], strict=True)]
    print(f"throughput ratio, median of pairs: {statistics.median(pairs):.3f}")
    print(f"CPU per frame, median of pairs: {100 * (statistics.median(cpu_pairs) - 1):+.1f}%")


if __name__ == "__main__":
    main()
