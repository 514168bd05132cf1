"""JSONL predictions, PNG masks and callbacks: whole records, read back exactly, in order."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as coco_mask

from stream_pipeline.consumers.files import CallbackSink, JsonlSink, MasksSink
from stream_pipeline.errors import SinkError
from stream_pipeline.frames import SegResult
from stream_pipeline.model.serialize import confidence_u8
from tests.consumers.synthetic import CONTEXT, make_result


def _png(data: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data))))


def test_jsonl_one_line_per_result_with_rle_masks(tmp_path: Path) -> None:
    path = tmp_path / "out" / "predictions.jsonl"
    results = [make_result(i, height=90, width=160) for i in range(5)]
    sink = JsonlSink(path, source_id="cam-1")
    sink.open(CONTEXT)
    for r in results:
        sink.write(r)
    sink.close()
    sink.close()
    assert sink.stats.delivered == 5
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    assert len(lines) == 5
    for line, result in zip(lines, results, strict=True):
        obj = json.loads(line)
        assert obj["frame_id"] == result.frame.meta.frame_id  # type: ignore[union-attr]
        assert obj["inference_id"] == result.inference_id and "raw" not in obj
        entries = obj["predictions"]["predictions"]
        assert [e["class_id"] for e in entries] == [1, 2, 3]
        rebuilt = np.zeros_like(result.class_map)
        for e in entries:
            rle = {"size": e["rle_mask"]["size"], "counts": e["rle_mask"]["counts"].encode()}
            rebuilt[coco_mask.decode(rle).astype(bool)] = e["class_id"]
        np.testing.assert_array_equal(rebuilt, result.class_map)


def test_jsonl_appends_and_raw_form_and_no_masks(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text('{"earlier": true}\n')
    sink = JsonlSink(path, with_masks=False, raw=True)
    sink.open(CONTEXT)
    result = make_result(3, height=40, width=60)
    sink.write(result)
    sink.close()
    lines = path.read_text().splitlines()
    assert json.loads(lines[0]) == {"earlier": True}
    obj = json.loads(lines[1])
    assert all("rle_mask" not in e for e in obj["predictions"]["predictions"])
    raw = obj["raw"]["predictions"]  # Roboflow's shape: {"image", "predictions": {...}}
    assert obj["raw"]["image"] == {"width": 60, "height": 40}
    np.testing.assert_array_equal(_png(raw["segmentation_mask"]), result.class_map)
    np.testing.assert_array_equal(_png(raw["confidence_mask"]), confidence_u8(result.confidence))
    assert raw["class_map"]["1"] == "road" and raw["present_class_ids"] == [0, 1, 2, 3]


def test_jsonl_failed_write_is_a_sink_error(tmp_path: Path) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("/dev/full is missing")
    sink = JsonlSink("/dev/full")
    sink.open(CONTEXT)
    with pytest.raises(SinkError, match="/dev/full"):
        sink.write(make_result(0, height=20, width=20))
    assert sink.stats.delivered == 0 and sink.stats.last_error
    sink.close()


@pytest.mark.parametrize("make", [JsonlSink, MasksSink])
def test_unwritable_location_is_a_sink_error_naming_it(tmp_path: Path, make: type) -> None:
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    target = blocker / "sub" / "out"
    with pytest.raises(SinkError) as info:
        make(target).open(CONTEXT)
    assert str(target) in str(info.value) and "\n" not in str(info.value)


def test_masks_png_read_back_equal(tmp_path: Path) -> None:
    sink = MasksSink(tmp_path / "masks")
    sink.open(CONTEXT)
    results = [make_result(i, height=50, width=70) for i in range(3)]
    wide = make_result(7, height=50, width=70, source_id="cam-2")
    big_ids = wide.class_map.astype(np.uint16) * 100  # ids up to 300: a 16-bit PNG
    results.append(SegResult(big_ids, wide.confidence, (0, 100, 200, 300), frame=wide.frame))
    for r in results:
        sink.write(r)
    sink.close()
    assert sink.stats.delivered == 4
    for r in results:
        assert r.frame is not None
        stem = tmp_path / "masks" / r.frame.meta.source_id / f"{r.frame.meta.frame_id:08d}"
        ids = np.asarray(Image.open(f"{stem}_class.png"))
        np.testing.assert_array_equal(ids, r.class_map)
        assert ids.dtype == r.class_map.dtype
        conf = np.asarray(Image.open(f"{stem}_conf.png"))
        np.testing.assert_array_equal(conf, confidence_u8(r.confidence))  # truncated, as Roboflow
    assert sorted(p.name for p in (tmp_path / "masks" / "cam-1").iterdir())[:2] == [
        "00000000_class.png",
        "00000000_conf.png",
    ]


def test_masks_reject_a_source_id_that_leaves_the_directory(tmp_path: Path) -> None:
    sink = MasksSink(tmp_path)
    sink.open(CONTEXT)
    with pytest.raises(SinkError, match="source id"):
        sink.write(make_result(0, height=8, width=8, source_id="../evil"))


def test_callback_called_in_order() -> None:
    seen: list[int] = []
    sink = CallbackSink(lambda r: seen.append(r.frame.meta.frame_id if r.frame else -1))
    preview = CallbackSink(lambda r: None, lossless=False)
    assert sink.lossless and not preview.lossless
    sink.open(CONTEXT)
    for i in range(10):
        sink.write(make_result(i, height=8, width=8))
    sink.close()
    assert seen == list(range(10)) and sink.stats.delivered == 10
