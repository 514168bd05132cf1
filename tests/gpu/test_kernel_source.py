"""The kernels' source is also valid C++14 as NVRTC reads it (``extern "C"``, CUDA's names),
checked with the host C++ compiler where there is one — a CUDA build error caught without a GPU."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from stream_pipeline.gpu.kernels import POSTPROCESS_SOURCE, PREPROCESS_SOURCE

# What NVRTC provides that a host compiler does not; __expf comes from glibc's math.h here.
_CUDA_LIKE = r"""
#include <math.h>
struct sp_dim3 { unsigned int x, y, z; };
static sp_dim3 blockIdx, threadIdx, blockDim;
#define __global__
#define __device__ static inline
#define SP_EXTERN extern "C"
#define SP_NEG_INF (-INFINITY)
#define SP_EXP __expf
"""


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs a host C++ compiler (g++)")
@pytest.mark.parametrize(
    "source,defines",
    [
        (POSTPROCESS_SOURCE, "#define CLASS_T unsigned char\n"),
        (POSTPROCESS_SOURCE, "#define CLASS_T unsigned short\n"),
        (PREPROCESS_SOURCE, ""),
    ],
    ids=["postprocess-u8", "postprocess-u16", "preprocess"],
)
def test_kernel_source_is_valid_cuda_cpp(tmp_path: Path, source: str, defines: str) -> None:
    src = tmp_path / "kernel.cpp"
    src.write_text(_CUDA_LIKE + defines + source, encoding="utf-8")
    done = subprocess.run(
        ["g++", "-std=c++14", "-fsyntax-only", "-Wall", "-Werror", str(src)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
