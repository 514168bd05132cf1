#!/usr/bin/env python3
"""Glass-to-glass latency and viewer capacity of the WebRTC preview, on loopback.

A synthetic camera paints its capture time (``time.monotonic()`` in ms, 24 bits, with an inverted
copy as a check) as black/white blocks into each frame; the engine segments it, the preview
overlays and encodes it, an aiortc WHEP viewer decodes it and reads the blocks back: the latency
is "painted" → "decoded by the viewer". The server runs as ``stream-pipeline serve`` code in a
child process (uvicorn on uvloop), so its CPU time is its own.

    scripts/bench_webrtc.py                       # 640x360 and 1280x720, shipped model, 3 runs
    scripts/bench_webrtc.py --sizes 640x360 --seconds 600 --runs 1   # the 10-minute creep check

As root it runs in a fresh network namespace holding only ``lo`` (as the tests do); otherwise
on the machine's loopback. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BITS = 24
FPS = 30.0
OPACITY = 0.25  # light overlay: the painted blocks stay readable under any class colour


# -- the child: a server with a counter camera ------------------------------------------------


def _blocks(width: int) -> int:
    return max(8, width // (BITS + 2))


def _counter_source(spec: object) -> object:
    from stream_pipeline.frames import Frame
    from stream_pipeline.scenes import StreetScene
    from stream_pipeline.sources import Source, SourceState
    from stream_pipeline.sources.synthetic import parse_synthetic_url

    class CounterSource(Source):
        """A street scene with the capture time painted in its top rows; paced at 30 fps."""

        def open(self) -> None:
            url = self.spec.url.replace("counter://", "synthetic://")
            p = parse_synthetic_url(url)
            self.width, self.height = int(p["width"]), int(p["height"])
            self.base, _ = StreetScene(self.width, self.height, seed=5).render(1.0)

        def run(self, ring: object, stop: threading.Event) -> None:
            b = _blocks(self.width)
            start = time.monotonic()
            index = 0
            self.status.set_state(SourceState.STREAMING)
            while not stop.is_set():
                delay = start + index / FPS - time.monotonic()
                if delay > 0 and stop.wait(delay):
                    break
                rgb = self.base.copy()
                stamp = int(time.monotonic() * 1000) % (1 << BITS)
                for bit in range(BITS):
                    on = (stamp >> bit) & 1
                    x = b + bit * b
                    rgb[0:b, x : x + b] = 255 * on
                    rgb[b : 2 * b, x : x + b] = 255 * (1 - on)
                meta = self.clock.stamp(index / FPS, self.width, self.height)
                if not self.put(ring, Frame(meta, rgb=rgb), stop):  # type: ignore[arg-type]
                    return
                index += 1
            self.status.finish(stopped=stop.is_set())

    return CounterSource(spec)  # type: ignore[arg-type]


def child(args: argparse.Namespace) -> None:
    from stream_pipeline.model import load_model
    from stream_pipeline.server.serve import ServeConfig, serve
    from stream_pipeline.sources import SourceSpec, register_source

    register_source("counter", _counter_source)  # type: ignore[arg-type]
    w, h = args.size.split("x")
    url = f"counter://street?width={w}&height={h}"
    # A ring of 2: the preview is measured at the live edge, not behind a queue of 8 frames.
    spec = SourceSpec(url=url, id="bench", realtime=True, buffer_size=2)
    config = ServeConfig(port=args.port, sources=(spec,), device=args.device, opacity=OPACITY)
    serve(config, load_model(args.model, device=args.device))


# -- the parent: viewers and measurements -----------------------------------------------------


def read_stamp(gray: np.ndarray) -> int | None:
    """The painted capture time (ms, 24 bits) of a decoded frame, or None when unreadable."""
    b = _blocks(gray.shape[1])
    m = b // 4  # read the middle of each block: edges ring after the codec
    bits, inverse = 0, 0
    for bit in range(BITS):
        x = b + bit * b
        top = gray[m : b - m, x + m : x + b - m].mean()
        low = gray[b + m : 2 * b - m, x + m : x + b - m].mean()
        bits |= int(top > 128) << bit
        inverse |= int(low > 128) << bit
    return bits if bits ^ inverse == (1 << BITS) - 1 else None


class Viewer:
    def __init__(self, http: object, url: str, measure: bool) -> None:
        from tests.support.webrtc import WhepClient

        self.client = WhepClient(http, url)  # type: ignore[arg-type]
        self.measure = measure
        self.frames = 0
        self.latencies: list[tuple[float, float]] = []  # (when, ms)
        self.unreadable = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.client.stalled = True  # the bench reads the track itself
        await self.client.watch("bench")
        await self.client.connected()
        receiver = next(t.receiver for t in self.client.pc.getTransceivers() if t.kind == "video")
        self._task = asyncio.ensure_future(self._read(receiver.track))

    async def _read(self, track: object) -> None:
        from aiortc.mediastreams import MediaStreamError

        try:
            while True:
                frame = await track.recv()  # type: ignore[attr-defined]
                now = time.monotonic()
                self.frames += 1
                if self.measure:
                    stamp = read_stamp(frame.to_ndarray(format="gray"))
                    if stamp is None:
                        self.unreadable += 1
                        continue
                    ms = (int(now * 1000) - stamp) % (1 << BITS)
                    self.latencies.append((now, float(ms)))
        except MediaStreamError:
            return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.client.close()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


async def measure_size(args: argparse.Namespace, size: str) -> dict[str, object]:
    import aiohttp

    from tests.support.rtsp import free_port

    port = free_port()
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before any measurement
        [sys.executable, __file__, "--child", "--size", size, "--port", str(port),
         "--model", args.model, "--device", args.device],
        stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        assert proc.stderr is not None
        line = await asyncio.to_thread(proc.stderr.readline)
        if "serving on" not in line:
            raise RuntimeError(f"the server did not start: {line}{proc.stderr.read()}")
        async with aiohttp.ClientSession() as http:
            await asyncio.sleep(3)  # model warm-up, first results
            runs = []
            creep = None
            for _ in range(args.runs):
                v = Viewer(http, url, measure=True)
                await v.start()
                await asyncio.sleep(2)  # connect, first keyframe
                v.latencies.clear()
                await asyncio.sleep(args.seconds)
                lat = [ms for _, ms in v.latencies]
                runs.append((pct(lat, 50), pct(lat, 99), len(lat), v.unreadable))
                if args.seconds >= 60:  # p50 of each minute: a creep rises minute by minute
                    t0 = v.latencies[0][0]
                    minutes = int(args.seconds // 60)
                    creep = tuple(
                        pct([ms for t, ms in v.latencies if m * 60 <= t - t0 < (m + 1) * 60], 50)
                        for m in range(minutes)
                    )
                await v.close()
                await asyncio.sleep(1)
            # CPU of the server with no viewer (inference only), then with n viewers.
            c0, t0 = cpu_seconds(proc.pid), time.monotonic()
            await asyncio.sleep(4)
            idle = (cpu_seconds(proc.pid) - c0) / (time.monotonic() - t0)
            async with http.get(url + "/streams") as resp:
                stream_fps = float((await resp.json())["streams"][0]["fps"])
            scaling = []
            n = 1
            viewers: list[Viewer] = []
            while n <= args.max_viewers:
                while len(viewers) < n:
                    v = Viewer(http, url, measure=False)
                    await v.start()
                    viewers.append(v)
                await asyncio.sleep(2)
                f0 = [v.frames for v in viewers]
                c0, t0 = cpu_seconds(proc.pid), time.monotonic()
                await asyncio.sleep(5)
                dt = time.monotonic() - t0
                cpu = (cpu_seconds(proc.pid) - c0) / dt
                fps = [(v.frames - f) / dt for v, f in zip(viewers, f0, strict=True)]
                scaling.append((n, min(fps), statistics.mean(fps), cpu))
                # "Before the frame rate falls": against what one viewer gets on this machine.
                if min(fps) < 0.9 * scaling[0][1]:
                    break
                n *= 2
            for v in viewers:
                await v.close()
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {
        "size": size,
        "runs": runs,
        "idle": idle,
        "scaling": scaling,
        "creep": creep,
        "stream_fps": stream_fps,
    }


def report(results: list[dict[str, object]], args: argparse.Namespace) -> str:
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.processor() or 'cpu'}),"
        f" Python {platform.python_version()}; model `{args.model}` on {args.device};"
        f" date {time.strftime('%Y-%m-%d')}; overlay opacity {OPACITY};"
        f" load average at the end {os.getloadavg()[0]:.1f}.",
        f"Command: `scripts/bench_webrtc.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
        "",
        "| size | glass-to-glass p50 (ms) | p99 (ms) | runs (p50/p99 each) | results/s "
        "| viewers before fps falls | server CPU, no viewer | CPU per viewer |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        runs = r["runs"]
        scaling = r["scaling"]
        assert isinstance(runs, list) and isinstance(scaling, list)
        p50 = statistics.median(x[0] for x in runs)
        p99 = statistics.median(x[1] for x in runs)
        each = ", ".join(f"{a:.0f}/{b:.0f}" for a, b, _, _ in runs)
        ok = [n for n, low, _, _ in scaling if low >= 0.9 * scaling[0][1]]
        held = f"{max(ok)}"
        if scaling[-1][1] >= 0.9 * scaling[0][1]:
            held = f"≥ {held} (--max-viewers)"
        idle = float(r["idle"])  # type: ignore[arg-type]
        per = [(cpu - idle) / n for n, _, _, cpu in scaling]
        lines.append(
            f"| {r['size']} | {p50:.0f} | {p99:.0f} | {each} | {r['stream_fps']} | {held} "
            f"| {100 * idle:.0f}% of a core "
            f"| {100 * statistics.median(per):.0f}% of a core |"
        )
    lines.append("")
    for r in results:
        scaling = r["scaling"]
        assert isinstance(scaling, list)
        steps = "; ".join(
            f"{n} → min {low:.1f} / mean {mean:.1f} fps, {100 * cpu:.0f}% CPU"
            for n, low, mean, cpu in scaling
        )
        lines.append(f"- {r['size']} viewers: {steps}")
        creep = r["creep"]
        if isinstance(creep, tuple):
            each_minute = ", ".join(f"{ms:.0f}" for ms in creep)
            lines.append(f"- {r['size']} p50 of each minute (ms): {each_minute}")
    return "\n".join(lines)


def in_namespace(argv: list[str]) -> None:
    """Re-run this script in a namespace holding only lo (root), like the tests."""
    script = 'ip link set lo up && ip addr add 127.0.0.2/8 dev lo && exec "$0" "$@"'
    cmd = ["unshare", "--net", "--fork", "--kill-child", "sh", "-c", script, sys.executable,
           __file__, *argv]  # fmt: skip
    os.environ["SP_BENCH_NETNS"] = "1"
    raise SystemExit(subprocess.call(cmd))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--sizes", default="640x360,1280x720")
    p.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--max-viewers", type=int, default=16)
    p.add_argument("--model", default="default")
    p.add_argument("--device", default="cpu")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--size", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    if os.geteuid() == 0 and shutil.which("ip") and not os.environ.get("SP_BENCH_NETNS"):
        in_namespace(sys.argv[1:])
    results = [asyncio.run(measure_size(args, size)) for size in args.sizes.split(",")]
    print(report(results, args))


if __name__ == "__main__":
    main()
