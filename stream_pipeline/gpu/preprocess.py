"""Frames → the network input on the array: NV12 (or packed RGB) → resized, padded, normalised NCHW.

The meaning is the CPU path's (:mod:`stream_pipeline.model.preprocess`): OpenCV's ``INTER_LINEAR``
resize of the RGB frame to the content box, letterbox padding with ``padding_value``, then
``x · a + b`` per channel in the network's channel order. For NV12 the RGB pixels are made on the
fly as libswscale makes them for PyAV's ``to_ndarray("rgb24")`` (nearest chroma, truncation, the
stream's matrix and range), so a GPU frame never exists as RGB.

:class:`ResizeTables` are OpenCV's own fixed-point tables (11-bit weights), built on the host once
per geometry. :func:`preprocess_xp` is array code; :func:`preprocess_fused` launches the kernel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_pipeline.gpu.kernels import BLOCK, grid_for, kernels
from stream_pipeline.gpu.xp import Backend
from stream_pipeline.model.geometry import Geometry
from stream_pipeline.model.package import InputSpec

__all__ = [
    "ColorSpec",
    "Planes",
    "ResizeTables",
    "linear_tables",
    "normalisation",
    "nv12_to_rgb_xp",
    "preprocess_fused",
    "preprocess_xp",
]

_COEF_BITS = 11  # OpenCV's INTER_RESIZE_COEF_BITS
_KR_KB = {"bt601": (0.299, 0.114), "bt709": (0.2126, 0.0722)}


@dataclass(frozen=True, slots=True)
class ColorSpec:
    """A stream's YUV matrix and range: ``bt601`` or ``bt709``, limited (TV) or full range."""

    matrix: str = "bt601"
    full_range: bool = False

    @classmethod
    def of_av_frame(cls, frame: Any) -> ColorSpec:
        """The spec PyAV's own conversion of ``frame`` uses (unspecified: BT.601, limited)."""
        # AVColorSpace: 1 = BT.709; AVColorRange: 2 = JPEG (full). libswscale's default for
        # everything else is BT.601 limited, and PyAV passes the frame's values through.
        matrix = "bt709" if int(getattr(frame, "colorspace", 2) or 2) == 1 else "bt601"
        return cls(matrix, int(getattr(frame, "color_range", 0) or 0) == 2)

    def coefficients(self) -> npt.NDArray[np.float32]:
        """Y offset, Y scale, R←V, G←U, G←V, B←U (float32, as the kernel reads them)."""
        kr, kb = _KR_KB[self.matrix]
        kg = 1.0 - kr - kb
        y_off, y_scale, c_scale = (
            (0.0, 1.0, 1.0) if self.full_range else (16.0, 255 / 219, 255 / 224)
        )
        return np.array(
            [
                y_off,
                y_scale,
                2 * (1 - kr) * c_scale,
                2 * (1 - kb) * kb / kg * c_scale,
                2 * (1 - kr) * kr / kg * c_scale,
                2 * (1 - kb) * c_scale,
            ],
            np.float32,
        )


@dataclass(frozen=True, slots=True)
class Planes:
    """One frame's pixels on the array: NV12 (``uv`` set, ``color`` its spec) or packed RGB.

    ``y`` is ``(H, pitch)`` uint8 (NV12 luma) or ``(H, W, 3)`` uint8 (RGB); ``uv`` is
    ``(H/2, pitch)`` uint8 with U, V interleaved. Pitches may exceed the width (NVDEC pads rows).
    """

    y: Any
    width: int
    height: int
    uv: Any = None
    color: ColorSpec = ColorSpec()
    owner: Any = None  # what the planes' memory belongs to (a decoder's frame), kept alive here

    @property
    def nv12(self) -> bool:
        """True for NV12 planes, False for packed RGB."""
        return self.uv is not None


def linear_tables(src: int, dst: int) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int32]]:
    """OpenCV ``INTER_LINEAR``'s offsets and 11-bit weights along one axis, ``(dst, 2)`` each."""
    scale = 1.0 / (dst / src)  # as OpenCV: the inverse of its inv_scale, in double
    f = ((np.arange(dst) + 0.5) * scale - 0.5).astype(np.float32)  # then a float fraction
    s = np.floor(f).astype(np.int64)
    f = (f - s).astype(np.float32)
    low = s < 0
    f[low], s[low] = 0, 0
    high = s >= src - 1
    f[high], s[high] = 0, src - 1
    one = np.float32(1 << _COEF_BITS)
    weights = np.stack([np.rint((np.float32(1) - f) * one), np.rint(f * one)], axis=1)
    offsets = np.stack([s, np.minimum(s + 1, src - 1)], axis=1)
    return offsets.astype(np.int32), weights.astype(np.int32)


@dataclass(frozen=True, slots=True)
class ResizeTables:
    """One (frame size, geometry)'s resize tables and normalisation on the device."""

    geo: Geometry
    xofs: Any
    xalpha: Any
    yofs: Any
    ybeta: Any
    ab: Any  # (6,) float32: a per channel, then b per channel

    @classmethod
    def build(cls, be: Backend, geo: Geometry, spec: InputSpec) -> ResizeTables:
        """Tables for frames of ``geo``'s size under ``spec`` (uploaded once per geometry)."""
        xofs, xalpha = linear_tables(geo.frame_width, geo.content_width)
        yofs, ybeta = linear_tables(geo.frame_height, geo.content_height)
        a, b = normalisation(spec)
        up = be.to_device
        return cls(geo, up(xofs), up(xalpha), up(yofs), up(ybeta), up(np.concatenate([a, b])))


