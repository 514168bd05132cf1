"""Decoded YUV frames to RGB straight into a caller's buffer, with PyAV's own libswscale.

PyAV's ``VideoFrame.to_ndarray(format="rgb24")`` always converts into a frame it allocates; it has
no call that writes into an existing buffer. A decoder child wants the RGB pixels in a
shared-memory slot, so :func:`rgb24_into` calls the libswscale bundled with PyAV (through ctypes,
which releases the GIL for the call) with what ``to_ndarray`` gives swscale: the same size in and
out, ``SWS_BILINEAR``, the frame's colour matrix (``sws_getCoefficients(frame.colorspace)``) and
its range (full for ``color_range`` JPEG or a ``yuvj*`` format), RGB out at full range. The result
is bit-identical to ``to_ndarray`` (``tests/sources/test_convert.py`` checks it on real decodes).

Formats this does not take (see :data:`DIRECT_FORMATS`: alpha, 16-bit grey, hardware frames)
return False: the caller converts as before.
"""

from __future__ import annotations

import ctypes
import threading
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt

__all__ = ["DIRECT_FORMATS", "available", "rgb24_into"]

# What decoders give for ordinary video (8- and 10-bit planar YUV from software H.264/HEVC/VP9/
# AV1, semi-planar NV12/NV21, grey, MJPEG's full-range yuvj*, FFV1's bgr0), each checked
# bit-identical to to_ndarray (tests/sources/test_convert.py). Others (gray16le differs, alpha
# formats, hardware frames) take to_ndarray and one copy.
DIRECT_FORMATS = frozenset(
    {
        *("yuv420p", "yuvj420p", "yuv422p", "yuvj422p", "yuv444p", "yuvj444p"),
        *("yuv440p", "yuvj440p", "yuv411p", "yuv410p", "nv12", "nv21", "gray", "bgr0"),
        *("yuv420p10le", "yuv422p10le", "yuv444p10le"),
    }
)
_FULL_RANGE_FORMATS = frozenset({"yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p"})
_SWS_BILINEAR = 2  # PyAV's reformat default interpolation
_SWS_CS_DEFAULT = 5
_AVCOL_RANGE_JPEG = 2


def _load(stem: str) -> ctypes.CDLL:
    """The copy of ``stem`` in PyAV's wheel (``av.libs``): the one PyAV's own calls use."""
    libs = Path(av.__file__).resolve().parent.parent / "av.libs"
    found = sorted(libs.glob(f"{stem}-*.so*")) if libs.is_dir() else []
    if not found:
        raise OSError(f"no {stem} in {libs}")
    return ctypes.CDLL(str(found[0]))


class _Swscale:
    def __init__(self) -> None:
        avutil = _load("libavutil")  # libswscale links against it: load PyAV's copy first
        sws = _load("libswscale")
        avutil.av_get_pix_fmt.argtypes = [ctypes.c_char_p]
        avutil.av_get_pix_fmt.restype = ctypes.c_int
        self.pix_fmt = avutil.av_get_pix_fmt
        sws.sws_getCachedContext.argtypes = [ctypes.c_void_p, *[ctypes.c_int] * 7]
        sws.sws_getCachedContext.argtypes += [ctypes.c_void_p] * 3
        sws.sws_getCachedContext.restype = ctypes.c_void_p
        sws.sws_getCoefficients.argtypes = [ctypes.c_int]
        sws.sws_getCoefficients.restype = ctypes.c_void_p
        sws.sws_setColorspaceDetails.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        sws.sws_setColorspaceDetails.argtypes += [ctypes.c_void_p, *[ctypes.c_int] * 4]
        sws.sws_setColorspaceDetails.restype = ctypes.c_int
        pointers = ctypes.POINTER(ctypes.c_void_p)
        ints = ctypes.POINTER(ctypes.c_int)
        sws.sws_scale.argtypes = [ctypes.c_void_p, pointers, ints, ctypes.c_int, ctypes.c_int]
        sws.sws_scale.argtypes += [pointers, ints]
        sws.sws_scale.restype = ctypes.c_int
        self.sws = sws
        self.rgb24 = self.pix_fmt(b"rgb24")
        self.formats = {name: self.pix_fmt(name.encode()) for name in DIRECT_FORMATS}


class _Context(threading.local):
    """One swscale context per thread (a context is not shared between concurrent calls)."""

    ptr: int | None = None
    key: tuple[int, ...] | None = None


_lib: _Swscale | None = None
_lib_error: str | None = None
_ctx = _Context()


def available() -> bool:
    """True when PyAV's libswscale could be bound (else every call falls back)."""
    global _lib, _lib_error
    if _lib is None and _lib_error is None:
        try:
            _lib = _Swscale()
        except (OSError, AttributeError) as exc:
            _lib_error = str(exc)
    return _lib is not None


def rgb24_into(frame: Any, out: npt.NDArray[np.uint8]) -> bool:
    """Convert ``frame`` (a PyAV VideoFrame) to RGB into ``out`` (C-contiguous H×W×3 uint8).

    Returns False, with ``out`` untouched, when the frame's format is not one this converts
    directly (the caller then uses ``to_ndarray``).
    """
    name = frame.format.name
    if name not in DIRECT_FORMATS or not available():
        return False
    lib = _lib
    assert lib is not None
    width, height = frame.width, frame.height
    if out.shape != (height, width, 3) or not out.flags.c_contiguous:
        raise ValueError(f"rgb24_into: out must be C-contiguous {(height, width, 3)}")
    src_fmt = lib.formats[name]
    full = name in _FULL_RANGE_FORMATS or int(frame.color_range) == _AVCOL_RANGE_JPEG
    colorspace = int(frame.colorspace)
    key = (width, height, src_fmt, colorspace, int(full))
    sws = lib.sws
    if _ctx.key != key:
        ptr = sws.sws_getCachedContext(
            _ctx.ptr,
            width,
            height,
            src_fmt,
            width,
            height,
            lib.rgb24,
            _SWS_BILINEAR,
            None,
            None,
            None,
        )
        if not ptr:
            return False
        sws.sws_setColorspaceDetails(
            ptr,
            sws.sws_getCoefficients(colorspace),
            int(full),
            sws.sws_getCoefficients(_SWS_CS_DEFAULT),
            1,
            0,
            1 << 16,
            1 << 16,
        )
        _ctx.ptr, _ctx.key = ptr, key
    planes = frame.planes
    src = (ctypes.c_void_p * 4)()
    src_stride = (ctypes.c_int * 4)()
    for i, plane in enumerate(planes[:3]):
        src[i] = ctypes.addressof(ctypes.c_char.from_buffer(plane))
        src_stride[i] = plane.line_size
    dst = (ctypes.c_void_p * 4)(out.ctypes.data)
    dst_stride = (ctypes.c_int * 4)(width * 3)
    rows = sws.sws_scale(_ctx.ptr, src, src_stride, 0, height, dst, dst_stride)
    return bool(rows == height)
