"""Model packages, the onnxruntime session and the block's pre/postprocessing.

The names below load on first use: importing a submodule (``model.thresholds`` for the
confidence modes, ``model.package``) must not pull in onnxruntime and numba, which the command
line's client commands and the jobs specs never need.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stream_pipeline.lazy import lazy_exports

if TYPE_CHECKING:
    from stream_pipeline.model.loading import load_model
    from stream_pipeline.model.package import InputSpec, ModelPackage, Recommended
    from stream_pipeline.model.registry import DEFAULT_MODEL_ID
    from stream_pipeline.model.segmenter import SegmentationModel
    from stream_pipeline.model.thresholds import CONFIDENCE_MODES, class_thresholds

__all__ = [
    "CONFIDENCE_MODES",
    "DEFAULT_MODEL_ID",
    "InputSpec",
    "ModelPackage",
    "Recommended",
    "SegmentationModel",
    "class_thresholds",
    "load_model",
]

_EXPORTS = {
    "CONFIDENCE_MODES": "stream_pipeline.model.thresholds",
    "DEFAULT_MODEL_ID": "stream_pipeline.model.registry",
    "InputSpec": "stream_pipeline.model.package",
    "ModelPackage": "stream_pipeline.model.package",
    "Recommended": "stream_pipeline.model.package",
    "SegmentationModel": "stream_pipeline.model.segmenter",
    "class_thresholds": "stream_pipeline.model.thresholds",
    "load_model": "stream_pipeline.model.loading",
}


__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
