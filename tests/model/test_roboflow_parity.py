"""Parity with Roboflow's own code: golden fixtures written by ``scripts/roboflow_golden.py``.

The fixtures hold, per tiny package and frame size, what Roboflow's ``inference-models`` 0.39.6
computed (its DeepLabV3+ ONNX model class: pre_process, forward, post_process per confidence mode;
RF-DETR-sem's sigmoid head through its shared post-processing). Our preprocess, both postprocess
implementations and the whole model must agree on ≥ 99.99 % of pixels in every case.
"""

from __future__ import annotations

import json
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from stream_pipeline.model.geometry import Geometry
from stream_pipeline.model.package import ModelPackage
from stream_pipeline.model.postprocess import Head, postprocess_fast, postprocess_reference
from stream_pipeline.model.preprocess import Preprocessor
from stream_pipeline.model.registry import load_package_dir
from stream_pipeline.model.segmenter import SegmentationModel
from stream_pipeline.model.serialize import confidence_u8
from stream_pipeline.model.thresholds import class_thresholds

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "roboflow"
MIN_AGREEMENT = 0.9999


@cache
def _index() -> dict[str, Any]:
    index: dict[str, Any] = json.loads((FIXTURES / "golden.json").read_text())
    return index


@cache
def _arrays() -> dict[str, npt.NDArray[Any]]:
    with np.load(FIXTURES / "golden.npz") as z:
        return {k: z[k] for k in z.files}


def _package(name: str, activation: str = "softmax") -> ModelPackage:
    # Read by our own loader for Roboflow's inference-models layout (what the script wrote).
    pkg = load_package_dir(FIXTURES / "packages" / name)
    if activation == "sigmoid":  # the same logits through RF-DETR-sem's sigmoid head
        pkg = replace(pkg, activation="sigmoid", default_confidence=0.4)
    return pkg


def _geometry(pkg: ModelPackage, image: npt.NDArray[np.uint8]) -> Geometry:
    return Preprocessor(pkg.input, pkg.image_steps).resized(image)[1]


def _mode(mode: str | float) -> tuple[str, float | None]:
    return ("custom", float(mode)) if isinstance(mode, float) else (mode, None)


CASES = [
    (case["id"], activation, mode)
    for case in _index()["cases"]
    for activation in case["activations"]
    for mode in case["modes"]
]


def _case(case_id: str) -> dict[str, Any]:
    return next(c for c in _index()["cases"] if c["id"] == case_id)


def _agreement(ours: npt.NDArray[Any], theirs: npt.NDArray[Any]) -> float:
    assert ours.shape == theirs.shape
    return float((ours == theirs).mean())


@pytest.mark.parametrize("case_id", [c["id"] for c in _index()["cases"]])
def test_network_input_matches_roboflow(case_id: str) -> None:
    case, arrays = _case(case_id), _arrays()
    pkg = _package(case["package"])
    batch, _ = Preprocessor(pkg.input, pkg.image_steps)([arrays[f"{case_id}/image"]])
    theirs = arrays[f"{case_id}/input"]
    assert batch[0].shape == theirs.shape
    np.testing.assert_allclose(batch[0], theirs, atol=1e-5)


@pytest.mark.parametrize("case_id,activation,mode", CASES)
def test_postprocess_matches_roboflow(case_id: str, activation: str, mode: str | float) -> None:
    case, arrays = _case(case_id), _arrays()
    pkg = _package(case["package"], activation)
    logits = arrays[f"{case_id}/logits"]
    head = Head.for_package(pkg, logits.shape[0], class_thresholds(pkg, *_mode(mode)))
    geo = _geometry(pkg, arrays[f"{case_id}/image"])
    key = f"{case_id}/{activation}/{mode}"
    theirs_cls, theirs_c8 = arrays[f"{key}/class_map"], arrays[f"{key}/conf_u8"]
    for post in (postprocess_fast, postprocess_reference):
        class_map, conf = post(logits, geo, head)
        assert _agreement(class_map, theirs_cls) >= MIN_AGREEMENT, post.__name__
        # uint8(conf × 255) truncates: a float32 rounding apart (torch's order of operations is
        # not ours) moves a value sitting on a level boundary by one level, rarely.
        c8 = confidence_u8(conf).astype(np.int16)
        near = np.abs(c8 - theirs_c8) <= 1
        assert float(near.mean()) >= MIN_AGREEMENT, post.__name__


@pytest.mark.parametrize("post", [postprocess_fast, postprocess_reference])
def test_serialised_confidence_is_exact_on_nearly_every_pixel(post: Any) -> None:
    # Over every case and mode together, uint8(conf × 255) is bit-exact on ≥ 99.99 % of pixels.
    same = total = 0
    arrays = _arrays()
    for case_id, activation, mode in CASES:
        case = _case(case_id)
        pkg = _package(case["package"], activation)
        logits = arrays[f"{case_id}/logits"]
        head = Head.for_package(pkg, logits.shape[0], class_thresholds(pkg, *_mode(mode)))
        _, conf = post(logits, _geometry(pkg, arrays[f"{case_id}/image"]), head)
        theirs = arrays[f"{case_id}/{activation}/{mode}/conf_u8"]
        same += int((confidence_u8(conf) == theirs).sum())
        total += theirs.size
    assert same / total >= MIN_AGREEMENT, f"{total - same} of {total} pixels differ"


@pytest.mark.parametrize("package", sorted(_index()["packages"]))
def test_whole_model_from_the_folder_matches_roboflow(package: str) -> None:
    # Roboflow's folder layout loaded as it is, run end to end: preprocess, onnxruntime, postprocess.
    model = SegmentationModel(_package(package), device="cpu", threads=1)
    arrays = _arrays()
    for case in (c for c in _index()["cases"] if c["package"] == package):
        image = arrays[f"{case['id']}/image"]
        logits, *_ = model.infer([image])
        np.testing.assert_allclose(logits[0], arrays[f"{case['id']}/logits"], atol=1e-4)
        activation = case["activations"][0]
        for mode in case["modes"]:
            (result,) = model.segment_batch([image], *_mode(mode))
            key = f"{case['id']}/{activation}/{mode}"
            assert _agreement(result.class_map, arrays[f"{key}/class_map"]) >= MIN_AGREEMENT, key


def test_fixtures_cover_every_mode_layout_and_direction() -> None:
    cases = _index()["cases"]
    layouts = {_package(c["package"]).input.resize for c in cases}
    assert layouts == {"stretch", "letterbox"}
    logit_hw = {c["id"]: c["logits_shape"][1:] for c in cases}
    down = [c for c in cases if c["frame"][0] < logit_hw[c["id"]][1]]
    up = [c for c in cases if c["frame"][0] > logit_hw[c["id"]][1]]
    assert {_package(c["package"]).input.resize for c in down} == layouts
    assert {_package(c["package"]).input.resize for c in up} == layouts
    assert {str(m) for c in cases for m in c["modes"]} == {"best", "default", "0.4", "0.7"}
    assert {a for c in cases for a in c["activations"]} == {"softmax", "sigmoid", "binary"}
