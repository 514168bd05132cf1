#!/usr/bin/env python3
"""Benchmark: the pipeline against a naive sequential loop, and each stage alone.

    .venv/bin/python scripts/bench.py                    # throughput table (default model)
    .venv/bin/python scripts/bench.py --latency 60       # live-rate latency over a minute
    .venv/bin/python scripts/bench.py --memory 600       # RSS at start/end of a long run

Throughput: the same H.264 video (rendered from the synthetic street scene and encoded once),
the same model and the same outputs (annotated mp4 + JSONL with RLE masks). The naive loop is
the obvious code: decode → segment → serialise → overlay → encode, one frame at a time, in one
thread. Runs are interleaved (naive, pipeline, naive, …) and the median of each is reported.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np

from stream_pipeline.consumers import JsonlSink, MaskAnnotator, VideoFileSink
from stream_pipeline.consumers.base import SinkContext
from stream_pipeline.frames import Frame, FrameMeta
from stream_pipeline.model import load_model
from stream_pipeline.model.serialize import prediction_dict
from stream_pipeline.pipeline import Pipeline, PipelineConfig
from stream_pipeline.scenes import StreetScene
from stream_pipeline.sources import SourceSpec


def make_video(path: Path, frames: int, width: int, height: int, fps: int = 30) -> Path:
    """Render the street scene and encode it as H.264 mp4 (once per benchmark)."""
    scene = StreetScene(width, height, seed=11)
    with av.open(str(path), "w") as c:
        s = c.add_stream(
            "libx264", rate=Fraction(fps, 1), options={"preset": "veryfast", "crf": "20"}
        )
        s.width, s.height, s.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            rgb, _ = scene.render(i / fps)
            c.mux(s.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        c.mux(s.encode(None))
    return path


def decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        c.streams.video[0].thread_type = "AUTO"
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


def naive_loop(video: Path, model: Any, out: Path) -> int:
    """The obvious sequential loop, with the same outputs as the pipeline."""
    annotator = MaskAnnotator.for_classes(
        model.class_names, model.package.colors, model.package.background_id
    )
    n = 0
    with (
        av.open(str(video)) as src,
        av.open(str(out / "naive.mp4"), "w") as dst,
        open(out / "naive.jsonl", "w") as js,
    ):
        stream = dst.add_stream("libx264", rate=30, options={"preset": "veryfast", "crf": "23"})
        vs = src.streams.video[0]
        stream.width, stream.height, stream.pix_fmt = vs.width, vs.height, "yuv420p"
        for frame in src.decode(vs):
            rgb = frame.to_ndarray(format="rgb24")
            result = model.segment(rgb)
            meta = FrameMeta(
                "naive",
                n,
                float(frame.time or 0),
                time.time(),
                time.monotonic(),
                rgb.shape[1],
                rgb.shape[0],
            )
            result = type(result)(
                result.class_map,
                result.confidence,
                result.present_class_ids,
                Frame(meta, rgb=rgb),
                result.inference_id,
                result.timings,
            )
            js.write(
                json.dumps(
                    prediction_dict(
                        result,
                        model.class_names,
                        model.package.model_id,
                        model.package.background_id,
                    )
                )
                + "\n"
            )
            drawn = annotator.annotate(rgb, result.class_map, result.present_class_ids)
            dst.mux(stream.encode(av.VideoFrame.from_ndarray(drawn, format="rgb24")))
            n += 1
        dst.mux(stream.encode(None))
    return n


def pipeline_run(video: Path, model: Any, out: Path, max_batch: int) -> int:
    cfg = PipelineConfig(
        sources=(SourceSpec(str(video), id="bench"),), max_batch=max_batch, device="cpu"
    )
    annotator = MaskAnnotator.for_classes(
        model.class_names, model.package.colors, model.package.background_id
    )
    sinks = [
        VideoFileSink(out / "pipe.mp4", annotator, source_id="bench"),
        JsonlSink(out / "pipe.jsonl"),
    ]
    (out / "pipe.jsonl").unlink(missing_ok=True)

    async def go() -> int:
        async with Pipeline(cfg, sinks, model=model) as p:
            await p.run()
        return int(p.status().results)

    return asyncio.run(go())


def timed(fn: Any, *args: Any) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = fn(*args)
    return time.perf_counter() - t0, n


def stage_decode(video: Path) -> int:
    return len(decode_all(video))


def stage_infer(frames: list[np.ndarray], model: Any, batch: int) -> int:
    for i in range(0, len(frames), batch):
        model.segment_batch(frames[i : i + batch])
    return len(frames)


def stage_encode(frames: list[np.ndarray], model: Any, out: Path) -> int:
    ctx = SinkContext(
        model.package.model_id,
        model.class_names,
        model.package.background_id,
        source_fps={"e": 30.0},
    )
    sink = VideoFileSink(
        out / "enc.mp4", MaskAnnotator.for_classes(model.class_names), source_id="e"
    )
    sink.open(ctx)
    zeros = np.zeros(frames[0].shape[:2], np.uint8)
    from stream_pipeline.frames import SegResult

    for i, rgb in enumerate(frames):
        meta = FrameMeta("e", i, i / 30, 0.0, 0.0, rgb.shape[1], rgb.shape[0])
        sink.write(SegResult(zeros, zeros.astype(np.float32), (0,), Frame(meta, rgb=rgb)))
    sink.close()
    return len(frames)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def throughput(args: argparse.Namespace) -> None:
    model = load_model(args.model, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        video = make_video(out / "in.mp4", args.frames, args.width, args.height)
        frames = decode_all(video)
        pipeline_run(video, model, out, args.max_batch)  # warm-up: numba kernels, caches
        naive, pipe = [], []
        for _ in range(args.runs):
            t, n = timed(naive_loop, video, model, out)
            naive.append(n / t)
            t, n = timed(pipeline_run, video, model, out, args.max_batch)
            pipe.append(n / t)
        dec, inf, enc = [], [], []
        for _ in range(args.runs):
            t, n = timed(stage_decode, video)
            dec.append(n / t)
            t, n = timed(stage_infer, frames, model, args.max_batch)
            inf.append(n / t)
            t, n = timed(stage_encode, frames, model, out)
            enc.append(n / t)
    med = {
        k: statistics.median(v)
        for k, v in {
            "naive": naive,
            "pipeline": pipe,
            "decode": dec,
            "infer": inf,
            "encode": enc,
        }.items()
    }
    slowest = min(("decode", "infer", "encode"), key=lambda k: med[k])
    print(f"machine: {machine()}")
    print(
        f"video: {args.frames} frames {args.width}x{args.height} H.264; model {model.package.model_id}; "
        f"max_batch {args.max_batch}; {args.runs} interleaved runs, medians"
    )
    print("| what | frames/s (median) | runs |")
    print("|---|---|---|")
    for k, label in [
        ("naive", "naive sequential loop (decode→segment→JSON→overlay→encode)"),
        ("pipeline", "pipeline (same outputs)"),
        ("decode", "decode only (PyAV → RGB)"),
        ("infer", "inference only (preprocess+ORT+postprocess)"),
        ("encode", "encode only (overlay + H.264 mp4)"),
    ]:
        runs = {"naive": naive, "pipeline": pipe, "decode": dec, "infer": inf, "encode": enc}[k]
        print(f"| {label} | {med[k]:.1f} | {', '.join(f'{x:.1f}' for x in runs)} |")
    print(
        f"\npipeline / naive = {med['pipeline'] / med['naive']:.2f}x; "
        f"pipeline / slowest stage ({slowest}) = {med['pipeline'] / med[slowest]:.0%}"
    )


def latency(args: argparse.Namespace) -> None:
    """A live-rate source faster than the model can go: latency must stay flat, drops counted."""
    url = f"synthetic://street?fps={args.live_fps}&frames=0&realtime=1&width={args.width}&height={args.height}"
    cfg = PipelineConfig(
        sources=(SourceSpec(url, id="live", buffer_size=4),),
        duration=args.latency,
        device="cpu",
        max_batch=args.max_batch,
        threads=args.threads,
    )
    model = load_model(args.model, device="cpu", threads=args.threads)
    windows: list[dict[str, Any]] = []

    async def go() -> dict[str, Any]:
        async with Pipeline(cfg, model=model) as p:
            run = asyncio.ensure_future(p.run())
            last = 0
            while not run.done():
                await asyncio.sleep(10)
                st = p.status()
                lat = p.latency.percentiles(50, 99)["total"] if st["results"] else [0, 0]
                src = st["sources"][0]
                windows.append(
                    {
                        "t": round(st["elapsed"]),
                        "results": st["results"] - last,
                        "p50_ms": round(lat[0]),
                        "p99_ms": round(lat[1]),
                        "dropped": src["dropped"],
                    }
                )
                last = st["results"]
                p.latency = type(p.latency)()  # a fresh window
            await run
            return p.status()

    final = asyncio.run(go())
    print(f"machine: {machine()}")
    print(
        f"live source {args.live_fps} fps {args.width}x{args.height}, drop_oldest ring of 4, {args.latency} s"
    )
    print("| window end (s) | results | latency p50 (ms) | p99 (ms) | dropped so far |")
    print("|---|---|---|---|---|")
    for w in windows:
        print(f"| {w['t']} | {w['results']} | {w['p50_ms']} | {w['p99_ms']} | {w['dropped']} |")
    src = final["sources"][0]
    print(
        f"\nframes {src['frames']}, results {src['results']}, dropped {src['dropped']} "
        f"({src['dropped'] / max(1, src['frames']):.0%})"
    )


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory(args: argparse.Namespace) -> None:
    """A long file-like run with every output attached: RSS sampled over time."""
    model = load_model(args.model, device="cpu")
    samples: list[tuple[float, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        url = f"synthetic://street?frames=0&width={args.width}&height={args.height}"
        cfg = PipelineConfig(
            sources=(SourceSpec(url, id="long"),), duration=args.memory, device="cpu"
        )
        annotator = MaskAnnotator.for_classes(
            model.class_names, model.package.colors, model.package.background_id
        )
        sinks = [
            VideoFileSink(Path(tmp) / "long.mp4", annotator, source_id="long"),
            JsonlSink(Path(tmp) / "long.jsonl"),
        ]

        async def go() -> dict[str, Any]:
            async with Pipeline(cfg, sinks, model=model) as p:
                run = asyncio.ensure_future(p.run())
                while not run.done():
                    samples.append((p.status().elapsed, rss_mb()))
                    await asyncio.sleep(max(1.0, args.memory / 20))
                await run
                return p.status()

        final = asyncio.run(go())
    print(f"machine: {machine()}")
    print(
        f"{args.memory} s run, {final['results']} frames {args.width}x{args.height}, video + JSONL sinks"
    )
    print("| elapsed (s) | RSS (MiB) |")
    print("|---|---|")
    for t, r in samples:
        print(f"| {t:.0f} | {r:.0f} |")
    start = samples[1][1] if len(samples) > 1 else samples[0][1]
    print(f"\nRSS after warm-up {start:.0f} MiB, at end {samples[-1][1]:.0f} MiB")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default="default")
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-batch", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--latency", type=float, default=None, metavar="SECONDS")
    ap.add_argument("--live-fps", type=float, default=60.0)
    ap.add_argument("--memory", type=float, default=None, metavar="SECONDS")
    args = ap.parse_args()
    if args.latency:
        latency(args)
    elif args.memory:
        memory(args)
    else:
        throughput(args)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
