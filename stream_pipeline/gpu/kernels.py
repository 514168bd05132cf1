"""The fused per-pixel kernels, as CUDA C source, and where they are compiled.

One source text serves both targets: on a GPU, CuPy's ``RawKernel`` (NVRTC); in CI, the host C
compiler through :mod:`stream_pipeline.gpu.hostcc`. Both launchers take
``kernel(grid, block, args)``. The text is therefore the common subset of CUDA C and C11 (no
shared memory, no intrinsics); the numbers it computes are compared with the array path in CI.

- ``sp_postprocess``: one frame's logits ``(C, h, w)`` → class map and ``uint8(conf × 255)``.
  Per pixel: bilinear (or antialiased) sample of every channel through the separable taps of
  :func:`stream_pipeline.model.geometry.logit_taps` (letterbox pads already cropped there), an
  online softmax (running max and rescaled sum: one pass, one exp per channel), argmax, the
  class's threshold, background and 0 below it. Nothing of size C×H×W is ever written.
- ``sp_preprocess``: one frame, NV12 planes or packed RGB → the network input ``(3, H, W)``
  float32: colour conversion as libswscale does it (nearest chroma, truncation), OpenCV's
  fixed-point ``INTER_LINEAR`` resize to the content box, letterbox padding, ``x · a + b``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from stream_pipeline.gpu.hostcc import compile_host

__all__ = ["BLOCK", "POSTPROCESS_SOURCE", "PREPROCESS_SOURCE", "grid_for", "kernels"]

POSTPROCESS_SOURCE = r"""
SP_EXTERN __global__ void sp_postprocess(
    const float* __restrict__ logits, int channels, int lh, int lw,
    const int* __restrict__ yi, const float* __restrict__ yw, int ytaps,
    const int* __restrict__ xi, const float* __restrict__ xw, int xtaps,
    const int* __restrict__ ids, const float* __restrict__ thresholds,
    int background, int activation, int height, int width,
    CLASS_T* __restrict__ class_map, unsigned char* __restrict__ conf8)
{
    int c = blockIdx.x * blockDim.x + threadIdx.x;
    int r = blockIdx.y * blockDim.y + threadIdx.y;
    if (c >= width || r >= height) return;
    const int* ry = yi + r * ytaps;
    const float* wy = yw + r * ytaps;
    const int* cx = xi + c * xtaps;
    const float* wx = xw + c * xtaps;
    float vmax = SP_NEG_INF;
    float total = 0.0f;
    int best = 0;
    for (int k = 0; k < channels; ++k) {
        const float* plane = logits + (long)k * lh * lw;
        float v = 0.0f;
        for (int qy = 0; qy < ytaps; ++qy) {
            const float* row = plane + (long)ry[qy] * lw;
            float h = 0.0f;
            for (int qx = 0; qx < xtaps; ++qx) h += row[cx[qx]] * wx[qx];
            v += h * wy[qy];
        }
        /* Strict '>': ties go to the first channel as argmax does; NaN never wins. */
        if (v > vmax) {
            /* Online softmax: rescale the running sum to the new maximum. The guard keeps the
               exponent finite for the first channel and for NaN. */
            float d = vmax - v;
            total = (d > -87.0f ? total * SP_EXP(d) : 0.0f) + 1.0f;
            vmax = v;
            best = k;
        } else {
            float d = v - vmax;
            total += d > -87.0f ? SP_EXP(d) : 0.0f;
        }
    }
    float prob;
    if (activation == 0) prob = 1.0f / total;
    else if (activation == 1) prob = 1.0f / (1.0f + SP_EXP(-vmax));
    else prob = vmax;
    int cid = ids[best];
    long at = (long)r * width + c;
    if (prob < thresholds[cid]) {
        class_map[at] = (CLASS_T)background;
        conf8[at] = 0;
    } else {
        float p = prob < 0.0f ? 0.0f : (prob > 1.0f ? 1.0f : prob);
        class_map[at] = (CLASS_T)cid;
        conf8[at] = (unsigned char)(p * 255.0f); /* truncated, as Roboflow serialises */
    }
}
"""

PREPROCESS_SOURCE = r"""
/* One source pixel as RGB. kind 1: NV12 (Y plane, interleaved UV plane at half resolution);
   kind 0: packed RGB in plane0. coef: Y offset, Y scale, R<-V, G<-U, G<-V, B<-U. */
__device__ void sp_fetch(const unsigned char* p0, int pitch0, const unsigned char* p1, int pitch1,
                         int kind, const float* coef, int sx, int sy, int* rgb)
{
    if (kind == 0) {
        const unsigned char* px = p0 + (long)sy * pitch0 + sx * 3;
        rgb[0] = px[0]; rgb[1] = px[1]; rgb[2] = px[2];
        return;
    }
    float y = ((float)p0[(long)sy * pitch0 + sx] - coef[0]) * coef[1];
    const unsigned char* uv = p1 + (long)(sy >> 1) * pitch1 + (sx >> 1) * 2;
    float u = (float)uv[0] - 128.0f;
    float v = (float)uv[1] - 128.0f;
    float ch[3];
    ch[0] = y + coef[2] * v;
    ch[1] = y - coef[3] * u - coef[4] * v;
    ch[2] = y + coef[5] * u;
    for (int i = 0; i < 3; ++i) {
        float t = floorf(ch[i]);
        rgb[i] = t < 0.0f ? 0 : (t > 255.0f ? 255 : (int)t);
    }
}

