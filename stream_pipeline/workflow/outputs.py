"""One JSON record per frame shaped by a workflow's ``outputs``, as Roboflow serialises them.

What InferencePipeline's ``on_prediction`` receives for a definition is a dict keyed by the
definition's output names; :func:`workflow_record` builds that dict from one frame's prediction
(:func:`~stream_pipeline.model.serialize.prediction_dict`) beside the frame's origin. Kinds are
serialised as Roboflow serialises them: ``semantic_segmentation_prediction`` as the prediction
object, ``inference_id`` and ``roboflow_model_id`` as strings, a selector ``$steps.<step>.*`` as
an object of all the step's outputs, and an image as ``{"type": "base64", "value": <JPEG>}`` —
only when asked for; otherwise image outputs are left out of the record.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from stream_pipeline.errors import WorkflowError
from stream_pipeline.workflow.definition import BoundWorkflow

__all__ = ["FRAME_FIELDS", "image_output", "workflow_record"]

FRAME_FIELDS = ("source_id", "frame_id", "pts_seconds", "captured_at")
_SEG_OUTPUTS = ("inference_id", "predictions", "model_id")


def image_output(rgb: npt.NDArray[np.uint8], quality: int = 90) -> dict[str, str]:
    """An image output as Roboflow serialises one: base64 JPEG (encoded from BGR, as OpenCV)."""
    ok, jpeg = cv2.imencode(
        ".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise WorkflowError("could not encode a visualization output as JPEG")
    return {"type": "base64", "value": base64.b64encode(jpeg.tobytes()).decode("ascii")}


def workflow_record(
    workflow: BoundWorkflow,
    prediction: Mapping[str, Any],
    visualization: Callable[[], npt.NDArray[np.uint8]] | None = None,
    include_images: bool = False,
) -> dict[str, Any]:
    """The JSONL record of one frame: the frame's origin, then each output by its name.

    ``prediction`` is the frame's ``prediction_dict``; ``visualization`` returns the annotated
    frame (RGB) and is called only when an image output is included (once per record).
    """
    record: dict[str, Any] = {k: prediction[k] for k in FRAME_FIELDS if k in prediction}
    seg_values = {
        "inference_id": prediction.get("inference_id"),
        "predictions": prediction.get("predictions"),
        "model_id": prediction.get("model_id"),
    }
    image: dict[str, str] | None = None

    def viz() -> dict[str, str]:
        nonlocal image
        if image is None:
            if visualization is None:
                raise WorkflowError("an image output was asked for but there is no visualization")
            image = image_output(visualization())
        return image

    for name, (step, output) in workflow.outputs.items():
        if step == workflow.segmentation_step:
            if output == "*":
                record[name] = {k: seg_values[k] for k in _SEG_OUTPUTS}
            else:
                record[name] = seg_values[output]
        elif step == workflow.visualization_step:
            if include_images:
                record[name] = {"image": viz()} if output == "*" else viz()
        else:
            raise WorkflowError(f"output {name!r}: step {step!r} is not part of this workflow")
    return record
