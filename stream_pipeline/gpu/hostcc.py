"""Run a kernel's CUDA C source on the CPU: built by the system C compiler, called by ctypes.

The kernels in :mod:`stream_pipeline.gpu.kernels` are written in the subset of CUDA C that is
also C11: per-thread code indexed by ``blockIdx``/``blockDim``/``threadIdx``, no shared memory, no
``__syncthreads``, no atomics. A short prelude defines those names for the host, and a launcher
generated from each ``__global__`` signature loops over the grid and the block — so CI runs the
very text that NVRTC compiles on a GPU and compares it with the array path.

Libraries are cached under the temp directory, keyed by a hash of source, prelude, defines and
compiler flags: a session compiles each kernel once.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["HostKernel", "compile_host", "host_compiler"]

_PRELUDE = r"""
#include <math.h>
#include <stdint.h>
typedef struct { unsigned int x, y, z; } sp_dim3;
/* thread-local: two worker threads may launch kernels of one library at once */
static _Thread_local sp_dim3 blockIdx, threadIdx, blockDim, gridDim;
#define __global__
#define __device__ static inline
#define __forceinline__
#define __restrict__ restrict
#define SP_EXTERN
"""

# Only these parameter types appear in the kernels; each maps to its ctypes type.
_CTYPES: dict[str, Any] = {
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "float": ctypes.c_float,
}

_SIGNATURE = re.compile(r"SP_EXTERN\s+__global__\s+void\s+(\w+)\s*\(([^)]*)\)", re.S)
_LOCK = threading.Lock()


def host_compiler() -> str | None:
    """The system C compiler (``$CC``, ``cc`` or ``gcc``), or None when there is none."""
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and shutil.which(name):
            return name
    return None


@dataclass(frozen=True, slots=True)
class _Param:
    name: str
    pointer: bool
    ctype: Any


def _params(text: str) -> list[_Param]:
    out = []
    for raw in text.split(","):
        decl = " ".join(raw.replace("__restrict__", " ").replace("const", " ").split())
        pointer = "*" in decl
        words = decl.replace("*", " ").split()
        name, ctype_words = words[-1], " ".join(words[:-1])
        ctype = ctypes.c_void_p if pointer else _CTYPES[ctype_words]
        out.append(_Param(name, pointer, ctype))
    return out


def _launcher(name: str, params: list[_Param], text: str) -> str:
    # Row-major over blocks and threads, x fastest: per-pixel kernels have no order dependence.
    return (
        f"void {name}_launch(unsigned int gx, unsigned int gy, unsigned int bx, unsigned int by, "
        f"{text}) {{\n"
        "  gridDim.x = gx; gridDim.y = gy; gridDim.z = 1;\n"
        "  blockDim.x = bx; blockDim.y = by; blockDim.z = 1;\n"
        "  blockIdx.z = 0; threadIdx.z = 0;\n"
        "  for (unsigned int b1 = 0; b1 < gy; ++b1) for (unsigned int b0 = 0; b0 < gx; ++b0)\n"
        "  for (unsigned int t1 = 0; t1 < by; ++t1) for (unsigned int t0 = 0; t0 < bx; ++t0) {\n"
        "    blockIdx.x = b0; blockIdx.y = b1; threadIdx.x = t0; threadIdx.y = t1;\n"
        f"    {name}({', '.join(p.name for p in params)});\n"
        "  }\n}\n"
    )


def _row_pitched(arg: Any) -> bool:
    """C-contiguous, or rows that are with a pitch between them (a decoder's padded planes):
    the kernels take the pitch as an argument."""
    if not isinstance(arg, np.ndarray):
        return False
    if arg.flags.c_contiguous:
        return True
    return arg.ndim >= 2 and arg[0].flags.c_contiguous and arg.strides[0] >= arg[0].nbytes


class HostKernel:
    """One kernel of a host-compiled source, launched like a CuPy ``RawKernel``."""

    def __init__(self, fn: Any, params: list[_Param]) -> None:
        self._fn = fn
        self._params = params
        fn.argtypes = [ctypes.c_uint] * 4 + [p.ctype for p in params]
        fn.restype = None

    def __call__(self, grid: tuple[int, int], block: tuple[int, int], args: Sequence[Any]) -> None:
        """Run the kernel over ``grid`` × ``block`` on numpy arrays and scalars."""
        if len(args) != len(self._params):
            raise TypeError(f"kernel takes {len(self._params)} arguments, got {len(args)}")
        values: list[Any] = []
        for param, arg in zip(self._params, args, strict=True):
            if param.pointer:
                if not _row_pitched(arg):
                    raise TypeError(f"{param.name}: expected a numpy array with C-contiguous rows")
                values.append(arg.ctypes.data)
            else:
                values.append(float(arg) if param.ctype is ctypes.c_float else int(arg))
        self._fn(grid[0], grid[1], block[0], block[1], *values)


def compile_host(
    source: str, defines: Sequence[str] = (), cache_dir: Path | None = None
) -> dict[str, HostKernel]:
    """Compile CUDA C ``source`` for the host; returns its ``__global__`` kernels by name."""
    cc = host_compiler()
    if cc is None:
        raise RuntimeError("no C compiler (cc or gcc) to build the host kernels")
    sigs = _SIGNATURE.findall(source)
    if not sigs:
        raise ValueError("no 'SP_EXTERN __global__ void name(...)' kernel in the source")
    body = _PRELUDE + source + "".join(_launcher(n, _params(t), t) for n, t in sigs)
    # -ffp-contract=off: no FMA on the host, so its rounding is the plain IEEE one.
    flags = ["-O2", "-std=gnu11", "-shared", "-fPIC", "-ffp-contract=off", "-lm"]
    flags += [f"-D{d}" for d in defines]
    key = hashlib.sha256("\0".join([body, cc, *flags]).encode()).hexdigest()[:20]
    root = cache_dir or Path(tempfile.gettempdir()) / f"stream_pipeline-hostcc-{os.getuid()}"
    lib = root / f"k{key}.so"
    with _LOCK:
        if not lib.exists():
            root.mkdir(parents=True, exist_ok=True)
            src = root / f"k{key}.{os.getpid()}.c"
            src.write_text(body, encoding="utf-8")
            tmp = root / f"k{key}.{os.getpid()}.so"
            cmd = [cc, "-x", "c", str(src), "-o", str(tmp), *flags]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            src.unlink(missing_ok=True)
            if done.returncode != 0:
                raise RuntimeError(f"host kernel build failed:\n{done.stderr[-4000:]}")
            os.replace(tmp, lib)  # atomic: parallel test workers never load a half-written file
    handle = ctypes.CDLL(str(lib))
    return {n: HostKernel(getattr(handle, f"{n}_launch"), _params(t)) for n, t in sigs}
