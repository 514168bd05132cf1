"""How frame pixels map to the network input and to its logits (stretch and letterbox).

Every resize in this package uses half-pixel centres (``align_corners=False``, as PyTorch,
OpenCV and ONNX ``half_pixel`` do). For letterbox the frame is scaled to fit, centred, and the
padding is removed again by mapping each frame pixel into the content box of the logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream_pipeline.model.package import InputSpec

__all__ = ["Geometry", "geometry_for", "sample_coords"]


@dataclass(frozen=True, slots=True)
class Geometry:
    """Frame size, network input size and where the frame's content sits in the input."""

    frame_width: int
    frame_height: int
    input_width: int
    input_height: int
    content_x: int
    content_y: int
    content_width: int
    content_height: int


def geometry_for(frame_width: int, frame_height: int, spec: InputSpec) -> Geometry:
    """The geometry of one frame under ``spec.resize``."""
    if spec.resize == "stretch":
        return Geometry(
            frame_width, frame_height, spec.width, spec.height, 0, 0, spec.width, spec.height
        )
    scale = min(spec.width / frame_width, spec.height / frame_height)
    cw = max(1, min(spec.width, round(frame_width * scale)))
    ch = max(1, min(spec.height, round(frame_height * scale)))
    return Geometry(
        frame_width,
        frame_height,
        spec.width,
        spec.height,
        (spec.width - cw) // 2,
        (spec.height - ch) // 2,
        cw,
        ch,
    )


def sample_coords(
    out_len: int, logit_len: int, input_len: int, offset: int, content_len: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """For each of ``out_len`` frame pixels along one axis: the two logit indices and the weight.

    Frame pixel ``x`` has its centre at input coordinate ``offset + (x + 0.5) * content/out``; in
    logit space that is ``u * logit_len / input_len - 0.5``, clamped to the edge (as PyTorch does).
    Returns ``(i0, i1, frac)`` with value = ``(1 - frac) * L[i0] + frac * L[i1]``.
    """
    x = np.arange(out_len, dtype=np.float64)
    u = offset + (x + 0.5) * (content_len / out_len)
    s = u * (logit_len / input_len) - 0.5
    s = np.clip(s, 0.0, logit_len - 1)
    i0 = np.floor(s).astype(np.intp)
    i1 = np.minimum(i0 + 1, logit_len - 1)
    frac = (s - i0).astype(np.float32)
    return i0, i1, frac
