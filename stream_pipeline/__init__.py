"""stream_pipeline: live semantic segmentation on video streams.

The model semantics and the prediction format are those of the Roboflow Workflows block
"Semantic Segmentation Model" (v1/v2).

The package's face is lazy: ``import stream_pipeline`` (or ``stream_pipeline.errors``) loads
neither onnxruntime nor PyAV nor numba; each name below is imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stream_pipeline.lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    "ConfigError": "stream_pipeline.errors",
    "EngineError": "stream_pipeline.errors",
    "ModelError": "stream_pipeline.errors",
    "ModelNotFoundError": "stream_pipeline.errors",
    "SinkError": "stream_pipeline.errors",
    "SourceError": "stream_pipeline.errors",
    "SourceOpenError": "stream_pipeline.errors",
    "StreamPipelineError": "stream_pipeline.errors",
    "WorkflowError": "stream_pipeline.errors",
    "Frame": "stream_pipeline.frames",
    "FrameMeta": "stream_pipeline.frames",
    "SegResult": "stream_pipeline.frames",
    "StageTimings": "stream_pipeline.frames",
    "SegmentationModel": "stream_pipeline.model",
    "load_model": "stream_pipeline.model",
    "Engine": "stream_pipeline.engine",
    "Thresholds": "stream_pipeline.engine",
    "Pipeline": "stream_pipeline.pipeline",
    "PipelineConfig": "stream_pipeline.pipeline",
    "ReconnectPolicy": "stream_pipeline.retry",
    "SourceSpec": "stream_pipeline.sources",
    "load_workflow": "stream_pipeline.workflow",
    "JobsClient": "stream_pipeline.jobs.client",
    "JobsClientError": "stream_pipeline.jobs.client",
}

__all__ = [
    "ConfigError",
    "Engine",
    "EngineError",
    "Frame",
    "FrameMeta",
    "JobsClient",
    "JobsClientError",
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
    "Thresholds",
    "WorkflowError",
    "load_model",
    "load_workflow",
]

if TYPE_CHECKING:
    from stream_pipeline.engine import Engine, Thresholds
    from stream_pipeline.errors import (
        ConfigError,
        EngineError,
        ModelError,
        ModelNotFoundError,
        SinkError,
        SourceError,
        SourceOpenError,
        StreamPipelineError,
        WorkflowError,
    )
    from stream_pipeline.frames import Frame, FrameMeta, SegResult, StageTimings
    from stream_pipeline.jobs.client import JobsClient, JobsClientError
    from stream_pipeline.model import SegmentationModel, load_model
    from stream_pipeline.pipeline import Pipeline, PipelineConfig
    from stream_pipeline.retry import ReconnectPolicy
    from stream_pipeline.sources import SourceSpec
    from stream_pipeline.workflow import load_workflow


__getattr__ = lazy_exports(__name__, _EXPORTS)
