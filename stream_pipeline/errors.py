"""Error types of stream_pipeline.

One root (:class:`StreamPipelineError`); each family also subclasses the built-in it resembles, so
``except ValueError`` or ``except FileNotFoundError`` keep working for callers that know nothing
about this package. Messages are one line and name the thing that is wrong.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TypeVar

__all__ = [
    "ConfigError",
    "EngineError",
    "HubAccountError",
    "HubAuthError",
    "HubError",
    "HubIntegrityError",
    "HubModelNotFoundError",
    "HubUnavailableError",
    "ModelError",
    "ModelNotFoundError",
    "OfflineError",
    "SinkError",
    "SourceError",
    "SourceOpenError",
    "StreamPipelineError",
    "WorkflowError",
    "parse_choice",
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


class HubError(StreamPipelineError, OSError):
    """A hosted Roboflow model could not be fetched. Messages never contain the API key."""


class HubAuthError(HubError, PermissionError):
    """Roboflow refused the API key (401/403)."""


class HubAccountError(HubError, PermissionError):
    """Roboflow refused the account: payment required (402) or usage paused (423)."""


class HubModelNotFoundError(HubError, FileNotFoundError):
    """Roboflow has no such model for this key (404)."""


class HubUnavailableError(HubError, ConnectionError):
    """Roboflow's API or its file storage did not answer (5xx, timeouts), after retries."""


class HubIntegrityError(HubError):
    """A downloaded file does not match its MD5, or the package is unusable (no ONNX backend)."""


class OfflineError(ModelNotFoundError):
    """Offline mode is on and the model is not in the local cache."""


E = TypeVar("E", bound=StrEnum)


def parse_choice(cls: type[E], value: str | E, what: str) -> E:
    """The member of ``cls`` named ``value``, or a :class:`ConfigError` listing the choices."""
    try:
        return cls(value)
    except ValueError:
        names = ", ".join(member.value for member in cls)
        raise ConfigError(f"{what} must be one of {names}, got {value!r}") from None