SP_EXTERN __global__ void sp_preprocess(
    const unsigned char* __restrict__ plane0, int pitch0,
    const unsigned char* __restrict__ plane1, int pitch1, int kind,
    const float* __restrict__ coef,
    const int* __restrict__ xofs, const int* __restrict__ xalpha,
    const int* __restrict__ yofs, const int* __restrict__ ybeta,
    int content_x, int content_y, int content_w, int content_h,
    int in_w, int in_h, int pad, const float* __restrict__ ab, int bgr,
    float* __restrict__ out)
{
    int x = blockIdx.x * blockDim.x + threadIdx.x;
    int y = blockIdx.y * blockDim.y + threadIdx.y;
    if (x >= in_w || y >= in_h) return;
    int px[3];
    int dx = x - content_x, dy = y - content_y;
    if (dx < 0 || dy < 0 || dx >= content_w || dy >= content_h) {
        px[0] = px[1] = px[2] = pad;
    } else {
        int sx0 = xofs[2 * dx], sx1 = xofs[2 * dx + 1];
        int a0 = xalpha[2 * dx], a1 = xalpha[2 * dx + 1];
        int sy0 = yofs[2 * dy], sy1 = yofs[2 * dy + 1];
        int b0 = ybeta[2 * dy], b1 = ybeta[2 * dy + 1];
        int p00[3], p01[3], p10[3], p11[3];
        sp_fetch(plane0, pitch0, plane1, pitch1, kind, coef, sx0, sy0, p00);
        sp_fetch(plane0, pitch0, plane1, pitch1, kind, coef, sx1, sy0, p01);
        sp_fetch(plane0, pitch0, plane1, pitch1, kind, coef, sx0, sy1, p10);
        sp_fetch(plane0, pitch0, plane1, pitch1, kind, coef, sx1, sy1, p11);
        for (int i = 0; i < 3; ++i) {
            int h0 = p00[i] * a0 + p01[i] * a1;
            int h1 = p10[i] * a0 + p11[i] * a1;
            int v;
            /* OpenCV's vertical pass: its SIMD rounding where two rows mix, the scalar one
               where a row is used alone (the clamped edges). */
            if (b1 == 0) v = (h0 * b0 + (1 << 21)) >> 22;
            else v = ((((h0 >> 4) * b0) >> 16) + (((h1 >> 4) * b1) >> 16) + 2) >> 2;
            px[i] = v < 0 ? 0 : (v > 255 ? 255 : v);
        }
    }
    long plane = (long)in_w * in_h;
    long at = (long)y * in_w + x;
    for (int i = 0; i < 3; ++i) {
        int src = bgr ? 2 - i : i;
        /* Two roundings, as the host path's multiply then add. */
        float scaled = (float)px[src] * ab[i];
        out[i * plane + at] = scaled + ab[3 + i];
    }
}
"""

_CUDA_PRELUDE = '#define SP_EXTERN extern "C"\n#define SP_NEG_INF (-__int_as_float(0x7f800000))\n'

BLOCK = (32, 8)


def grid_for(width: int, height: int) -> tuple[int, int]:
    """The grid that covers ``width`` × ``height`` with :data:`BLOCK`."""
    return (-(-width // BLOCK[0]), -(-height // BLOCK[1]))


@functools.cache
def kernels(target: str, class_type: str = "unsigned char") -> dict[str, Any]:
    """``{"sp_postprocess", "sp_preprocess"}`` launchers for ``target`` ("cuda" or "host")."""
    if target == "host":
        defines: Sequence[str] = (f"CLASS_T={class_type}", "SP_NEG_INF=(-INFINITY)", "SP_EXP=expf")
        out = dict(compile_host(POSTPROCESS_SOURCE, defines))
        out.update(compile_host(PREPROCESS_SOURCE))
        return out
    if target != "cuda":
        raise ValueError(f"target must be 'cuda' or 'host', got {target!r}")
    import cupy

    post = cupy.RawModule(
        code=_CUDA_PRELUDE + f"#define CLASS_T {class_type}\n" + POSTPROCESS_SOURCE,
        options=("--std=c++14",),
    )
    pre = cupy.RawModule(code=_CUDA_PRELUDE + PREPROCESS_SOURCE, options=("--std=c++14",))
    return {
        "sp_postprocess": post.get_function("sp_postprocess"),
        "sp_preprocess": pre.get_function("sp_preprocess"),
    }
