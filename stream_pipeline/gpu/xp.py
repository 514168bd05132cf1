"""The array module the device path is written against: CuPy on a GPU, numpy in CI.

:class:`Backend` holds what differs between the two — where arrays live, how they reach the
host, streams and events, pinned host memory, which compiled kernels to launch — so that the
preprocess, postprocess, statistics and overlay code is one text for both.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Backend", "backend", "cupy_available"]


def cupy_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        cupy: Any = importlib.import_module("cupy")
        return int(cupy.cuda.runtime.getDeviceCount()) > 0
    except Exception:  # ImportError, or CUDA driver errors that CuPy raises as its own types
        return False


@dataclass(frozen=True)
class Backend:
    """An array module and what goes with it.

    ``kernels`` is ``"cuda"`` (RawKernels), ``"host"`` (the same source compiled by the host C
    compiler, slow but exact: tests) or ``None`` (vectorised array code only).
    """

    name: str
    xp: Any
    kernels: str | None

    @property
    def on_device(self) -> bool:
        """True for CuPy: arrays live in GPU memory."""
        return self.name == "cupy"

    def to_device(self, host: npt.NDArray[Any]) -> Any:
        """A host array on the device (numpy: the array itself)."""
        return self.xp.asarray(host) if self.on_device else host

    def to_host(self, array: Any, out: npt.NDArray[Any] | None = None) -> npt.NDArray[Any]:
        """A device array on the host, into ``out`` (pinned on CUDA) when given."""
        if not self.on_device:
            if out is None:
                return np.asarray(array)
            np.copyto(out, array)
            return out
        if out is None:
            return np.asarray(array.get())
        array.get(out=out)
        return out

    def download(self, array: Any) -> npt.NDArray[Any]:
        """A new host copy of ``array``. On CUDA the copy is queued on the current stream into
        page-locked memory from CuPy's pinned pool (returned to it when the array is freed):
        synchronise the stream before reading it."""
        if not self.on_device:
            return np.array(array, copy=True)
        out = self.pinned(tuple(array.shape), array.dtype)
        array.get(out=out, blocking=False)
        return out

    def pinned(self, shape: tuple[int, ...], dtype: Any) -> npt.NDArray[Any]:
        """A host array in page-locked memory on CUDA (plain memory on numpy)."""
        if not self.on_device:
            return np.empty(shape, dtype)
        count = int(np.prod(shape)) * np.dtype(dtype).itemsize
        mem = self.xp.cuda.alloc_pinned_memory(max(count, 1))
        return np.frombuffer(mem, dtype, int(np.prod(shape))).reshape(shape)

    def stream(self) -> Any:
        """A new non-blocking CUDA stream (numpy: None)."""
        return self.xp.cuda.Stream(non_blocking=True) if self.on_device else None

    @contextlib.contextmanager
    def on(self, stream: Any) -> Iterator[None]:
        """Make ``stream`` current for the block (numpy: nothing)."""
        if stream is None:
            yield
            return
        with stream:
            yield

    def record(self, stream: Any) -> Any:
        """An event recorded on ``stream`` (numpy: None)."""
        return stream.record() if stream is not None else None

    def wait(self, stream: Any, event: Any) -> None:
        """Make ``stream`` wait for ``event`` without blocking the host."""
        if stream is not None and event is not None:
            stream.wait_event(event)

    def synchronize(self, stream: Any) -> None:
        """Block the host until ``stream``'s work is done."""
        if stream is not None:
            stream.synchronize()


def backend(name: str, kernels: str | None = None) -> Backend:
    """``"numpy"`` (host) or ``"cupy"`` (CUDA; kernels default to ``"cuda"``)."""
    if name == "numpy":
        return Backend("numpy", np, kernels)
    if name == "cupy":
        return Backend("cupy", importlib.import_module("cupy"), kernels or "cuda")
    raise ValueError(f"array backend must be 'numpy' or 'cupy', got {name!r}")
