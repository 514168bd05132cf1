"""The issue's correctness bounds, measured against the CPU path's float64 reference."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from stream_pipeline.model.geometry import Geometry, logit_taps
from stream_pipeline.model.postprocess import Head, postprocess_reference
from stream_pipeline.model.serialize import confidence_u8

TIE = 1e-4


def ambiguous(logits: npt.NDArray[Any], geo: Geometry, head: Head) -> npt.NDArray[np.bool_]:
    """Pixels whose class may differ in float32: the top two probabilities (or the top one and
    its threshold) within :data:`TIE`, in float64."""
    _, h, w = logits.shape
    mats = []
    for out, n, inp, off, cont in (
        (geo.frame_height, h, geo.input_height, geo.content_y, geo.content_height),
        (geo.frame_width, w, geo.input_width, geo.content_x, geo.content_width),
    ):
        idx, wt = logit_taps(out, n, inp, off, cont)
        m = np.zeros((out, n))
        np.add.at(m, (np.arange(out)[:, None], idx), wt.astype(np.float64))
        mats.append(m)
    up = np.einsum("yh,chw,xw->cyx", mats[0], logits.astype(np.float64), mats[1])
    if head.activation == "softmax":
        e = np.exp(up - up.max(axis=0))
        prob = e / e.sum(axis=0)
    elif head.activation == "sigmoid":
        prob = 1.0 / (1.0 + np.exp(-up))
    else:
        prob = up
    top = np.sort(prob, axis=0)
    best = top[-1]
    second = top[-2] if len(top) > 1 else np.full_like(best, -np.inf)
    # sigmoid: the class is the argmax of the logits; compare them through the same map
    cls = head.channel_class_ids[prob.argmax(axis=0)]
    near_threshold = np.abs(best - head.thresholds[cls]) < TIE
    loose: npt.NDArray[np.bool_] = ((best - second) < TIE) | near_threshold
    return loose


def assert_within_bounds(
    class_map: npt.NDArray[Any],
    conf8: npt.NDArray[np.uint8],
    logits: npt.NDArray[Any],
    geo: Geometry,
    head: Head,
) -> None:
    """Class map equal to the reference except at :func:`ambiguous` pixels; uint8 confidence
    within 1 level (1/255) of the reference's serialised confidence."""
    ref_cls, ref_conf = postprocess_reference(logits, geo, head)
    assert class_map.shape == ref_cls.shape and class_map.dtype == ref_cls.dtype
    loose = ambiguous(logits, geo, head)
    differ = class_map != ref_cls
    assert not np.any(differ & ~loose), f"{int(np.sum(differ & ~loose))} pixels differ"
    agree = ~differ
    ref8 = confidence_u8(ref_conf).astype(np.int32)
    gap = np.abs(conf8.astype(np.int32) - ref8)[agree]
    assert gap.size == 0 or int(gap.max()) <= 1, f"confidence off by {int(gap.max())}/255"
