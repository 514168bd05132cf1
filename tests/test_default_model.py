"""The shipped default model and the street scenes it was trained on.

The model is judged as a user would see it: on scenes from seeds it never saw, at frame size,
through the runtime's semantics (stretch resize with Pillow's bilinear filter, ImageNet
normalisation, logits resized bilinearly with half-pixel centres, softmax, argmax, the package's
recommended per-class thresholds turning low-confidence pixels into background).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from stream_pipeline.model import load_model
from stream_pipeline.scenes import CLASS_NAMES, StreetScene

PACKAGE = Path(__file__).resolve().parent.parent / "stream_pipeline" / "model" / "default"
FRESH_SEEDS = range(1_000_000, 1_000_032)  # never used in training or validation


def _miou(pairs: list[tuple[npt.NDArray[np.intp], npt.NDArray[np.uint8]]]) -> npt.NDArray[Any]:
    """IoU per class over all the frames together (one confusion matrix)."""
    n = len(CLASS_NAMES)
    cm = np.zeros((n, n), np.int64)
    for pred, truth in pairs:
        cm += np.bincount(
            truth.ravel().astype(np.int64) * n + pred.ravel(), minlength=n * n
        ).reshape(n, n)
    inter = np.diag(cm)
    ious: npt.NDArray[Any] = inter / np.maximum(cm.sum(0) + cm.sum(1) - inter, 1)
    return ious


# What the issue asks of the shipped model on fresh scenes (docs/default-model.md has the figures).
MIOU_FLOOR = 0.85


@pytest.mark.slow
def test_default_model_segments_fresh_street_scenes() -> None:
    model = load_model("default", device="cpu", threads=2)
    meta = json.loads((PACKAGE / "model.json").read_text())
    assert meta["class_names"] == list(CLASS_NAMES) == list(model.class_names)
    assert meta["task"] == "semantic-segmentation"
    pairs = []
    for i, seed in enumerate(FRESH_SEEDS):
        rgb, truth = StreetScene(640, 360, seed=seed).render(3.7 + 41.3 * i)
        # The runtime's own path: stretch resize, network, fused postprocess, `best` thresholds.
        result = model.segment(rgb, confidence_mode="best")
        pairs.append((result.class_map.astype(np.intp), truth))
    ious = _miou(pairs)
    report = ", ".join(f"{n} {v:.3f}" for n, v in zip(CLASS_NAMES, ious, strict=True))
    assert ious.mean() >= MIOU_FLOOR, f"mIoU {ious.mean():.4f} < {MIOU_FLOOR} ({report})"


def test_shipped_package_is_small_and_valid() -> None:
    size = (PACKAGE / "model.onnx").stat().st_size
    assert size < 5 * 1024 * 1024, f"model.onnx is {size} bytes"
    model = load_model("default", device="cpu", threads=1)
    rec = model.package.recommended
    assert rec.confidence is not None and set(rec.per_class_confidence) == set(CLASS_NAMES)


def test_street_scene_frames_have_the_promised_form() -> None:
    scene = StreetScene(320, 180, seed=7)
    rgb, labels = scene.render(1.25)
    assert rgb.shape == (180, 320, 3) and rgb.dtype == np.uint8 and rgb.flags.c_contiguous
    assert labels.shape == (180, 320) and labels.dtype == np.uint8 and labels.flags.c_contiguous
    assert int(labels.max()) < len(CLASS_NAMES)


def test_street_scene_is_deterministic_and_animated() -> None:
    a_rgb, a_lab = StreetScene(seed=3).render(2.0)
    b_rgb, b_lab = StreetScene(seed=3).render(2.0)
    np.testing.assert_array_equal(a_rgb, b_rgb)
    np.testing.assert_array_equal(a_lab, b_lab)
    _, c_lab = StreetScene(seed=3).render(4.0)
    assert not np.array_equal(a_lab, c_lab), "nothing moved in two seconds"
    d_rgb, _ = StreetScene(seed=4).render(2.0)
    assert np.abs(a_rgb.astype(np.int16) - d_rgb).mean() > 10, "two seeds gave the same street"


def test_street_scenes_show_most_classes() -> None:
    seen: set[int] = set()
    for seed in range(6):
        _, labels = StreetScene(seed=seed).render(10.0 * seed)
        present = set(np.unique(labels).tolist())
        assert len(present) >= 5, f"seed {seed}: only {sorted(present)}"
        seen |= present
    assert seen == set(range(len(CLASS_NAMES)))


def test_street_scene_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        StreetScene(16, 360)
    with pytest.raises(ValueError, match="seed"):
        StreetScene(seed=-1)
