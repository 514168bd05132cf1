"""The block's postprocess on the array: logits → class map and ``uint8(conf × 255)``.

Two forms with one meaning (:mod:`stream_pipeline.model.postprocess`): :func:`postprocess_xp`,
plain array code (it materialises C×H×W: the "framework" version and the check), and
:func:`postprocess_fused`, the per-pixel kernel of :mod:`stream_pipeline.gpu.kernels` writing
into preallocated maps. Both read the taps of :func:`stream_pipeline.model.geometry.logit_taps`,
so the letterbox crop and the antialiased downscale are the CPU path's own numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_pipeline.gpu.kernels import BLOCK, grid_for, kernels
from stream_pipeline.gpu.xp import Backend
from stream_pipeline.model.geometry import Geometry, logit_taps
from stream_pipeline.model.postprocess import Head

__all__ = ["DeviceHead", "DeviceTaps", "postprocess_fused", "postprocess_xp"]

_ACTIVATIONS = {"softmax": 0, "sigmoid": 1, "none": 2}


@dataclass(frozen=True, slots=True)
class DeviceTaps:
    """One geometry's resize taps on the device: rows ``(H, ty)`` and columns ``(W, tx)``."""

    yi: Any
    yw: Any
    xi: Any
    xw: Any

    @classmethod
    def build(cls, be: Backend, geo: Geometry, logit_h: int, logit_w: int) -> DeviceTaps:
        """The taps for ``geo`` on logits of ``logit_h`` × ``logit_w`` (uploaded once)."""
        yi, yw = logit_taps(
            geo.frame_height, logit_h, geo.input_height, geo.content_y, geo.content_height
        )
        xi, xw = logit_taps(
            geo.frame_width, logit_w, geo.input_width, geo.content_x, geo.content_width
        )
        up = be.to_device
        return cls(
            up(np.ascontiguousarray(yi, np.int32)),
            up(np.ascontiguousarray(yw, np.float32)),
            up(np.ascontiguousarray(xi, np.int32)),
            up(np.ascontiguousarray(xw, np.float32)),
        )


@dataclass(frozen=True, slots=True)
class DeviceHead:
    """A :class:`Head`'s tables on the device."""

    ids: Any
    thresholds: Any
    background: int
    activation: int
    class_dtype: Any

    @classmethod
    def build(cls, be: Backend, head: Head) -> DeviceHead:
        """Upload ``head``'s channel → class table and thresholds."""
        return cls(
            be.to_device(np.ascontiguousarray(head.channel_class_ids, np.int32)),
            be.to_device(np.ascontiguousarray(head.thresholds, np.float32)),
            head.background_id,
            _ACTIVATIONS[head.activation],
            head.class_dtype,
        )


def postprocess_xp(be: Backend, logits: Any, taps: DeviceTaps, head: DeviceHead) -> tuple[Any, Any]:
    """Array postprocess of one frame's float32 logits ``(C, h, w)``: (class_map, conf8)."""
    xp = be.xp
    rows = (logits[:, taps.yi, :] * taps.yw[None, :, :, None]).sum(axis=2)  # (C, H, w)
    up = (rows[:, :, taps.xi] * taps.xw[None, None, :, :]).sum(axis=3)  # (C, H, W)
    best = up.argmax(axis=0)
    vmax = up.max(axis=0)
    if head.activation == 0:
        prob = 1.0 / xp.exp(up - vmax[None]).sum(axis=0)
    elif head.activation == 1:
        prob = 1.0 / (1.0 + xp.exp(-vmax))
    else:
        prob = vmax
    prob = prob.astype(xp.float32)
    cid = head.ids[best]
    below = prob < head.thresholds[cid]
    class_map = xp.where(below, head.background, cid).astype(head.class_dtype)
    conf8 = (xp.clip(prob, 0.0, 1.0) * xp.float32(255.0)).astype(xp.uint8)
    conf8[below] = 0
    return class_map, conf8


def postprocess_fused(
    be: Backend,
    logits: Any,
    taps: DeviceTaps,
    head: DeviceHead,
    class_map: Any,
    conf8: Any,
) -> None:
    """The fused kernel on one frame's float32 logits ``(C, h, w)``, into the given maps."""
    if be.kernels is None:
        raise ValueError("this backend has no compiled kernels")
    ctype = "unsigned char" if np.dtype(head.class_dtype) == np.uint8 else "unsigned short"
    kernel = kernels(be.kernels, ctype)["sp_postprocess"]
    channels, lh, lw = logits.shape
    height, width = class_map.shape
    i32 = np.int32
    kernel(
        grid_for(width, height),
        BLOCK,
        (
            logits, i32(channels), i32(lh), i32(lw),
            taps.yi, taps.yw, i32(taps.yi.shape[1]),
            taps.xi, taps.xw, i32(taps.xi.shape[1]),
            head.ids, head.thresholds, i32(head.background), i32(head.activation),
            i32(height), i32(width), class_map, conf8,
        ),
    )  # fmt: skip
