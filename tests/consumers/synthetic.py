"""Synthetic results for sink tests: gradient frames with a moving box and a disc as classes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from stream_pipeline.consumers.base import SinkContext
from stream_pipeline.frames import Frame, FrameMeta, SegResult

NAMES = ("background", "road", "vehicle", "person")
CONTEXT = SinkContext(model_id="street/1", class_names=NAMES, background_id=0)


def gradient(height: int, width: int, frame_id: int = 0) -> npt.NDArray[np.uint8]:
    """H×W×3 uint8: red across, green down, blue changing with the frame id."""
    rgb = np.empty((height, width, 3), np.uint8)
    rgb[..., 0] = (np.arange(width) * 255 // max(width - 1, 1))[None, :]
    rgb[..., 1] = (np.arange(height) * 255 // max(height - 1, 1))[:, None]
    rgb[..., 2] = (frame_id * 8) % 256
    return rgb


def class_map(height: int, width: int, frame_id: int = 0) -> npt.NDArray[np.uint8]:
    """Road in the lower third, a vehicle box that moves right, a person disc."""
    ids = np.zeros((height, width), np.uint8)
    ids[2 * height // 3 :, :] = 1
    x0 = (frame_id * 5) % max(width // 2, 1)
    ids[height // 4 : height // 2, x0 : x0 + width // 5] = 2
    yy, xx = np.mgrid[:height, :width]
    ids[(yy - height // 3) ** 2 + (xx - 3 * width // 4) ** 2 < (min(height, width) // 8) ** 2] = 3
    return ids


def make_result(
    frame_id: int,
    height: int = 360,
    width: int = 640,
    fps: float = 30.0,
    source_id: str = "cam-1",
    pts_seconds: float | None = None,
) -> SegResult:
    """A result carrying its host frame, as the worker would hand it to consumers."""
    meta = FrameMeta(
        source_id=source_id,
        frame_id=frame_id,
        pts_seconds=frame_id / fps if pts_seconds is None else pts_seconds,
        captured_at=1_700_000_000.0 + frame_id / fps,
        arrival_monotonic=float(frame_id),
        width=width,
        height=height,
    )
    ids = class_map(height, width, frame_id)
    rng = np.random.default_rng(frame_id)
    conf = np.where(ids > 0, rng.uniform(0.5, 1.0, ids.shape), 0.0).astype(np.float32)
    present = tuple(int(i) for i in np.unique(ids))
    frame = Frame(meta, rgb=gradient(height, width, frame_id))
    return SegResult(ids, conf, present, frame=frame, inference_id=f"inf-{frame_id}")
