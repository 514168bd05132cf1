"""Prediction JSON: boxes, mean confidences, COCO RLE read back bit-exact by pycocotools."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from stream_pipeline.frames import Frame, FrameMeta, SegResult
from stream_pipeline.model.package import InputSpec, ModelPackage, Recommended
from stream_pipeline.model.serialize import confidence_u8, iso_time, prediction_dict, raw_dict
from stream_pipeline.model.thresholds import class_thresholds

NAMES = ("background", "road", "vehicle", "person")


def _result(seed: int, h: int = 61, w: int = 83) -> SegResult:
    rng = np.random.default_rng(seed)
    class_map = rng.integers(0, 3, size=(h, w)).astype(np.uint8)  # "person" (3) absent
    class_map[5:9, 10:20] = 2
    conf = rng.random((h, w)).astype(np.float32)
    present = tuple(int(i) for i in np.unique(class_map))
    return SegResult(class_map, conf, present, inference_id="abc")


def test_prediction_entries_match_a_naive_computation() -> None:
    result = _result(1)
    out = prediction_dict(result, NAMES, "street/1", background_id=0)
    assert out["inference_id"] == "abc" and out["model_id"] == "street/1"
    assert out["predictions"]["image"] == {"width": 83, "height": 61}
    entries = out["predictions"]["predictions"]
    assert [e["class"] for e in entries] == ["road", "vehicle"]
    conf8 = confidence_u8(result.confidence)
    for e in entries:
        mask = result.class_map == e["class_id"]
        ys, xs = np.nonzero(mask)
        x1, x2, y1, y2 = xs.min(), xs.max(), ys.min(), ys.max()
        assert (e["x"], e["y"]) == ((x1 + x2) / 2, (y1 + y2) / 2)
        assert (e["width"], e["height"]) == (x2 - x1, y2 - y1)
        assert e["confidence"] == pytest.approx(conf8[mask].mean() / 255, abs=1e-6)
        decoded = coco_mask.decode(
            {"size": e["rle_mask"]["size"], "counts": e["rle_mask"]["counts"].encode()}
        )
        np.testing.assert_array_equal(decoded, mask.astype(np.uint8))
        assert e["rle_mask"]["size"] == [61, 83]
    json.dumps(out)  # serialisable as is


@pytest.mark.parametrize("seed", range(5))
def test_rle_round_trip_random_maps(seed: int) -> None:
    rng = np.random.default_rng(seed)
    h, w = int(rng.integers(1, 200)), int(rng.integers(1, 200))
    class_map = rng.integers(0, 6, size=(h, w)).astype(np.uint8)
    result = SegResult(class_map, rng.random((h, w)).astype(np.float32), ())
    out = prediction_dict(result, [f"c{i}" if i else "background" for i in range(6)], "m/1", 0)
    for e in out["predictions"]["predictions"]:
        decoded = coco_mask.decode(
            {"size": e["rle_mask"]["size"], "counts": e["rle_mask"]["counts"]}
        )
        np.testing.assert_array_equal(decoded, (class_map == e["class_id"]).astype(np.uint8))


def test_frame_metadata_and_times() -> None:
    meta = FrameMeta("cam-1", 17, 0.5667, 1795514400.0, 0.0, 83, 61)
    frame = Frame(meta, rgb=np.zeros((61, 83, 3), np.uint8))
    r = _result(2)
    r = SegResult(r.class_map, r.confidence, r.present_class_ids, frame=frame, inference_id="x")
    out = prediction_dict(r, NAMES, "street/1", 0, with_masks=False)
    assert out["source_id"] == "cam-1" and out["frame_id"] == 17 and out["pts_seconds"] == 0.5667
    assert out["captured_at"] == iso_time(1795514400.0) == "2026-11-24T10:00:00.000Z"
    assert all("rle_mask" not in e for e in out["predictions"]["predictions"])


def test_empty_frame_has_no_entries() -> None:
    r = SegResult(np.zeros((4, 4), np.uint8), np.zeros((4, 4), np.float32), (0,))
    assert prediction_dict(r, NAMES, "m/1", 0)["predictions"]["predictions"] == []


def test_raw_form_png_masks() -> None:
    r = _result(3)
    out = raw_dict(r, NAMES)
    # Roboflow's shape: {"image", "predictions": {masks, class_map, present_class_ids}}.
    assert out["image"] == {"width": 83, "height": 61}
    raw = out["predictions"]
    seg = np.asarray(Image.open(io.BytesIO(base64.b64decode(raw["segmentation_mask"]))))
    conf = np.asarray(Image.open(io.BytesIO(base64.b64decode(raw["confidence_mask"]))))
    np.testing.assert_array_equal(seg, r.class_map)
    np.testing.assert_array_equal(conf, confidence_u8(r.confidence))
    assert raw["class_map"] == {"0": "background", "1": "road", "2": "vehicle", "3": "person"}
    assert raw["present_class_ids"] == [0, 1, 2]


def test_threshold_modes() -> None:
    pkg = ModelPackage(
        "m/1",
        Path("x.onnx"),
        NAMES,
        InputSpec(8, 8),
        default_confidence=0.6,
        recommended=Recommended(0.45, {"road": 0.3, "person": 0.7}),
    )
    assert class_thresholds(pkg, "best").tolist() == pytest.approx([0.45, 0.3, 0.45, 0.7])
    assert class_thresholds(pkg, "default").tolist() == pytest.approx([0.6] * 4)
    assert class_thresholds(pkg, "custom", 0.25).tolist() == pytest.approx([0.25] * 4)
    bare = ModelPackage("m/1", Path("x.onnx"), NAMES, InputSpec(8, 8))
    assert class_thresholds(bare, "best").tolist() == pytest.approx([0.5] * 4)
    only_per_class = ModelPackage(
        "m/1",
        Path("x.onnx"),
        NAMES,
        InputSpec(8, 8),
        default_confidence=0.55,
        recommended=Recommended(None, {"road": 0.3}),
    )
    assert class_thresholds(only_per_class, "best").tolist() == pytest.approx([0.55] * 4)
    with pytest.raises(ValueError, match="needs custom_confidence"):
        class_thresholds(pkg, "custom")
    with pytest.raises(ValueError, match=r"custom_confidence must be in \[0, 1\]"):
        class_thresholds(pkg, "custom", 1.2)
    with pytest.raises(ValueError, match="confidence_mode must be one of best, default, custom"):
        class_thresholds(pkg, "<block_does_not_provide_example>")
