"""How frame pixels map to the network input and to its logits (stretch and letterbox).

This is Roboflow's geometry (inference-models), so that results agree per pixel:

- letterbox content size is ``int(w × scale)``, its offset ``int((W − new_w) / 2)``;
- at the output the letterbox pads are rounded (Python ``round``) into logit cells and cropped;
- the remaining logit window is resized to the frame as torchvision's
  ``resize(..., BILINEAR, antialias=True)`` does: half-pixel centres, plain bilinear when
  upsampling, a triangle filter widened by the scale when downsampling.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stream_pipeline.model.package import InputSpec

__all__ = ["Geometry", "axis_taps", "geometry_for", "logit_taps", "logit_window"]


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
    # A static crop: the frame above is the crop, placed at (crop_x, crop_y) on a canvas of
    # canvas_width × canvas_height (0: no crop, the frame is the whole picture).
    crop_x: int = 0
    crop_y: int = 0
    canvas_width: int = 0
    canvas_height: int = 0


def geometry_for(frame_width: int, frame_height: int, spec: InputSpec) -> Geometry:
    """The geometry of one frame under ``spec.resize``."""
    if spec.resize == "stretch":
        return Geometry(
            frame_width, frame_height, spec.width, spec.height, 0, 0, spec.width, spec.height
        )
    scale = min(spec.width / frame_width, spec.height / frame_height)
    # int(), not round(): Roboflow truncates, and a 1-px offset shifts every logit cell.
    cw = max(1, int(frame_width * scale))
    ch = max(1, int(frame_height * scale))
    return Geometry(
        frame_width,
        frame_height,
        spec.width,
        spec.height,
        int((spec.width - cw) / 2),
        int((spec.height - ch) / 2),
        cw,
        ch,
    )


def logit_window(logit_len: int, input_len: int, offset: int, content_len: int) -> tuple[int, int]:
    """``(first cell, cell count)`` of the logits that hold the content along one axis.

    The pads in input pixels are scaled to logit cells and rounded each on its own, as Roboflow
    does (Python ``round``: halves go to even); at least one cell is kept.
    """
    scale = logit_len / input_len
    before = round(scale * offset)
    after = round(scale * (input_len - offset - content_len))
    return before, max(1, logit_len - before - after)


def axis_taps(out_len: int, in_len: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Resize weights along one axis, as PyTorch's antialiased bilinear computes them.

    Returns ``(index, weight)``, both ``(out_len, taps)``: output ``i`` is
    ``sum_t weight[i, t] * input[index[i, t]]``. Unused taps repeat the last used index with
    weight 0, so ``index[:, 0]`` and ``index[:, -1]`` are non-decreasing.
    """
    scale = in_len / out_len
    support = scale if scale >= 1.0 else 1.0
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    centre = scale * (np.arange(out_len, dtype=np.float64) + 0.5)
    # C++ int64 casts truncate toward zero, hence trunc (not floor) before the clamps.
    lo = np.maximum(np.trunc(centre - support + 0.5), 0).astype(np.intp)
    hi = np.minimum(np.trunc(centre + support + 0.5), in_len).astype(np.intp)
    size = np.maximum(hi - lo, 1)
    taps = int(size.max())
    j = np.arange(taps, dtype=np.intp)[None, :]
    index = lo[:, None] + j
    used = j < size[:, None]
    weight = np.where(
        used,
        np.maximum(0.0, 1.0 - np.abs((index - centre[:, None] + 0.5) * invscale)),
        0.0,
    )
    total = weight.sum(axis=1, keepdims=True)
    weight = np.where(total > 0, weight / np.where(total > 0, total, 1.0), 0.0)
    index = np.where(used, index, (lo + size - 1)[:, None])
    index = np.clip(index, 0, in_len - 1)
    return index.astype(np.intp), weight.astype(np.float32)


def logit_taps(
    out_len: int, logit_len: int, input_len: int, offset: int, content_len: int
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """:func:`axis_taps` for the content window of the logits, as indices into the full grid."""
    first, cells = logit_window(logit_len, input_len, offset, content_len)
    first = min(first, logit_len - 1)
    cells = min(cells, logit_len - first)
    index, weight = axis_taps(out_len, cells)
    return index + first, weight
