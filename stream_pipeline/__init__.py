"""stream_pipeline: live semantic segmentation on video streams.

The model semantics and the prediction format are those of the Roboflow Workflows block
"Semantic Segmentation Model" (v1/v2).
"""

from stream_pipeline.config import apply_runtime_defaults

apply_runtime_defaults()  # before anything imports numba's kernels

from stream_pipeline.errors import (
    ConfigError,
    ModelError,
    ModelNotFoundError,
    SinkError,
    SourceError,
    SourceOpenError,
    StreamPipelineError,
    WorkflowError,
)
from stream_pipeline.frames import Frame, FrameMeta, SegResult, StageTimings
from stream_pipeline.model import SegmentationModel, load_model
from stream_pipeline.pipeline import Pipeline, PipelineConfig
from stream_pipeline.sources import ReconnectPolicy, SourceSpec
from stream_pipeline.workflow import load_workflow

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "Frame",
    "FrameMeta",
    "ModelError",
    "ModelNotFoundError",
    "Pipeline",
    "PipelineConfig",
    "ReconnectPolicy",
    "SegResult",
    "SegmentationModel",
    "SinkError",
    "SourceError",
    "SourceOpenError",
    "SourceSpec",
    "StageTimings",
    "StreamPipelineError",
    "WorkflowError",
    "load_model",
    "load_workflow",
]