def normalisation(spec: InputSpec) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """``(a, b)`` with ``(x / scale - mean) / std == x · a + b``, as the CPU preprocessor has."""
    std = np.asarray(spec.std, dtype=np.float32)
    a = (1.0 / (spec.scale * std)).astype(np.float32)
    b = (-np.asarray(spec.mean, dtype=np.float32) / std).astype(np.float32)
    return a, b


@functools.lru_cache(maxsize=16)
def _coefficients(be: Backend, color: ColorSpec) -> Any:
    # Uploaded once per (backend, colour spec), not once per frame.
    return be.to_device(color.coefficients())


def _rgb_at(be: Backend, planes: Planes, rows: Any, cols: Any) -> Any:
    """RGB int32 ``(len(rows), len(cols), 3)`` of the frame at the given pixel indices."""
    xp = be.xp
    if not planes.nv12:
        return planes.y[rows[:, None], cols[None, :]].astype(xp.int32)
    coef = _coefficients(be, planes.color)
    luma = planes.y[rows[:, None], cols[None, :]].astype(xp.float32)
    y = (luma - coef[0]) * coef[1]
    uv_rows = (rows // 2)[:, None]
    u = planes.uv[uv_rows, (cols // 2 * 2)[None, :]].astype(xp.float32) - xp.float32(128)
    v = planes.uv[uv_rows, (cols // 2 * 2 + 1)[None, :]].astype(xp.float32) - xp.float32(128)
    # Each product and sum rounded in float32 in the kernel's order.
    rgb = xp.stack([y + coef[2] * v, (y - coef[3] * u) - coef[4] * v, y + coef[5] * u], axis=-1)
    return xp.clip(xp.floor(rgb), 0, 255).astype(xp.int32)


def nv12_to_rgb_xp(be: Backend, planes: Planes) -> Any:
    """The whole frame as H×W×3 uint8 RGB on the array (for consumers that need the pixels)."""
    if not planes.nv12:
        return planes.y
    xp = be.xp
    rows, cols = xp.arange(planes.height), xp.arange(planes.width)
    return _rgb_at(be, planes, rows, cols).astype(xp.uint8)


def preprocess_xp(
    be: Backend, planes: Planes, tables: ResizeTables, spec: InputSpec, out: Any
) -> None:
    """Array preprocess of one frame into ``out`` ``(3, H, W)`` float32."""
    xp = be.xp
    geo = tables.geo
    xofs, xa, yofs, yb = tables.xofs, tables.xalpha, tables.yofs, tables.ybeta
    a0, a1 = xa[None, :, 0, None], xa[None, :, 1, None]
    rows = []
    for k in (0, 1):  # the two source rows of each output row, horizontally combined
        left = _rgb_at(be, planes, yofs[:, k], xofs[:, 0])
        right = _rgb_at(be, planes, yofs[:, k], xofs[:, 1])
        rows.append(left * a0 + right * a1)
    h0, h1 = rows
    b0, b1 = yb[:, 0, None, None], yb[:, 1, None, None]
    mixed = ((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2
    alone = (h0 * b0 + (1 << 21)) >> 22
    content = xp.clip(xp.where(b1 == 0, alone, mixed), 0, 255)
    canvas = xp.full((geo.input_height, geo.input_width, 3), spec.padding_value, xp.int32)
    canvas[
        geo.content_y : geo.content_y + geo.content_height,
        geo.content_x : geo.content_x + geo.content_width,
    ] = content
    chw = canvas.transpose(2, 0, 1)
    if spec.color == "bgr":
        chw = chw[::-1]
    ab = tables.ab
    out[...] = chw.astype(xp.float32) * ab[:3, None, None] + ab[3:, None, None]


def preprocess_fused(
    be: Backend, planes: Planes, tables: ResizeTables, spec: InputSpec, out: Any
) -> None:
    """The fused kernel on one frame into ``out`` ``(3, H, W)`` float32 (C-contiguous)."""
    if be.kernels is None:
        raise ValueError("this backend has no compiled kernels")
    kernel = kernels(be.kernels)["sp_preprocess"]
    geo = tables.geo
    i32 = np.int32
    y = planes.y
    uv = planes.uv if planes.nv12 else y
    coef = _coefficients(be, planes.color)
    kernel(
        grid_for(geo.input_width, geo.input_height),
        BLOCK,
        (
            y, i32(y.strides[0]), uv, i32(uv.strides[0]), i32(1 if planes.nv12 else 0), coef,
            tables.xofs, tables.xalpha, tables.yofs, tables.ybeta,
            i32(geo.content_x), i32(geo.content_y), i32(geo.content_width),
            i32(geo.content_height), i32(geo.input_width), i32(geo.input_height),
            i32(spec.padding_value), tables.ab, i32(1 if spec.color == "bgr" else 0), out,
        ),
    )  # fmt: skip
