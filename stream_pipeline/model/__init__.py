"""Model packages, the onnxruntime session and the block's pre/postprocessing."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from stream_pipeline.config import read_environment
from stream_pipeline.model.package import InputSpec, ModelPackage, Recommended
from stream_pipeline.model.registry import DEFAULT_MODEL_ID, resolve_package
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


def load_model(
    ref: str = "default",
    device: str = "auto",
    threads: int | None = None,
    class_names: Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    registry: Path | None = None,
) -> SegmentationModel:
    """Resolve ``ref`` (``default``, ``project/version``, a package directory or a bare ``.onnx``
    with ``class_names``) and load it with an onnxruntime session on ``device``."""
    root = registry if registry is not None else read_environment().models_dir
    package = resolve_package(ref, root, class_names=class_names, input_size=input_size)
    return SegmentationModel(package, device=device, threads=threads)
