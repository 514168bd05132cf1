"""The block's postprocess: logits → class map and confidence, per frame.

:func:`postprocess_reference` is plain numpy in float64 — slow, and simple enough to trust.
:func:`postprocess_fast` is one fused per-pixel kernel (numba, parallel over rows) that never
materialises C×H×W at frame size; it must agree with the reference (tests check it).

Semantics (DESIGN.md): remove letterbox padding and resize the logits bilinearly to the frame;
softmax (or sigmoid, or none) over classes; confidence = max, class = argmax (mapped through the
channel → class table, so a net without a background channel skips that slot; a 1-channel head is
binary: sigmoid gives the foreground's confidence); pixels with confidence below their class's
threshold become background with confidence 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from stream_pipeline.errors import ModelError
from stream_pipeline.model.geometry import Geometry, sample_coords
from stream_pipeline.model.package import ModelPackage

__all__ = ["Head", "postprocess_fast", "postprocess_reference"]

_ACTIVATIONS = {"softmax": 0, "sigmoid": 1, "none": 2}
_LN2 = math.log(2.0)
_LOG2E = 1.0 / _LN2


@dataclass(frozen=True, slots=True)
class Head:
    """What the postprocess needs to know about the network's output and the thresholds."""

    channel_class_ids: npt.NDArray[np.int32]
    thresholds: npt.NDArray[np.float32]
    background_id: int
    activation: str

    @classmethod
    def for_package(
        cls, package: ModelPackage, channels: int, thresholds: npt.NDArray[np.float32]
    ) -> Head:
        """The head of ``package`` whose network outputs ``channels`` channels."""
        ids = package.channel_class_ids(channels)
        activation = package.activation
        if channels == 1 and activation == "softmax":
            # A softmax over one channel is always 1: a 1-channel head is binary (sigmoid).
            activation = "sigmoid"
        if thresholds.shape != (len(package.class_names),):
            raise ModelError(
                f"expected {len(package.class_names)} thresholds, got {thresholds.shape}"
            )
        return cls(
            np.asarray(ids, dtype=np.int32),
            np.ascontiguousarray(thresholds, dtype=np.float32),
            package.background_id,
            activation,
        )

    @property
    def class_dtype(self) -> type[np.unsignedinteger[Any]]:
        """uint8 while there are ≤ 256 classes, else uint16."""
        return np.uint8 if len(self.thresholds) <= 256 else np.uint16


def _axes(logits: npt.NDArray[Any], geo: Geometry) -> tuple[Any, Any]:
    _, h, w = logits.shape
    ys = sample_coords(geo.frame_height, h, geo.input_height, geo.content_y, geo.content_height)
    xs = sample_coords(geo.frame_width, w, geo.input_width, geo.content_x, geo.content_width)
    return ys, xs


def postprocess_reference(
    logits: npt.NDArray[np.floating[Any]], geo: Geometry, head: Head
) -> tuple[npt.NDArray[np.unsignedinteger[Any]], npt.NDArray[np.float32]]:
    """Reference postprocess of one frame's logits ``(C, h, w)``: (class_map, confidence)."""
    (y0, y1, fy), (x0, x1, fx) = _axes(logits, geo)
    lg = logits.astype(np.float64)
    wy = fy.astype(np.float64)[None, :, None]
    wx = fx.astype(np.float64)[None, None, :]
    rows = lg[:, y0, :] * (1 - wy) + lg[:, y1, :] * wy  # C × H × w
    up = rows[:, :, x0] * (1 - wx) + rows[:, :, x1] * wx  # C × H × W
    if head.activation == "softmax":
        e = np.exp(up - up.max(axis=0, keepdims=True))
        prob = e / e.sum(axis=0, keepdims=True)
    elif head.activation == "sigmoid":
        prob = 1.0 / (1.0 + np.exp(-up))
    else:
        prob = up
    channel = prob.argmax(axis=0)
    conf = prob.max(axis=0)
    class_map = head.channel_class_ids[channel]
    below = conf < head.thresholds[class_map]
    class_map = np.where(below, head.background_id, class_map)
    conf = np.where(below, 0.0, conf)
    return class_map.astype(head.class_dtype), conf.astype(np.float32)


