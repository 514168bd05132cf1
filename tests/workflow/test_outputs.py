"""A frame's JSONL record shaped by the workflow's outputs, kinds serialised as Roboflow does."""

from __future__ import annotations

import base64
import json
from typing import Any

import cv2
import numpy as np
import pytest

from stream_pipeline.frames import SegResult
from stream_pipeline.model.serialize import prediction_dict
from stream_pipeline.workflow import load_workflow
from stream_pipeline.workflow.outputs import workflow_record

NAMES = ("background", "road", "vehicle")


def _definition(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [
            {
                "name": "segmentation",
                "type": "roboflow_core/roboflow_semantic_segmentation_model@v2",
                "images": "$inputs.image",
                "model_id": "my_project/3",
            },
            {
                "name": "viz",
                "type": "roboflow_core/mask_visualization@v1",
                "image": "$inputs.image",
                "predictions": "$steps.segmentation.predictions",
            },
        ],
        "outputs": outputs,
    }


def _prediction() -> dict[str, Any]:
    class_map = np.zeros((8, 12), np.uint8)
    class_map[2:5, 3:9] = 1
    result = SegResult(class_map, np.full((8, 12), 0.8, np.float32), (0, 1), inference_id="i-1")
    origin = {"source_id": "cam-1", "frame_id": 17, "pts_seconds": 0.5, "captured_at": "x"}
    return {**origin, **prediction_dict(result, NAMES, "my_project/3", background_id=0)}


def test_outputs_by_their_names_beside_the_frame_origin() -> None:
    bound = load_workflow(
        _definition(
            [
                {"type": "JsonField", "name": "segmentation", "selector": "$steps.segmentation.*"},
                {
                    "type": "JsonField",
                    "name": "masks",
                    "selector": "$steps.segmentation.predictions",
                },
                {"type": "JsonField", "name": "which", "selector": "$steps.segmentation.model_id"},
                {"type": "JsonField", "name": "visualization", "selector": "$steps.viz.image"},
            ]
        )
    ).bind()
    prediction = _prediction()
    calls: list[int] = []

    def never() -> np.ndarray[Any, Any]:
        calls.append(1)
        raise AssertionError("the image is not encoded when images are left out")

    record = workflow_record(bound, prediction, never)
    assert list(record) == [
        "source_id",
        "frame_id",
        "pts_seconds",
        "captured_at",
        "segmentation",
        "masks",
        "which",
    ]
    assert record["source_id"] == "cam-1" and record["frame_id"] == 17
    assert record["segmentation"] == {
        "inference_id": "i-1",
        "predictions": prediction["predictions"],
        "model_id": "my_project/3",
    }
    assert record["masks"]["predictions"][0]["class"] == "road"
    assert record["which"] == "my_project/3"
    assert calls == []
    json.dumps(record)


def test_image_outputs_are_base64_jpeg_when_asked_for() -> None:
    bound = load_workflow(
        _definition(
            [
                {"type": "JsonField", "name": "overlay", "selector": "$steps.viz.image"},
                {"type": "JsonField", "name": "all_viz", "selector": "$steps.viz.*"},
            ]
        )
    ).bind()
    picture = np.zeros((8, 12, 3), np.uint8)
    picture[:, :, 0] = 255  # pure red in RGB
    calls: list[int] = []

    def draw() -> np.ndarray[Any, Any]:
        calls.append(1)
        return picture

    record = workflow_record(bound, _prediction(), draw, include_images=True)
    assert calls == [1]  # encoded once, shared by both outputs
    assert record["all_viz"] == {"image": record["overlay"]}
    assert record["overlay"]["type"] == "base64"
    decoded = cv2.imdecode(
        np.frombuffer(base64.b64decode(record["overlay"]["value"]), np.uint8), cv2.IMREAD_COLOR
    )
    assert decoded is not None
    assert decoded.shape == (8, 12, 3) and decoded[4, 6, 2] > 200 and decoded[4, 6, 0] < 50


def test_asking_for_images_without_a_visualization_is_worded() -> None:
    bound = load_workflow(
        _definition([{"type": "JsonField", "name": "overlay", "selector": "$steps.viz.image"}])
    ).bind()
    from stream_pipeline.errors import WorkflowError

    with pytest.raises(WorkflowError, match="no visualization"):
        workflow_record(bound, _prediction(), None, include_images=True)
