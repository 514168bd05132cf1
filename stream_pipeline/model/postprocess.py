"""The block's postprocess: logits → class map and confidence, per frame.

:func:`postprocess_reference` is plain numpy in float64 — slow, and simple enough to trust.
:func:`postprocess_fast` is one fused per-pixel kernel (numba, parallel over rows) that never
materialises C×H×W at frame size; it must agree with the reference (tests check it).

Semantics (as Roboflow computes them; docs/outputs.md): crop the letterbox padding (rounded into
logit cells) and resize the logits to the frame (bilinear; antialiased when the frame is smaller);
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

from stream_pipeline.config import apply_runtime_defaults
from stream_pipeline.errors import ModelError
from stream_pipeline.model.geometry import Geometry, logit_taps
from stream_pipeline.model.package import ModelPackage

# numba starts its OpenMP pool at the first parallel kernel, not at import: set how its idle
# workers wait (passive, not spinning) here, where the kernels live, before any of them runs.
apply_runtime_defaults()

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
    ys = logit_taps(geo.frame_height, h, geo.input_height, geo.content_y, geo.content_height)
    xs = logit_taps(geo.frame_width, w, geo.input_width, geo.content_x, geo.content_width)
    return ys, xs


def _on_canvas(
    class_map: npt.NDArray[Any], conf: npt.NDArray[np.float32], geo: Geometry, head: Head
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
    """A static crop's maps placed back on the whole frame: background, confidence 0 around it."""
    if not geo.canvas_width:
        return class_map, conf
    full_cls = np.full((geo.canvas_height, geo.canvas_width), head.background_id, class_map.dtype)
    full_conf = np.zeros((geo.canvas_height, geo.canvas_width), np.float32)
    rows = slice(geo.crop_y, geo.crop_y + geo.frame_height)
    cols = slice(geo.crop_x, geo.crop_x + geo.frame_width)
    full_cls[rows, cols] = class_map
    full_conf[rows, cols] = conf
    return full_cls, full_conf


def postprocess_reference(
    logits: npt.NDArray[np.floating[Any]], geo: Geometry, head: Head
) -> tuple[npt.NDArray[np.unsignedinteger[Any]], npt.NDArray[np.float32]]:
    """Reference postprocess of one frame's logits ``(C, h, w)``: (class_map, confidence)."""
    (yi, yw), (xi, xw) = _axes(logits, geo)
    _, h, w = logits.shape
    # Dense resize matrices (frame × logit cells): slow and obviously right.
    wy = np.zeros((geo.frame_height, h))
    np.add.at(wy, (np.arange(geo.frame_height)[:, None], yi), yw.astype(np.float64))
    wx = np.zeros((geo.frame_width, w))
    np.add.at(wx, (np.arange(geo.frame_width)[:, None], xi), xw.astype(np.float64))
    up = np.einsum("yh,chw,xw->cyx", wy, logits.astype(np.float64), wx, optimize=True)
    if head.activation == "softmax":
        e = np.exp(up - up.max(axis=0, keepdims=True))
        prob = e / e.sum(axis=0, keepdims=True)
    elif head.activation == "sigmoid":
        # The class is the argmax of the logits; its confidence the sigmoid of that logit.
        prob = 1.0 / (1.0 + np.exp(-up))
    else:
        prob = up
    channel = prob.argmax(axis=0)
    conf = prob.max(axis=0)
    class_map = head.channel_class_ids[channel]
    below = conf < head.thresholds[class_map]
    class_map = np.where(below, head.background_id, class_map)
    conf = np.where(below, 0.0, conf)
    return _on_canvas(class_map.astype(head.class_dtype), conf.astype(np.float32), geo, head)


# exp(x) for x ≤ 0 as 2^n · 2^f with n = x·log2(e) rounded and f in (-0.5, 0.5]: a degree-7
# polynomial for 2^f, and 2^n built from its IEEE-754 exponent bits. Plain arithmetic, no libm call
# and no table gather, so LLVM vectorises the softmax sum; relative error < 1e-7, below what the
# uint8 confidence can show.
_EXP2_POLY = np.array([_LN2**k / math.factorial(k) for k in range(8)], dtype=np.float32)


