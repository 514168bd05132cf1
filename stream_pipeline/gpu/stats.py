"""Per-class statistics and the palette overlay, reduced on the array (no Python loop per class).

The statistics are what the prediction JSON is made of (:func:`stream_pipeline.model.serialize.
class_statistics`): pixel count, sum of ``uint8`` confidences and tight box per class id. Boxes
come from two more histograms (class × row, class × column), so the work is O(pixels) and the
host receives ``n_classes × (H + W)`` counts at most — never the maps themselves for this.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from stream_pipeline.gpu.xp import Backend

__all__ = ["class_statistics_xp", "overlay_xp"]


def class_statistics_xp(
    be: Backend, class_map: Any, conf8: Any, n_classes: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per class id: pixel count, sum of uint8 confidences, box (x1, y1, x2, y2;
    ``(W, H, -1, -1)`` when absent, as the serialiser's)."""
    xp = be.xp
    height, width = class_map.shape
    ids = class_map.astype(xp.int64)
    flat = ids.ravel()
    count = xp.bincount(flat, minlength=n_classes)[:n_classes]
    total = xp.bincount(flat, weights=conf8.ravel().astype(xp.float64), minlength=n_classes)
    rows = xp.bincount((ids * height + xp.arange(height)[:, None]).ravel(),
                       minlength=n_classes * height).reshape(n_classes, height) > 0  # fmt: skip
    cols = xp.bincount((ids * width + xp.arange(width)[None, :]).ravel(),
                       minlength=n_classes * width).reshape(n_classes, width) > 0  # fmt: skip
    present = count > 0
    box = xp.stack(
        [
            cols.argmax(axis=1),
            rows.argmax(axis=1),
            width - 1 - cols[:, ::-1].argmax(axis=1),
            height - 1 - rows[:, ::-1].argmax(axis=1),
        ],
        axis=1,
    )
    # Absent classes as the serialiser leaves them: (W, H, -1, -1).
    absent = xp.asarray([width, height, -1, -1])
    box = xp.where(present[:, None], box, absent[None, :])
    return (
        be.to_host(count).astype(np.int64),
        # Sums of uint8 values: exact in float64 far beyond any frame size.
        be.to_host(xp.rint(total[:n_classes])).astype(np.int64),
        be.to_host(box).astype(np.int64),
    )


def overlay_xp(be: Backend, rgb: Any, class_map: Any, palette: Any, alpha: Any) -> Any:
    """``rgb`` (H×W×3 uint8) with each class-``k`` pixel blended as the CPU annotator does:
    ``(rgb · (256 − a) + palette[k] · a) >> 8``, ``a = alpha[k]`` (0: left as it is)."""
    xp = be.xp
    n = alpha.shape[0]
    ids = class_map.astype(xp.int32)
    inside = ids < n  # ids beyond the palette (a map of another model) are left as they are
    safe = xp.where(inside, ids, 0)
    a = xp.where(inside, alpha[safe], 0).astype(xp.int32)[:, :, None]
    mixed = (rgb.astype(xp.int32) * (256 - a) + palette[safe].astype(xp.int32) * a) >> 8
    return mixed.astype(xp.uint8)
