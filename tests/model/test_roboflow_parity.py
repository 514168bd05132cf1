"""Parity with Roboflow's own code: golden fixtures written by ``scripts/roboflow_golden.py``.

The fixtures hold, per tiny package and frame size, what Roboflow's ``inference-models`` 0.39.6
computed (its DeepLabV3+ ONNX model class: pre_process, forward, post_process per confidence mode;
RF-DETR-sem's sigmoid head through its shared post-processing). Our preprocess, both postprocess
implementations and the whole model must agree on ≥ 99.99 % of pixels in every case.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from stream_pipeline.model.geometry import geometry_for
from stream_pipeline.model.package import InputSpec, ModelPackage, Recommended
from stream_pipeline.model.postprocess import Head, postprocess_fast, postprocess_reference
from stream_pipeline.model.preprocess import Preprocessor
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


def _spec(package: str) -> InputSpec:
    config = json.loads((FIXTURES / "packages" / package / "inference_config.json").read_text())
    ni = config["network_input"]
    mean, std = ni.get("normalization") or ([0.0] * 3, [1.0] * 3)
    return InputSpec(
        width=ni["training_input_size"]["width"],
        height=ni["training_input_size"]["height"],
        resize=ni["resize_mode"],
        color=ni["color_mode"],
        scale=float(ni.get("scaling_factor") or 1.0),
        mean=tuple(mean),
        std=tuple(std),
        padding_value=ni.get("padding_value") or 0,
    )


def _package(name: str, activation: str) -> ModelPackage:
    info = _index()["packages"][name]
    rec = info["recommended"] or {}
    return ModelPackage(
        model_id=f"golden/{name}",
        onnx_path=FIXTURES / "packages" / name / "weights.onnx",
        class_names=tuple(info["class_names"]),
        input=_spec(name),
        activation="sigmoid" if activation == "sigmoid" else "softmax",
        default_confidence=_index()["default_confidence"][activation],
        recommended=Recommended(rec.get("confidence"), rec.get("per_class_confidence") or {}),
    )


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
    batch, _ = Preprocessor(_spec(case["package"]))([arrays[f"{case_id}/image"]])
    theirs = arrays[f"{case_id}/input"]
    assert batch[0].shape == theirs.shape
    np.testing.assert_allclose(batch[0], theirs, atol=1e-5)


@pytest.mark.parametrize("case_id,activation,mode", CASES)
def test_postprocess_matches_roboflow(case_id: str, activation: str, mode: str | float) -> None:
    case, arrays = _case(case_id), _arrays()
    width, height = case["frame"]
    pkg = _package(case["package"], activation)
    logits = arrays[f"{case_id}/logits"]
    head = Head.for_package(pkg, logits.shape[0], class_thresholds(pkg, *_mode(mode)))
    geo = geometry_for(width, height, pkg.input)
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
        width, height = case["frame"]
        _, conf = post(logits, geometry_for(width, height, pkg.input), head)
        theirs = arrays[f"{case_id}/{activation}/{mode}/conf_u8"]
        same += int((confidence_u8(conf) == theirs).sum())
        total += theirs.size
    assert same / total >= MIN_AGREEMENT, f"{total - same} of {total} pixels differ"


def test_fixtures_cover_every_mode_layout_and_direction() -> None:
    cases = _index()["cases"]
    layouts = {_spec(c["package"]).resize for c in cases}
    assert layouts == {"stretch", "letterbox"}
    logit_hw = {c["id"]: c["logits_shape"][1:] for c in cases}
    down = [c for c in cases if c["frame"][0] < logit_hw[c["id"]][1]]
    up = [c for c in cases if c["frame"][0] > logit_hw[c["id"]][1]]
    assert {_spec(c["package"]).resize for c in down} == layouts
    assert {_spec(c["package"]).resize for c in up} == layouts
    assert {str(m) for c in cases for m in c["modes"]} == {"best", "default", "0.4", "0.7"}
    assert {a for c in cases for a in c["activations"]} == {"softmax", "sigmoid", "binary"}
