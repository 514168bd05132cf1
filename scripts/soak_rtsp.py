#!/usr/bin/env python3
"""Soak: N cameras on real GStreamer RTSP servers for a long time, with periodic server restarts.

    .venv/bin/python scripts/soak_rtsp.py --minutes 30 --cameras 4 --restart-every 120

Each camera has its own server process (so a restart hits one camera); every
``--restart-every`` seconds one server, in turn, is killed and brought back after a few seconds.
Records per camera: reconnects, frames decoded, results, frames dropped by the ring, frames not
received while the camera was down, and overall latency p50/p99 and RSS at start and end. Prints
a markdown table for docs/benchmarks.md. Needs the Debian GStreamer RTSP packages
(scripts/setup.sh --system).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_pipeline.model import load_model
from stream_pipeline.pipeline import Pipeline, PipelineConfig
from stream_pipeline.sources import ReconnectPolicy, SourceSpec
from tests.support.rtsp import RtspServer


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def soak(args: argparse.Namespace) -> None:
    servers = [
        RtspServer(paths=("/cam",), width=args.width, height=args.height, fps=args.fps).start()
        for _ in range(args.cameras)
    ]
    try:
        policy = ReconnectPolicy(initial_delay=0.5, max_delay=5.0)
        specs = tuple(
            SourceSpec(s.url(), id=f"cam{i}", open_timeout=5, read_timeout=3, reconnect=policy)
            for i, s in enumerate(servers)
        )
        model = load_model(args.model, device="cpu")
        cfg = PipelineConfig(sources=specs, device="cpu", duration=args.minutes * 60, max_batch=4)
        restarts = [0] * args.cameras
        down_seconds = [0.0] * args.cameras
        windows: list[tuple[int, float, float, float]] = []
        started = time.monotonic()
        async with Pipeline(cfg, model=model) as p:
            run = asyncio.ensure_future(p.run())
            rss_start = None
            next_restart = started + args.restart_every
            turn = 0
            next_window = started + 60
            while not run.done():
                await asyncio.sleep(1)
                now = time.monotonic()
                if rss_start is None and now - started > 30:
                    rss_start = rss_mb()
                if now >= next_restart and now - started < args.minutes * 60 - 30:
                    i = turn % args.cameras
                    t0 = time.monotonic()
                    await asyncio.to_thread(servers[i].kill)
                    await asyncio.sleep(args.down)
                    await asyncio.to_thread(servers[i].restart)
                    down_seconds[i] += time.monotonic() - t0
                    restarts[i] += 1
                    turn += 1
                    next_restart = now + args.restart_every
                if now >= next_window:
                    lat = p.latency.percentiles(50, 99).get("total", [0.0, 0.0])
                    windows.append((round(now - started), lat[0], lat[1], rss_mb()))
                    p.latency = type(p.latency)()
                    next_window = now + 60
            await run
            status = p.status()
        rss_end = rss_mb()
    finally:
        for s in servers:
            s.stop()
    elapsed = time.monotonic() - started
    print(
        f"{args.cameras} cameras {args.width}x{args.height}@{args.fps} fps, {elapsed / 60:.1f} min, "
        f"one server killed and restarted every {args.restart_every} s (down {args.down} s)"
    )
    print(
        "| camera | server restarts | reconnects | frames decoded | results | dropped (ring) | expected while up | missing |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for i, src in enumerate(status["sources"]):
        expected = round((elapsed - down_seconds[i]) * args.fps)
        missing = max(0, expected - src["frames"])
        print(
            f"| {src['id']} | {restarts[i]} | {src['reconnects']} | {src['frames']} | {src['results']} | "
            f"{src['dropped']} | ~{expected} | ~{missing} |"
        )
    print("\n| minute | latency p50 (ms) | p99 (ms) | RSS (MiB) |")
    print("|---|---|---|---|")
    for t, p50, p99, rss in windows:
        print(f"| {t // 60} | {p50:.0f} | {p99:.0f} | {rss:.0f} |")
    print(f"\nRSS at 30 s: {rss_start or 0:.0f} MiB; at end: {rss_end:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--restart-every", type=float, default=120)
    ap.add_argument("--down", type=float, default=3.0)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--fps", type=int, default=15)
    ap.add_argument("--model", default="default")
    asyncio.run(soak(ap.parse_args()))


if __name__ == "__main__":
    main()