# fastmath without nnan/ninf: the range guard below must survive NaN logits.
@numba.njit(
    parallel=True,
    cache=True,
    fastmath={"nsz", "arcp", "contract", "afn", "reassoc"},
    nogil=True,
)
def _fused(
    logits: Any,
    yi: Any,
    yw: Any,
    xi: Any,
    xw: Any,
    ids: Any,
    thresholds: Any,
    background: int,
    activation: int,
    class_map: Any,
    conf: Any,
    poly: Any,
) -> None:
    channels, logit_height, _ = logits.shape
    height, width = class_map.shape
    xtaps = xi.shape[1]
    ytaps = yi.shape[1]
    # The resize is separable: interpolate every logit row horizontally once (C×h×W, small), so
    # the per-pixel work below reads contiguous rows instead of gathering columns per pixel.
    hor = np.empty((logit_height, channels, width), np.float32)
    for j in numba.prange(logit_height):
        for k in range(channels):
            row = logits[k, j]
            for c in range(width):
                acc = np.float32(0.0)
                for q in range(xtaps):
                    acc += row[xi[c, q]] * xw[c, q]
                hor[j, k, c] = acc
    for r in numba.prange(height):
        vals = np.zeros((channels, width), np.float32)
        vmax = np.full(width, -np.inf, np.float32)
        best = np.zeros(width, np.int32)
        for k in range(channels):
            vk = vals[k]
            for q in range(ytaps):
                # 1-D views: plain unit-stride loops that vectorise.
                hk = hor[yi[r, q], k]
                wt = yw[r, q]
                for c in range(width):
                    vk[c] += hk[c] * wt
            for c in range(width):
                # strict: ties go to the first channel, as argmax does; NaN never wins
                up = vk[c] > vmax[c]
                vmax[c] = vk[c] if up else vmax[c]
                best[c] = k if up else best[c]
        prob = np.empty(width, np.float32)
        if activation == 0:
            total = np.zeros(width, np.float32)
            frac = np.empty(width, np.float32)
            bits = np.empty(width, np.int32)
            scale = bits.view(np.float32)  # 2^n, written through its bits
            for k in range(channels):
                vk = vals[k]
                for c in range(width):
                    t = (vk[c] - vmax[c]) * np.float32(_LOG2E)
                    # Keep the exponent in range whatever the network returns (NaN included).
                    t = t if t > -126.0 else np.float32(-126.0)
                    t = t if t < 0.0 else np.float32(0.0)
                    n = np.int32(t - np.float32(0.5))  # t ≤ 0, truncation: f in (-0.5, 0.5]
                    f = t - n
                    p = poly[7]
                    for d in range(6, -1, -1):
                        p = p * f + poly[d]
                    frac[c] = p
                    bits[c] = (n + 127) << 23
                for c in range(width):
                    total[c] += frac[c] * scale[c]
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


# The kernel's row-interpolated logits (logit rows × C × frame width, float32) stay under this;
# bigger heads (many classes, fine logits, wide frames) are processed in bands of frame rows.
_HOR_BYTES = 16 * 1024 * 1024


def postprocess_fast(
    logits: npt.NDArray[np.floating[Any]], geo: Geometry, head: Head
) -> tuple[npt.NDArray[np.unsignedinteger[Any]], npt.NDArray[np.float32]]:
    """Fused postprocess of one frame's logits ``(C, h, w)``: (class_map, confidence)."""
    (yi, yw), (xi, xw) = _axes(logits, geo)
    lg = np.ascontiguousarray(logits, dtype=np.float32)
    y_first, y_last = yi[:, 0], yi[:, -1]
    class_map = np.empty((geo.frame_height, geo.frame_width), dtype=head.class_dtype)
    conf = np.empty((geo.frame_height, geo.frame_width), dtype=np.float32)
    # Logit rows one band may use; the frame rows' logit indices never decrease.
    band_rows = max(yi.shape[1], _HOR_BYTES // (4 * lg.shape[0] * geo.frame_width))
    start = 0
    while start < geo.frame_height:
        first = int(y_first[start])
        stop = int(np.searchsorted(y_last, first + band_rows - 1, side="right"))
        stop = max(stop, start + 1)
        last = int(y_last[stop - 1])
        _fused(
            lg[:, first : last + 1],
            yi[start:stop] - first,
            yw[start:stop],
            xi,
            xw,
            head.channel_class_ids,
            head.thresholds,
            head.background_id,
            _ACTIVATIONS[head.activation],
            class_map[start:stop],
            conf[start:stop],
            _EXP2_POLY,
        )
        start = stop
    return _on_canvas(class_map, conf, geo, head)
