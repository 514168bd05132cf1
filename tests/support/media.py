"""Test videos made with PyAV at test time: good, truncated and corrupt ones."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_video(
    path: Path, frames: int = 30, width: int = 160, height: int = 96, fps: int = 15
) -> Path:
    """An H.264 mp4 with a moving gradient and a moving box, ``frames`` long."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "10"}
        ys, xs = np.mgrid[0:height, 0:width]
        for i in range(frames):
            rgb = np.zeros((height, width, 3), np.uint8)
            rgb[..., 0] = (xs * 255 // max(1, width - 1) + i * 5) % 256
            rgb[..., 1] = ys * 255 // max(1, height - 1)
            x0 = (i * 4) % max(1, width - 20)
            rgb[20:50, x0 : x0 + 20] = (250, 250, 40)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def truncated_copy(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``src``'s bytes (an mp4 cut mid-way: moov may be missing)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def corrupt_copy(
    src: Path, dst: Path, start: float = 0.4, length: int = 2000, seed: int = 0
) -> Path:
    """``src`` with ``length`` random bytes overwritten from ``start`` of its size."""
    data = bytearray(src.read_bytes())
    rng = np.random.default_rng(seed)
    at = int(len(data) * start)
    data[at : at + length] = rng.integers(
        0, 256, size=min(length, len(data) - at), dtype=np.uint8
    ).tobytes()
    dst.write_bytes(bytes(data))
    return dst


def write_ts_video(
    path: Path, frames: int = 60, width: int = 160, height: int = 96, fps: int = 15
) -> Path:
    """The same content in MPEG-TS (a container that survives truncation, like a recording)."""
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": "10"}
        for i in range(frames):
            rgb = np.full((height, width, 3), (i * 4) % 256, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