# exp(x) for x ≤ 0 as 2^n · 2^f: a degree-7 polynomial for 2^f on [0, 1) and a table for 2^n.
# Plain arithmetic and a gather, so LLVM vectorises the softmax sum (a libm exp call would not
# be); relative error < 1e-6, below what the uint8 confidence can show.
_EXP2_POLY = np.array([_LN2**k / math.factorial(k) for k in range(8)], dtype=np.float32)
_POW2 = np.array([2.0**n for n in range(-127, 1)], dtype=np.float32)  # 2^n at index n + 127


# fastmath without nnan/ninf: the range guard below must survive NaN logits.
@numba.njit(
    parallel=True,
    cache=True,
    fastmath={"nsz", "arcp", "contract", "afn", "reassoc"},
    nogil=True,
)
def _fused(
    logits: Any,
    y0: Any,
    y1: Any,
    fy: Any,
    x0: Any,
    x1: Any,
    fx: Any,
    ids: Any,
    thresholds: Any,
    background: int,
    activation: int,
    class_map: Any,
    conf: Any,
    poly: Any,
    pow2: Any,
) -> None:
    channels, _, logit_width = logits.shape
    height, width = class_map.shape
    for r in numba.prange(height):
        # Interpolate vertically once per output row, then horizontally per pixel.
        row = np.empty((channels, logit_width), np.float32)
        vals = np.empty((channels, width), np.float32)
        vmax = np.full(width, -np.inf, np.float32)
        best = np.zeros(width, np.int32)
        a0 = y0[r]
        a1 = y1[r]
        wy = fy[r]
        for k in range(channels):
            for j in range(logit_width):
                row[k, j] = logits[k, a0, j] * (1 - wy) + logits[k, a1, j] * wy
        for k in range(channels):
            for c in range(width):
                v = row[k, x0[c]] * (1 - fx[c]) + row[k, x1[c]] * fx[c]
                vals[k, c] = v
                if v > vmax[c]:  # strict: ties go to the first channel, as argmax does
                    vmax[c] = v
                    best[c] = k
        prob = np.empty(width, np.float32)
        if activation == 0:
            total = np.zeros(width, np.float32)
            for k in range(channels):
                for c in range(width):
                    t = (vals[k, c] - vmax[c]) * np.float32(_LOG2E)
                    # Keep the table index in range whatever the network returns (NaN included).
                    if not t > -126.0:
                        t = np.float32(-126.0)
                    elif t > 0.0:
                        t = np.float32(0.0)
                    n = np.int32(np.floor(t))
                    f = t - n
                    p = poly[7]
                    for d in range(6, -1, -1):
                        p = p * f + poly[d]
                    total[c] += p * pow2[n + 127]
            for c in range(width):
                prob[c] = 1 / total[c]
        elif activation == 1:
            for c in range(width):
                prob[c] = 1 / (1 + np.exp(-vmax[c]))
        else:
            for c in range(width):
                prob[c] = vmax[c]
        for c in range(width):
            cid = ids[best[c]]
            if prob[c] < thresholds[cid]:
                class_map[r, c] = background
                conf[r, c] = 0
            else:
                class_map[r, c] = cid
                conf[r, c] = prob[c]


def postprocess_fast(
    logits: npt.NDArray[np.floating[Any]], geo: Geometry, head: Head
) -> tuple[npt.NDArray[np.unsignedinteger[Any]], npt.NDArray[np.float32]]:
    """Fused postprocess of one frame's logits ``(C, h, w)``: (class_map, confidence)."""
    (y0, y1, fy), (x0, x1, fx) = _axes(logits, geo)
    lg = np.ascontiguousarray(logits, dtype=np.float32)
    class_map = np.empty((geo.frame_height, geo.frame_width), dtype=head.class_dtype)
    conf = np.empty((geo.frame_height, geo.frame_width), dtype=np.float32)
    _fused(
        lg,
        y0,
        y1,
        fy,
        x0,
        x1,
        fx,
        head.channel_class_ids,
        head.thresholds,
        head.background_id,
        _ACTIVATIONS[head.activation],
        class_map,
        conf,
        _EXP2_POLY,
        _POW2,
    )
    return class_map, conf
