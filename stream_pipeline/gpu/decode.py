"""Decoded frames as :class:`~stream_pipeline.gpu.preprocess.Planes`: NVDEC on the device, or a
CPU decode's NV12.

- NVDEC: PyAV's CUDA hwaccel with ``is_hw_owned=True`` leaves frames on the GPU
  (``frame.format.name == "cuda"``) and exports each plane by DLPack. PyAV's ``__dlpack__``
  refuses the ``stream`` argument that ``cupy.from_dlpack`` passes, so the plane is wrapped in an
  object that drops it — after a synchronise, since without a stream nothing orders the decoder's
  writes before our reads.
- CPU decode: ``to_ndarray(format="nv12")`` of a software frame gives the same planes on the host;
  on CuPy they are uploaded once (uint8) through a page-locked buffer.

Either way the preprocess kernel converts NV12 itself: no RGB frame is made for the network.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from stream_pipeline.gpu.preprocess import ColorSpec, Planes
from stream_pipeline.gpu.xp import Backend

__all__ = ["open_nvdec", "planes_of_av_frame"]


class _NoStreamPlane:
    """A DLPack producer that ignores the consumer's ``stream`` (PyAV's refuses it)."""

    def __init__(self, plane: Any) -> None:
        self._plane = plane

    def __dlpack__(self, stream: Any = None, **kwargs: Any) -> Any:
        return self._plane.__dlpack__()

    def __dlpack_device__(self) -> Any:
        return self._plane.__dlpack_device__()


def _as_2d(array: Any, rows: int) -> Any:
    # The UV plane may come as (H/2, W/2, 2): the kernel reads it as rows of interleaved bytes.
    return array if array.ndim == 2 else array.reshape(rows, -1)


def planes_of_av_frame(frame: Any, be: Backend) -> Planes:
    """``frame``'s NV12 planes on ``be`` (no copy for NVDEC frames; one upload otherwise)."""
    color = ColorSpec.of_av_frame(frame)
    width, height = int(frame.width), int(frame.height)
    if frame.format.name == "cuda":
        xp = be.xp
        xp.cuda.runtime.deviceSynchronize()  # the decoder's writes, before a stream-less import
        y = xp.from_dlpack(_NoStreamPlane(frame.planes[0]))
        uv = xp.from_dlpack(_NoStreamPlane(frame.planes[1]))
        uv2 = _as_2d(uv, height // 2)
        return Planes(_as_2d(y, height), width, height, uv2, color, owner=frame)
    nv12 = frame.to_ndarray(format="nv12")
    owner = None
    if be.on_device:
        # The upload is asynchronous on the current stream: the page-locked source stays alive
        # with the planes, so the pool cannot hand it out again mid-copy.
        owner = be.pinned(nv12.shape, np.uint8)
        np.copyto(owner, nv12)
        nv12 = be.xp.asarray(owner)
    return Planes(nv12[:height], width, height, nv12[height:], color, owner=owner)


def open_nvdec(url: str, device: int = 0, **options: Any) -> Iterator[Any]:
    """Decode ``url`` with NVDEC, frames left on the GPU (software fallback where it cannot)."""
    import av
    from av.codec.hwaccel import HWAccel

    accel = HWAccel("cuda", device=str(device), allow_software_fallback=True, is_hw_owned=True)
    with av.open(url, hwaccel=accel, **options) as container:
        yield from container.decode(video=0)
