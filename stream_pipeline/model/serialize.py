"""A :class:`SegResult` as JSON: the block's ``semantic_segmentation_prediction`` and the raw form.

Per-class statistics (pixel count, confidence sum, tight box) come from one pass over the pixels
(numba), and all masks are RLE-encoded by one ``pycocotools.mask.encode`` call — no Python loop
over pixels.
"""

from __future__ import annotations

import base64
import io
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
from PIL import Image
from pycocotools import mask as coco_mask

from stream_pipeline.frames import SegResult

__all__ = [
    "class_statistics",
    "confidence_u8",
    "iso_time",
    "png_base64",
    "prediction_dict",
    "raw_dict",
    "rle_encode",
]


def confidence_u8(confidence: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The serialised confidence: ``uint8(conf × 255)`` truncated (float32), as Roboflow does."""
    scaled = np.clip(confidence, 0.0, 1.0).astype(np.float32) * np.float32(255.0)
    out: npt.NDArray[np.uint8] = scaled.astype(np.uint8)
    return out


@numba.njit(cache=True, nogil=True)
def _stats(class_map: Any, conf: Any, n: int, count: Any, total: Any, box: Any) -> None:
    height, width = class_map.shape
    for k in range(n):
        box[k, 0] = width
        box[k, 1] = height
        box[k, 2] = -1
        box[k, 3] = -1
    for r in range(height):
        for c in range(width):
            k = class_map[r, c]
            count[k] += 1
            total[k] += conf[r, c]
            if c < box[k, 0]:
                box[k, 0] = c
            if c > box[k, 2]:
                box[k, 2] = c
            if r < box[k, 1]:
                box[k, 1] = r
            if r > box[k, 3]:
                box[k, 3] = r


def class_statistics(
    class_map: npt.NDArray[np.integer[Any]], conf_u8: npt.NDArray[np.uint8], n_classes: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per class id: pixel count, sum of uint8 confidences, box (x1, y1, x2, y2; -1 when absent)."""
    count = np.zeros(n_classes, np.int64)
    total = np.zeros(n_classes, np.int64)
    box = np.zeros((n_classes, 4), np.int64)
    _stats(
        np.ascontiguousarray(class_map), np.ascontiguousarray(conf_u8), n_classes, count, total, box
    )
    return count, total, box


@numba.njit(cache=True, nogil=True)
def _column_runs(class_map: Any, n_classes: int) -> tuple[Any, Any, Any]:
    """Column-major run lengths of ``class_map == k`` for every class k, in one pass per phase.

    COCO RLE alternates runs of 0s and 1s, starting with 0s. Walking the map column-major, a
    change of class from p to v ends a run of p (its 1s) and one of v (its 0s); every other class
    just goes on. So each class's runs are the gaps between its own transitions: count them
    (phase 1), then write them into one flat array at per-class offsets (phase 2).
    """
    height, width = class_map.shape
    n = height * width
    count = np.zeros(n_classes, np.int64)
    prev = -1
    for c in range(width):
        for r in range(height):
            v = class_map[r, c]
            if v != prev:
                count[v] += 1
                if prev >= 0:
                    count[prev] += 1
                prev = v
    offsets = np.zeros(n_classes + 1, np.int64)
    for k in range(n_classes):
        offsets[k + 1] = offsets[k] + count[k] + 1
    runs = np.empty(offsets[n_classes], np.int64)
    fill = offsets[:n_classes].copy()
    last = np.zeros(n_classes, np.int64)
    prev = -1
    i = 0
    for c in range(width):
        for r in range(height):
            v = class_map[r, c]
            if v != prev:
                runs[fill[v]] = i - last[v]
                fill[v] += 1
                last[v] = i
                if prev >= 0:
                    runs[fill[prev]] = i - last[prev]
                    fill[prev] += 1
                    last[prev] = i
                prev = v
            i += 1
    for k in range(n_classes):
        runs[fill[k]] = n - last[k]
        fill[k] += 1
    return runs, offsets, fill


def rle_encode(
    class_map: npt.NDArray[np.integer[Any]], class_ids: Sequence[int]
) -> list[dict[str, Any]]:
    """COCO compressed RLE (column-major) of ``class_map == id`` for each id, as JSON dicts.

    The runs of every class come from one kernel pass over the map (never a boolean mask per
    class); pycocotools compresses them into its counts string, so readers decode it bit-exact.
    """
    if not class_ids:
        return []
    height, width = (int(s) for s in class_map.shape)
    n_classes = int(class_map.max()) + 1
    runs, offsets, fill = _column_runs(np.ascontiguousarray(class_map), n_classes)
    out = []
    for cid in class_ids:
        # A class absent from the map (beyond its largest id) is one run of 0s.
        counts = runs[offsets[cid] : fill[cid]].tolist() if cid < n_classes else [height * width]
        encoded = coco_mask.frPyObjects({"counts": counts, "size": [height, width]}, height, width)
        out.append({"size": [height, width], "counts": encoded["counts"].decode("ascii")})
    return out


def iso_time(unix_seconds: float) -> str:
    """``2026-11-24T10:00:00.000Z``."""
    stamp = datetime.fromtimestamp(unix_seconds, tz=UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def prediction_dict(
    result: SegResult,
    class_names: Sequence[str],
    model_id: str,
    background_id: int,
    with_masks: bool = True,
) -> dict[str, Any]:
    """The ``semantic_segmentation_prediction`` object for one frame (see docs/outputs.md)."""
    conf8 = confidence_u8(result.confidence)
    count, total, box = class_statistics(result.class_map, conf8, len(class_names))
    ids = [i for i in np.flatnonzero(count).tolist() if i != background_id]
    rles = rle_encode(result.class_map, ids) if with_masks else [None] * len(ids)
    entries = []
    for cid, rle in zip(ids, rles, strict=True):
        x1, y1, x2, y2 = (int(v) for v in box[cid])
        entry: dict[str, Any] = {
            "x": (x1 + x2) / 2.0,
            "y": (y1 + y2) / 2.0,
            "width": float(x2 - x1),
            "height": float(y2 - y1),
            # The mean of the serialised uint8 confidences, /255, unrounded (as Roboflow).
            "confidence": float(total[cid]) / float(count[cid]) / 255.0,
            "class_id": cid,
            "class": class_names[cid],
            "detection_id": str(uuid.uuid4()),
        }
        if rle is not None:
            entry["rle_mask"] = rle
        entries.append(entry)
    out: dict[str, Any] = {
        "inference_id": result.inference_id or str(uuid.uuid4()),
        "model_id": model_id,
    }
    frame = result.frame
    if frame is not None:
        out.update(
            source_id=frame.meta.source_id,
            frame_id=frame.meta.frame_id,
            pts_seconds=round(frame.meta.pts_seconds, 6),
            captured_at=iso_time(frame.meta.captured_at),
        )
    out["predictions"] = {
        "image": {"width": result.width, "height": result.height},
        "predictions": entries,
    }
    return out


def png_base64(image: npt.NDArray[np.uint8]) -> str:
    """A uint8 H×W image as base64-encoded PNG."""
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def raw_dict(result: SegResult, class_names: Sequence[str]) -> dict[str, Any]:
    """The raw form of Roboflow's model endpoint, in its shape: ``{"image", "predictions":
    {segmentation_mask, class_map, confidence_mask, present_class_ids}}`` (masks as base64 PNG)."""
    if len(class_names) > 256:
        raise ValueError("the raw PNG form holds at most 256 classes")
    return {
        "inference_id": result.inference_id,
        "image": {"width": result.width, "height": result.height},
        "predictions": {
            "segmentation_mask": png_base64(result.class_map.astype(np.uint8)),
            "class_map": {str(i): name for i, name in enumerate(class_names)},
            "confidence_mask": png_base64(confidence_u8(result.confidence)),
            "present_class_ids": list(result.present_class_ids),
        },
    }
