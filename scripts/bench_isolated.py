#!/usr/bin/env python3
"""Benchmark: decoding in a child process (IsolatedSource) against decoding in-process.

    .venv/bin/python scripts/bench_isolated.py                   # 1280×720, 300 frames, 5 runs
    .venv/bin/python scripts/bench_isolated.py --size 1920x1080 --frames 200

The same H.264 file (a moving gradient, encoded once) is read to the end by each source into a
ring of 8 that a consumer thread empties, as the engine's batcher would. Runs are interleaved
and the median is reported: frames per second, and the CPU time the *service's* process spends
per frame (in-process that is the decode; isolated it is receiving slots) and, isolated, in the
decoder child (its decode, its one copy into a slot, its messages).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stream_pipeline.buffer import DropPolicy, RingBuffer, RingClosed
from stream_pipeline.frames import Frame
from stream_pipeline.sources import Source, SourceSpec, make_source
from stream_pipeline.sources.isolated import IsolatedSource


def write_clip(path: Path, width: int, height: int, frames: int) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(30, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast"}
        ys, xs = np.mgrid[0:height, 0:width]
        for i in range(frames):
            rgb = np.empty((height, width, 3), np.uint8)
            rgb[..., 0] = (xs + i * 4) % 256
            rgb[..., 1] = (ys + i * 2) % 256
            rgb[..., 2] = (xs + ys) % 256
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def cpu_of(pid: int | None) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (OSError, TypeError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_once(source: Source) -> dict[str, float]:
    """Read ``source`` to its end: fps, and CPU milliseconds per frame here and in the decoder
    child (sampled every 10 frames: the last few frames' share is missed)."""
    ring: RingBuffer[Frame] = RingBuffer(8, DropPolicy.BLOCK)
    stop = threading.Event()
    source.open()
    cpu0, t0 = time.process_time(), time.perf_counter()
    # The child's opening (probing the file) is not decoding: start its count after it.
    child0 = cpu_of(source.child_pid) if isinstance(source, IsolatedSource) else None

    def produce() -> None:
        try:
            source.run(ring, stop)
        finally:
            ring.close()
            source.close()

    producer = threading.Thread(target=produce)
    producer.start()
    n, child_cpu, child_frames = 0, 0.0, 0
    while True:
        try:
            frame = ring.get(30)
        except RingClosed:
            break
        assert frame is not None and frame.rgb is not None
        n += 1
        del frame
        if isinstance(source, IsolatedSource) and n % 10 == 0:
            used = cpu_of(source.child_pid)
            if used is not None:
                child_cpu, child_frames = used, n
    producer.join()
    wall = time.perf_counter() - t0
    return {
        "frames": n,
        "fps": n / wall,
        "cpu_ms_per_frame": (time.process_time() - cpu0) * 1000 / n,
        "child_cpu_ms_per_frame": (
            (child_cpu - (child0 or 0.0)) * 1000 / child_frames if child_frames else 0.0
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "clip.mp4"
        write_clip(clip, width, height, args.frames)
        spec = SourceSpec(str(clip), id="bench")
        run_once(IsolatedSource(spec))  # starts the forkserver: not part of any run
        runs: dict[str, list[dict[str, float]]] = {"in_process": [], "isolated": []}
        for _ in range(args.runs):
            here = make_source(spec)
            assert isinstance(here, Source)
            runs["in_process"].append(run_once(here))
            runs["isolated"].append(run_once(IsolatedSource(spec)))
    report = {
        "size": args.size,
        "frames": args.frames,
        "runs": args.runs,
        **{
            kind: {
                key: round(statistics.median(r[key] for r in results), 3)
                for key in ("fps", "cpu_ms_per_frame", "child_cpu_ms_per_frame")
            }
            for kind, results in runs.items()
        },
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
