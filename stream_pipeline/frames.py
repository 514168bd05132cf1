"""Frames in, results out: the data that moves between sources, the worker and consumers.

A :class:`Frame`'s pixels live on the host (``rgb``, a numpy array) or on a device (``device``, an
opaque handle the GPU worker understands, e.g. NV12 planes exported by DLPack). Rings hold
references to frames, never copies.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Frame", "FrameMeta", "SegResult", "StageTimings"]

UInt8Array = npt.NDArray[np.uint8]
Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class FrameMeta:
    """Where a frame comes from and when.

    ``frame_id`` counts from 0 per source and keeps counting across reconnects; ``pts_seconds`` is
    the presentation time (monotonic per source); ``captured_at`` is the wall-clock arrival time
    (UNIX seconds) and ``arrival_monotonic`` the same instant on ``time.monotonic()``, from which
    latencies are measured.
    """

    source_id: str
    frame_id: int
    pts_seconds: float
    captured_at: float
    arrival_monotonic: float
    width: int
    height: int


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded frame. Exactly one of ``rgb`` (host, H×W×3 uint8 RGB) or ``device`` is set."""

    meta: FrameMeta
    rgb: UInt8Array | None = None
    device: Any = None

    def __post_init__(self) -> None:
        if (self.rgb is None) == (self.device is None):
            raise ValueError("Frame needs exactly one of rgb (host) or device pixels")
        if self.rgb is not None:
            expected = (self.meta.height, self.meta.width, 3)
            if self.rgb.shape != expected or self.rgb.dtype != np.uint8:
                raise ValueError(
                    f"Frame.rgb must be uint8 {expected}, got {self.rgb.dtype} {self.rgb.shape}"
                )

    @property
    def on_host(self) -> bool:
        """True when the pixels are a numpy array on the host."""
        return self.rgb is not None


@dataclass(frozen=True, slots=True)
class StageTimings:
    """Per-frame timings in seconds. ``queue`` is arrival → picked by the worker."""

    queue: float = 0.0
    preprocess: float = 0.0
    infer: float = 0.0
    postprocess: float = 0.0
    batch_size: int = 1


@dataclass(frozen=True, slots=True)
class SegResult:
    """The block's per-frame result.

    ``class_map`` is H×W uint8 (uint16 beyond 256 classes), ``confidence`` H×W float32 in [0, 1]
    (0 where a pixel fell below its threshold), ``present_class_ids`` the sorted ids present.
    """

    class_map: npt.NDArray[np.integer[Any]]
    confidence: Float32Array
    present_class_ids: tuple[int, ...]
    frame: Frame | None = None
    inference_id: str = ""
    timings: StageTimings = field(default_factory=StageTimings)

    def __post_init__(self) -> None:
        if self.class_map.shape != self.confidence.shape or self.class_map.ndim != 2:
            raise ValueError(
                "class_map and confidence must both be H×W; got "
                f"{self.class_map.shape} and {self.confidence.shape}"
            )

    @property
    def height(self) -> int:
        """Frame height in pixels."""
        return int(self.class_map.shape[0])

    @property
    def width(self) -> int:
        """Frame width in pixels."""
        return int(self.class_map.shape[1])
