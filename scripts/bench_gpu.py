#!/usr/bin/env python3
"""GPU benchmark of the device path: one command, sized for 8 minutes of a lent GPU.

    .venv/bin/python scripts/bench_gpu.py                   # everything (about 5–7 minutes)
    .venv/bin/python scripts/bench_gpu.py --streams 57 --seconds 20
    .venv/bin/python scripts/bench_gpu.py --skip-tests --only postprocess

1. builds its time-only model: torchvision LRASPP-MobileNetV3-Large, random weights, 19 classes,
   1024×512, fp16, exported to ONNX with a static batch (CUDA graphs need one);
2. runs the ``gpu`` tests (``pytest -m gpu tests/gpu``);
3. prints the table (markdown, for docs/benchmarks.md):
   - fused postprocess at 1080p, 19 classes, 1/8-resolution logits, against the naive framework
     version (upsample C×H×W, softmax, max) in the same run — issue 21: ≥ 30,000 frames/s, ≥ 10×;
   - the worker pipeline (two threads, two streams, bound buffers) against bare batched ONNX
     Runtime on the same model and batch — ≥ 90 %;
   - N 1080p30 H.264 streams through the engine with JSON out: results, drops, p99
     arrival-to-result, CPU cores used — ≥ 50 streams, no drops, p99 < 100 ms.

Needs the ``gpu`` extra (onnxruntime-gpu, CuPy) and torch + torchvision on the device machine.
Nothing here runs on import; ``--help`` works without any of them.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import platform
import queue
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

N_CLASSES = 19
INPUT_W, INPUT_H = 1024, 512
FRAME_W, FRAME_H = 1920, 1080


@dataclass(frozen=True)
class Row:
    """One line of the table: what, the figure, its unit, the bar it is held to, and whether
    it clears it (None: no bar)."""

    what: str
    value: float
    unit: str
    target: str = ""
    ok: bool | None = None


def format_table(rows: Sequence[Row], header: str) -> str:
    """The markdown table of ``rows`` under a header line (machine, command, date)."""
    lines = [header, "", "| measurement | value | target | |", "|---|---:|---|---|"]
    for r in rows:
        mark = "" if r.ok is None else ("ok" if r.ok else "**below**")
        value = f"{r.value:,.0f}" if abs(r.value) >= 100 else f"{r.value:,.2f}"
        lines.append(f"| {r.what} | {value} {r.unit} | {r.target} | {mark} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--workdir", type=Path, default=None, help="models and videos (default: temp)")
    p.add_argument("--batch", type=int, default=16, help="static batch of the export (16)")
    p.add_argument("--streams", type=int, default=50, help="1080p30 cameras through the engine")
    p.add_argument("--seconds", type=float, default=15.0, help="length of the streams run (s)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the gpu tests first")
    p.add_argument(
        "--only",
        choices=("postprocess", "pipeline", "streams"),
        action="append",
        help="run only these parts of the table (repeatable)",
    )
    return p.parse_args(argv)


# -- the model ---------------------------------------------------------------------------------


def build_model(workdir: Path, batch: int) -> Path:
    """A model package with LRASPP-MobileNetV3-Large (random weights) as fp16 ONNX, static batch."""
    pkg = workdir / f"lraspp-b{batch}"
    if (pkg / "model.onnx").exists():
        return pkg
    try:
        import torch

        torchvision: Any = importlib.import_module("torchvision")
    except ImportError:
        sys.exit("bench_gpu.py needs torch and torchvision to build its model")
    net = torchvision.models.segmentation.lraspp_mobilenet_v3_large(
        weights=None, weights_backbone=None, num_classes=N_CLASSES
    )

    class Logits(torch.nn.Module):  # type: ignore[misc]  # torchvision's dict → one tensor
        def __init__(self, inner: Any) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x: Any) -> Any:
            return self.inner(x)["out"]

    model = Logits(net).eval().half().cuda()
    pkg.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(batch, 3, INPUT_H, INPUT_W, dtype=torch.float16, device="cuda")
    torch.onnx.export(
        model, (dummy,), str(pkg / "model.onnx"), input_names=["images"],
        output_names=["logits"], opset_version=17, dynamo=False,
    )  # fmt: skip
    meta = {
        "model_id": f"bench/lraspp-b{batch}",
        "task": "semantic-segmentation",
        "class_names": ["background", *[f"class{i}" for i in range(1, N_CLASSES)]],
        "input": {"width": INPUT_W, "height": INPUT_H, "resize": "stretch", "color": "rgb",
                  "scale": 255.0, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]},
        "output": {"activation": "softmax"},
        "default_confidence": 0.5,
    }  # fmt: skip
    (pkg / "model.json").write_text(json.dumps(meta), encoding="utf-8")
    return pkg


def make_video(path: Path, seconds: float, fps: int = 30) -> Path:
    """A 1080p30 H.264 camera-like clip (moving gradient and boxes), encoded once."""
    if path.exists():
        return path
    import av
    import numpy as np

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(fps, 1), options={"preset": "ultrafast"})
        s.width, s.height, s.pix_fmt = FRAME_W, FRAME_H, "yuv420p"
        s.thread_type = "AUTO"
        ys, xs = np.mgrid[0:FRAME_H, 0:FRAME_W]
        base = np.stack([xs * 255 // FRAME_W, ys * 255 // FRAME_H, (xs + ys) % 256], -1)
        for i in range(int(seconds * fps)):
            rgb = ((base + i * 3) % 256).astype(np.uint8)
            x0 = (i * 17) % (FRAME_W - 300)
            rgb[300:600, x0 : x0 + 300] = (240, 200, 40)
            c.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        c.mux(s.encode(None))
    return path


# -- the parts of the table ----------------------------------------------------------------------


def _rate(step: Callable[[], object], sync: Callable[[], None], seconds: float) -> float:
    """Calls per second of ``step`` over about ``seconds`` (after a warm-up), device-synced."""
    for _ in range(3):
        step()
    sync()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(10):
            step()
        n += 10
        sync()
    return n / (time.perf_counter() - t0)


def _sync(be: Any) -> Callable[[], None]:
    if be.on_device:
        return be.xp.cuda.Device().synchronize  # type: ignore[no-any-return]
    return lambda: None


def bench_postprocess(
    seconds: float = 3.0, be_name: str = "cupy", frame: tuple[int, int] = (FRAME_W, FRAME_H)
) -> list[Row]:
    """Fused per-pixel kernel vs the framework version, 1080p from 19×64×128 logits.

    (``be_name="numpy"`` with a small frame runs the same code on the host-compiled kernel: CI.)
    """
    import numpy as np

    from stream_pipeline.gpu.postprocess import (
        DeviceHead,
        DeviceTaps,
        postprocess_fused,
        postprocess_xp,
    )
    from stream_pipeline.gpu.xp import backend
    from stream_pipeline.model.geometry import geometry_for
    from stream_pipeline.model.package import InputSpec
    from stream_pipeline.model.postprocess import Head

    be = backend(be_name, kernels=None if be_name == "cupy" else "host")
    xp = be.xp
    spec = InputSpec(width=INPUT_W, height=INPUT_H)
    geo = geometry_for(*frame, spec)
    lh, lw = INPUT_H // 8, INPUT_W // 8
    rng = np.random.default_rng(0)
    logits = be.to_device(rng.normal(size=(N_CLASSES, lh, lw)).astype(np.float32) * 3)
    head = Head(
        np.arange(N_CLASSES, dtype=np.int32), np.full(N_CLASSES, 0.4, np.float32), 0, "softmax"
    )
    taps, dhead = DeviceTaps.build(be, geo, lh, lw), DeviceHead.build(be, head)
    cls = xp.empty((frame[1], frame[0]), xp.uint8)
    conf8 = xp.empty((frame[1], frame[0]), xp.uint8)
    sync = _sync(be)
    fused = _rate(lambda: postprocess_fused(be, logits, taps, dhead, cls, conf8), sync, seconds)
    naive = _rate(lambda: postprocess_xp(be, logits, taps, dhead), sync, seconds)
    return [
        Row("fused postprocess 1080p, 19 cl., 1/8 logits", fused, "frames/s", "≥ 30,000",
            fused >= 30_000),
        Row("naive (upsample C×H×W, softmax, max)", naive, "frames/s"),
        Row("fused / naive", fused / naive, "×", "≥ 10", fused / naive >= 10),
    ]  # fmt: skip


def bench_pipeline(
    pkg: Path,
    batch: int,
    seconds: float = 8.0,
    be_name: str = "cupy",
    frame_wh: tuple[int, int] = (FRAME_W, FRAME_H),
) -> list[Row]:
    """Bare batched ORT on bound buffers vs the worker pipeline (two threads), same model/batch."""
    import numpy as np

    from stream_pipeline.frames import Frame, FrameMeta
    from stream_pipeline.gpu.binding import BindOptions, BoundSession
    from stream_pipeline.gpu.preprocess import Planes
    from stream_pipeline.gpu.worker import CudaWorker
    from stream_pipeline.gpu.xp import backend
    from stream_pipeline.model import load_model
    from stream_pipeline.worker import HostNeeds, Thresholds, WorkItem

    be = backend(be_name)
    xp = be.xp
    width, height = frame_wh
    model = load_model(str(pkg), device="cuda" if be.on_device else "cpu")
    graph = BindOptions(cuda_graph=be.on_device)
    bare = BoundSession(be, model.package, batch, graph)
    sync = _sync(be)
    bare_fps = _rate(bare.run, sync, seconds) * batch
    del bare
    rows = [Row(f"bare ORT, batch {batch}, fp16, CUDA graph", bare_fps, "frames/s")]
    rng = np.random.default_rng(1)
    for label, device_in in (("NV12 on the device", True), ("host RGB, uploaded", False)):
        items = []
        for i in range(batch):
            meta = FrameMeta("cam", i, 0.0, 0.0, time.monotonic(), width, height)
            if device_in:
                y = xp.asarray(rng.integers(16, 235, (height, width), np.uint8))
                uv = xp.asarray(rng.integers(16, 240, (height // 2, width), np.uint8))
                frame = Frame(meta, device=Planes(y, width, height, uv))
            else:
                frame = Frame(meta, rgb=rng.integers(0, 256, (height, width, 3), np.uint8))
            items.append(WorkItem(frame, Thresholds("best"), HostNeeds(pixels=False)))
        worker = CudaWorker(model, be, batch, graph)
        fps = _two_threads(worker, items, seconds) * batch
        worker.close()
        ok = fps >= 0.9 * bare_fps
        rows.append(
            Row(
                f"pipeline ({label})",
                fps,
                "frames/s",
                "≥ 90 % of bare ORT",
                ok if device_in else None,
            )
        )
        rows.append(Row(f"pipeline / bare ({label})", 100 * fps / bare_fps, "%"))
    return rows


def _two_threads(worker: Any, items: list[Any], seconds: float) -> float:
    """Batches per second through start (this thread) and finish (a second one), as the engine's
    batcher drives them, with its hand-off of two batches."""
    handoff: queue.Queue[Any] = queue.Queue(maxsize=2)

    def post() -> None:
        while True:
            pending = handoff.get()
            if pending is None:
                return
            worker.finish(pending)

    t = threading.Thread(target=post)
    t.start()
    for _ in range(3):
        handoff.put(worker.start(items, time.monotonic()))
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        handoff.put(worker.start(items, time.monotonic()))
        n += 1
    handoff.put(None)
    t.join()
    return n / (time.perf_counter() - t0)


def bench_streams(
    pkg: Path, video: Path, n: int, batch: int, frames: int, device: str = "cuda", fps: int = 30
) -> list[Row]:
    """N realtime sources (``fps`` each, ``frames`` long) through one engine, a JSONL each.

    ``drop_oldest`` makes a source live (as a camera: a full ring drops, the end of the file
    reconnects), so ``max_frames`` ends it.
    """
    from stream_pipeline.buffer import DropPolicy
    from stream_pipeline.consumers import JsonlSink
    from stream_pipeline.engine import Engine, HostNeeds
    from stream_pipeline.model import load_model
    from stream_pipeline.sources import SourceSpec

    model = load_model(str(pkg), device=device)
    out = pkg.parent / "streams"
    out.mkdir(exist_ok=True)

    async def go() -> tuple[list[float], float, float]:
        async with Engine(device=device, max_batch=batch, max_wait_ms=10) as engine:
            handles = []
            for i in range(n):
                spec = SourceSpec(
                    str(video), id=f"cam{i}", realtime=True,
                    buffer_policy=DropPolicy.DROP_OLDEST, buffer_size=8, max_frames=frames,
                )  # fmt: skip
                h = await engine.add_source(
                    spec, model=model, job="bench", needs=HostNeeds(pixels=False), start=False
                )
                await engine.attach_sink(
                    JsonlSink(out / f"cam{i}.jsonl", source_id=f"cam{i}"), job="bench"
                )
                handles.append(h)
            latencies: list[float] = []

            async def watch() -> None:
                # arrival (the source's monotonic stamp) → result at a consumer; lossless: every
                # result is timed (appending never holds the worker back)
                latencies.extend(
                    [
                        time.monotonic() - r.frame.meta.arrival_monotonic
                        async for r in engine.subscribe(job="bench")
                        if r.frame is not None
                    ]
                )

            watcher = asyncio.ensure_future(watch())
            r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            for h in handles:
                engine.start_source(h.id)
            for h in handles:
                await h.finished
            wall = time.perf_counter() - t0
            r1 = resource.getrusage(resource.RUSAGE_SELF)
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            engine.end_job("bench")
            await watcher
            await engine.wait_sinks("bench")
            return latencies, wall, cpu

    latencies, wall, cpu = asyncio.run(go())
    # A source with max_frames produces exactly that many frames (dropped ones included): what
    # has no JSONL line was dropped.
    produced = n * frames
    results = sum(len((out / f"cam{i}.jsonl").read_text().splitlines()) for i in range(n))
    dropped = produced - results
    p99 = 1000 * sorted(latencies)[int(0.99 * (len(latencies) - 1))] if latencies else float("nan")
    return [
        Row(f"{n} × {fps} fps H.264 streams: results/s", results / wall, "frames/s",
            f"{fps * n}", results / wall >= 0.98 * fps * n),
        Row("  JSONL lines written", results, f"of {produced} frames", "all", dropped == 0),
        Row("  dropped (all streams)", dropped, "frames", "0", dropped == 0),
        Row("  p99 arrival → result", p99, "ms", "< 100", p99 < 100),
        Row("  CPU cores used", cpu / wall, f"of {os.cpu_count()}"),
    ]  # fmt: skip


def gpu_name() -> str:
    """The device's name as CUDA reports it."""
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        return str(props["name"].decode() if isinstance(props["name"], bytes) else props["name"])
    except Exception:  # no CuPy or no device: say so in the header instead of failing
        return "no CUDA device"


def main(argv: Sequence[str] | None = None) -> int:
    """Build, test, measure, print."""
    args = parse_args(argv)
    parts = set(args.only or ("postprocess", "pipeline", "streams"))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if not args.skip_tests:
        rc = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rs", "tests/gpu"]
        )
        if rc != 0:
            print(f"gpu tests failed (exit {rc}); measuring anyway", file=sys.stderr)
    rows: list[Row] = []
    if "postprocess" in parts:
        rows += bench_postprocess()
    pkg = build_model(workdir, args.batch) if parts & {"pipeline", "streams"} else None
    if pkg is not None and "pipeline" in parts:
        rows += bench_pipeline(pkg, args.batch)
    if pkg is not None and "streams" in parts:
        video = make_video(workdir / "cam1080p30.mp4", args.seconds)
        rows += bench_streams(pkg, video, args.streams, args.batch, int(args.seconds * 30))
    header = (
        f"{gpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
        f"`scripts/bench_gpu.py {' '.join(argv if argv is not None else sys.argv[1:])}`; {started}"
    )
    print(format_table(rows, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
