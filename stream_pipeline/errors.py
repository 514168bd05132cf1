"""Error types of stream_pipeline.

One root (:class:`StreamPipelineError`); each family also subclasses the built-in it resembles, so
``except ValueError`` or ``except FileNotFoundError`` keep working for callers that know nothing
about this package. Messages are one line and name the thing that is wrong.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EngineError",
    "ModelError",
    "ModelNotFoundError",
    "SinkError",
    "SourceError",
    "SourceOpenError",
    "StreamPipelineError",
    "WorkflowError",
]


class StreamPipelineError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(StreamPipelineError, ValueError):
    """A configuration value (CLI flag, config field, job spec) is invalid or conflicts."""


class ModelError(StreamPipelineError, ValueError):
    """A model package is invalid: bad ``model.json``, not ONNX, inconsistent outputs."""


class ModelNotFoundError(StreamPipelineError, FileNotFoundError):
    """A model id or path resolves to nothing."""


class WorkflowError(StreamPipelineError, ValueError):
    """A workflow definition is invalid; the message names the step and the field."""


class SourceError(StreamPipelineError, OSError):
    """A source failed while streaming (decode error, connection lost)."""


class SourceOpenError(SourceError):
    """A source could not be opened (missing file, not a video, unreachable URL, 401)."""


class SinkError(StreamPipelineError, OSError):
    """A sink cannot write (path not writable, encoder failure)."""


class EngineError(StreamPipelineError, RuntimeError):
    """The engine cannot take the request: it is closing, or its worker failed."""
