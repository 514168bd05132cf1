"""Workflow JSON: the reference's example steps, bindings, and every validation error."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from stream_pipeline.errors import WorkflowError
from stream_pipeline.workflow import load_workflow

REFERENCE = (
    Path(__file__).resolve().parents[3] / "shared" / "reference" / "semantic-segmentation-block.txt"
)

# The reference's example step definitions, exactly as documented.
V2_EXAMPLE = {
    "name": "<your_step_name_here>",
    "type": "roboflow_core/roboflow_semantic_segmentation_model@v2",
    "images": "$inputs.image",
    "model_id": "my_project/3",
    "confidence_mode": "<block_does_not_provide_example>",
    "custom_confidence": 0.3,
}
V1_EXAMPLE = {
    "name": "<your_step_name_here>",
    "type": "roboflow_core/roboflow_semantic_segmentation_model@v1",
    "images": "$inputs.image",
    "model_id": "my_project/3",
}


def _workflow(
    step: dict[str, Any],
    *extra_steps: dict[str, Any],
    params: list[dict[str, Any]] | None = None,
    outputs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}, *(params or [])],
        "steps": [step, *extra_steps],
        "outputs": outputs
        if outputs is not None
        else [
            {
                "type": "JsonField",
                "name": "predictions",
                "selector": f"$steps.{step['name']}.predictions",
            }
        ],
    }


def test_examples_match_the_reference_text() -> None:
    if not REFERENCE.is_file():
        pytest.skip(f"reference text not found at {REFERENCE}")
    text = REFERENCE.read_text(encoding="utf-8")
    for example in (V1_EXAMPLE, V2_EXAMPLE):
        for key, value in example.items():
            assert f'"{key}": {json.dumps(value)}' in text


def test_v1_example_loads_as_written_and_applies_0_4_to_every_class() -> None:
    # Roboflow's v1 block sends no confidence, so the request default 0.4 applies.
    bound = load_workflow(_workflow(dict(V1_EXAMPLE))).bind()
    assert bound.model_id == "my_project/3"
    assert bound.confidence_mode == "custom" and bound.custom_confidence == 0.4


@pytest.mark.parametrize("given", [0.5, "0.5", " 0.5"])
def test_confidence_mode_bound_to_a_number_acts_as_custom(given: object) -> None:
    step = {**V2_EXAMPLE, "confidence_mode": "$inputs.mode"}
    definition = _workflow(step)
    definition["inputs"].append({"type": "WorkflowParameter", "name": "mode"})
    bound = load_workflow(definition).bind({"mode": given})
    assert bound.confidence_mode == "custom" and bound.custom_confidence == 0.5
    with pytest.raises(WorkflowError, match="must be in \\[0, 1\\]"):
        load_workflow(definition).bind({"mode": "1.5"})


def test_v2_example_placeholder_is_rejected_naming_allowed_values() -> None:
    with pytest.raises(WorkflowError) as info:
        load_workflow(_workflow(dict(V2_EXAMPLE)))
    msg = str(info.value)
    assert "step '<your_step_name_here>'" in msg and "'confidence_mode'" in msg
    assert "best, default, custom" in msg and "<block_does_not_provide_example>" in msg


def test_v2_example_without_mode_defaults_to_best() -> None:
    step = {k: v for k, v in V2_EXAMPLE.items() if k != "confidence_mode"}
    bound = load_workflow(_workflow(step)).bind()
    assert bound.confidence_mode == "best" and bound.custom_confidence == 0.3


def test_bindings_and_outputs() -> None:
    step = {
        "name": "seg",
        "type": V2_EXAMPLE["type"],
        "images": "$inputs.image",
        "model_id": "$inputs.model",
        "confidence_mode": "$inputs.mode",
        "custom_confidence": "$inputs.conf",
    }
    viz = {
        "name": "viz",
        "type": "roboflow_core/mask_visualization@v1",
        "image": "$inputs.image",
        "predictions": "$steps.seg.predictions",
        "opacity": 0.3,
    }
    params = [
        {"type": "WorkflowParameter", "name": "model", "default_value": "street/1"},
        {"type": "WorkflowParameter", "name": "mode", "default_value": "best"},
        {"type": "InferenceParameter", "name": "conf"},
    ]
    outputs = [
        {"type": "JsonField", "name": n, "selector": s}
        for n, s in [
            ("inference_id", "$steps.seg.inference_id"),
            ("predictions", "$steps.seg.predictions"),
            ("model_id", "$steps.seg.model_id"),
            ("overlay", "$steps.viz.image"),
            ("all", "$steps.seg.*"),
        ]
    ]
    wf = load_workflow(_workflow(step, viz, params=params, outputs=outputs))
    bound = wf.bind({"mode": "custom", "conf": 0.25})
    assert (bound.model_id, bound.confidence_mode, bound.custom_confidence) == (
        "street/1",
        "custom",
        0.25,
    )
    assert bound.visualization_step == "viz" and bound.opacity == 0.3
    assert bound.outputs["overlay"] == ("viz", "image") and bound.outputs["all"] == ("seg", "*")
    assert wf.bind({"conf": 0.1}).confidence_mode == "best"
    with pytest.raises(WorkflowError, match="step 'seg': field 'custom_confidence' must be in"):
        wf.bind({"conf": 3})
    with pytest.raises(
        WorkflowError, match="'confidence_mode' must be one of best, default, custom"
    ):
        wf.bind({"mode": "fast"})
    with pytest.raises(WorkflowError, match="no value was given"):
        wf.bind({"mode": "custom"})
    with pytest.raises(WorkflowError, match="parameter 'nope' is not an input"):
        wf.bind({"nope": 1})


def test_load_from_file_and_string(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(_workflow(dict(V1_EXAMPLE))))
    assert load_workflow(path).bind().model_id == "my_project/3"
    assert load_workflow(path.read_text()).bind().model_id == "my_project/3"
    assert (
        load_workflow({"specification": _workflow(dict(V1_EXAMPLE))}).bind().model_id
        == "my_project/3"
    )
    with pytest.raises(WorkflowError, match="workflow file not found"):
        load_workflow(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(WorkflowError, match="not valid JSON"):
        load_workflow(tmp_path / "bad.json")


def _v2(**fields: Any) -> dict[str, Any]:
    step = {"name": "seg", "type": V2_EXAMPLE["type"], "images": "$inputs.image", "model_id": "m/1"}
    step.update(fields)
    return step


@pytest.mark.parametrize(
    "mutate,message",
    [
        (
            lambda w: w["steps"].append(
                {"name": "od", "type": "roboflow_core/roboflow_object_detection_model@v2"}
            ),
            "step 'od': unsupported block type 'roboflow_core/roboflow_object_detection_model@v2' (supported: "
            "roboflow_core/roboflow_semantic_segmentation_model@v1, roboflow_core/roboflow_semantic_segmentation_model@v2, "
            "roboflow_core/mask_visualization@v1)",
        ),
        (
            lambda w: w["steps"][0].update(confidence_mode="custom", custom_confidence=None),
            "step 'seg': confidence_mode 'custom' needs field 'custom_confidence'",
        ),
        (
            lambda w: w["steps"][0].update(confidence_mode="custom"),
            "step 'seg': confidence_mode 'custom' needs field 'custom_confidence'",
        ),
        (
            lambda w: w["steps"][0].update(custom_confidence=1.5),
            "step 'seg': field 'custom_confidence' must be in [0, 1], got 1.5",
        ),
        (
            lambda w: w["steps"][0].update(custom_confidence=-0.1),
            "step 'seg': field 'custom_confidence' must be in [0, 1]",
        ),
        (
            lambda w: w["steps"][0].update(custom_confidence="high"),
            "step 'seg': field 'custom_confidence' must be a number",
        ),
        (
            lambda w: w["steps"][0].update(model_id="$inputs.missing"),
            "step 'seg': field 'model_id': unknown selector '$inputs.missing'",
        ),
        (
            lambda w: w["steps"][0].update(images="$inputs.picture"),
            "step 'seg': field 'images': unknown selector '$inputs.picture'",
        ),
        (
            lambda w: w["outputs"][0].update(selector="$steps.nope.predictions"),
            "output 'predictions': unknown selector '$steps.nope.predictions'",
        ),
        (
            lambda w: w["outputs"][0].update(selector="$steps.seg.masks"),
            "output 'predictions': step 'seg' has no output 'masks'",
        ),
        (
            lambda w: w["steps"][0].update(confidence="0.3"),
            "step 'seg': unknown field 'confidence'",
        ),
        (lambda w: w["steps"][0].pop("model_id"), "step 'seg': field 'model_id' is required"),
        (lambda w: w["steps"].append(copy.deepcopy(w["steps"][0])), "step 'seg': name used twice"),
        (
            lambda w: w["inputs"].append({"type": "WorkflowBatch", "name": "b"}),
            "input 'b': unknown type 'WorkflowBatch'",
        ),
        (lambda w: w.pop("steps"), "workflow is missing 'steps'"),
    ],
)
def test_validation_errors(mutate: Any, message: str) -> None:
    wf = _workflow(_v2())
    mutate(wf)
    with pytest.raises(WorkflowError) as info:
        load_workflow(wf)
    assert message in str(info.value)


def test_v1_rejects_v2_fields() -> None:
    with pytest.raises(WorkflowError, match="unknown field 'confidence_mode'"):
        load_workflow(_workflow({**V1_EXAMPLE, "confidence_mode": "best"}))
