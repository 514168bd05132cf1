"""Typed job specs and statuses: the request and response bodies of the jobs API (docs/jobs.md).

:class:`JobSpec` is validated whole at construction: every problem is a pydantic error whose
message starts with the field it is about (``sources.1.id: …``), so FastAPI answers 422 naming
it and nothing is created. File sink paths are relative to the service's ``--output-dir``; one
that would leave it (absolute, or ``..`` above it) is refused here, and again after symlinks are
resolved when the job is created (:func:`resolve_output`).

Source URLs may hold ``${NAME}`` references to environment variables; the spec keeps them as
written (so passwords never sit in the state database) and they are expanded only when a
source is opened (:func:`stream_pipeline.config.expand_env`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from stream_pipeline.errors import ConfigError, WorkflowError
from stream_pipeline.model.thresholds import resolve_confidence

__all__ = [
    "JobSpec",
    "JobState",
    "JobStatus",
    "JsonlSinkSpec",
    "MqttSinkSpec",
    "SinkFileModel",
    "SinkSpec",
    "SinkStatusModel",
    "SourceSpecModel",
    "SourceStatusModel",
    "VideoSinkSpec",
    "WebhookSinkSpec",
    "resolve_output",
]

JobState = Literal["queued", "starting", "running", "paused", "completed", "failed", "stopped"]
PLACEHOLDER = "<block_does_not_provide_example>"
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Strict(BaseModel):
    # Unknown fields are errors: a typo ("segment_second") must not silently use a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


class SourceSpecModel(_Strict):
    """One input of a job. ``id`` is unique in the service (it names the source in outputs)."""

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,47}$")
    url: str = Field(min_length=1, max_length=4096)
    buffer_policy: Literal["block", "drop_oldest", "latest"] | None = None
    realtime: bool = False
    max_frames: int | None = Field(default=None, ge=1)

    @field_validator("url")
    @classmethod
    def _url(cls, url: str) -> str:
        # Only the syntax of ${NAME}: whether NAME is set is known when the source opens.
        if "${" in _ENV_REF.sub("", url):
            raise ValueError("a '${' must start a reference like ${NAME}")
        return url


def _relative_path(path: str) -> str:
    pure = PurePosixPath(path)
    if pure.is_absolute() or not path.strip():
        raise ValueError(f"must be a relative path under --output-dir, got {path!r}")
    if os.path.normpath(path).split(os.sep)[0] == "..":
        raise ValueError(f"leaves --output-dir: {path!r}")
    return path


class _FileSink(_Strict):
    """A sink writing under ``--output-dir``: ``path`` is relative to it."""

    path: str
    source_id: str | None = None

    @field_validator("path")
    @classmethod
    def _path(cls, path: str) -> str:
        return _relative_path(path)


class JsonlSinkSpec(_FileSink):
    """Predictions as JSON lines (one frame a line) in ``path`` under ``--output-dir``."""

    type: Literal["jsonl"]
    with_masks: bool = True


class VideoSinkSpec(_FileSink):
    """Annotated video in segments of ``segment_seconds`` under the directory ``path``."""

    type: Literal["video"]
    segment_seconds: float = Field(default=600.0, gt=0)
    retention_max_age: float | None = Field(default=None, gt=0)
    retention_max_bytes: int | None = Field(default=None, gt=0)


class WebhookSinkSpec(_Strict):
    """POSTs of prediction lists to ``url`` (spooled, at least once; see docs/delivery.md)."""

    type: Literal["webhook"]
    url: str = Field(pattern=r"^https?://")
    secret: str | None = Field(default=None, repr=False)
    max_batch: int = Field(default=16, ge=1, le=1024)
    timeout: float = Field(default=10.0, gt=0)
    payload: Literal["full", "summary"] = "full"
    with_masks: bool = True
    source_id: str | None = None


class MqttSinkSpec(_Strict):
    """Messages to ``mqtt://host:port/topic`` (``{job}``, ``{source}``, ``{model}`` allowed)."""

    type: Literal["mqtt"]
    url: str = Field(pattern=r"^mqtts?://")
    qos: Literal[0, 1] = 1
    protocol: Literal["3.1.1", "5"] = "3.1.1"
    payload: Literal["full", "summary"] = "full"
    with_masks: bool = True
    source_id: str | None = None


SinkSpec = Annotated[
    JsonlSinkSpec | VideoSinkSpec | WebhookSinkSpec | MqttSinkSpec, Field(discriminator="type")
]


class JobSpec(_Strict):
    """A job: sources + a model (or a workflow) + sinks + a restart policy."""

    name: str = Field(min_length=1, max_length=128)
    sources: list[SourceSpecModel] = Field(min_length=1, max_length=64)
    model: str | None = Field(default=None, min_length=1)
    confidence_mode: str | float = "best"
    custom_confidence: float | None = None
    workflow: dict[str, Any] | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    sinks: list[SinkSpec] = Field(default_factory=list, max_length=16)
    restart: Literal["always", "on-failure", "never"] = "on-failure"

    @model_validator(mode="after")
    def _whole(self) -> JobSpec:
        ids = [s.id for s in self.sources]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"sources: source ids must be unique, {dup[0]!r} is repeated")
        if (self.model is None) == (self.workflow is None):
            raise ValueError("model: give exactly one of model and workflow")
        if self.workflow is None and self.parameters:
            raise ValueError("parameters: only apply with a workflow")
        if self.confidence_mode == PLACEHOLDER:
            raise ValueError(
                f"confidence_mode: {PLACEHOLDER!r} is the documentation's placeholder; "
                "use best, default, custom or a number"
            )
        try:
            mode, _ = resolve_confidence(self.confidence_mode, self.custom_confidence)
        except ConfigError as exc:
            field = "custom_confidence" if "custom_confidence" in str(exc) else "confidence_mode"
            raise ValueError(f"{field}: {exc}") from None
        if mode != "custom" and self.custom_confidence is not None:
            raise ValueError("custom_confidence: only applies with confidence_mode custom")
        for i, sink in enumerate(self.sinks):
            if sink.source_id is not None and sink.source_id not in ids:
                raise ValueError(f"sinks.{i}.source_id: no source {sink.source_id!r} in the job")
        if self.workflow is not None:
            self.bound_workflow()
        return self

    def bound_workflow(self) -> Any:
        """The workflow bound to ``parameters`` (a ``BoundWorkflow``); ``None`` with a model."""
        if self.workflow is None:
            return None
        from stream_pipeline.workflow import load_workflow

        try:
            return load_workflow(self.workflow).bind(self.parameters)
        except WorkflowError as exc:
            raise ValueError(f"workflow: {exc}") from None

    def run_model(self) -> tuple[str, str, float | None]:
        """``(model, confidence_mode, custom_confidence)`` the job's sources use."""
        bound = self.bound_workflow()
        if bound is not None:
            return bound.model_id, bound.confidence_mode, bound.custom_confidence
        assert self.model is not None
        mode, custom = resolve_confidence(self.confidence_mode, self.custom_confidence)
        return self.model, mode, custom


def resolve_output(output_dir: Path, path: str, field: str) -> Path:
    """``path`` under ``output_dir`` with symlinks resolved; :class:`ConfigError` naming
    ``field`` when it lands outside."""
    root = output_dir.resolve()
    full = (root / path).resolve()
    if not full.is_relative_to(root):
        raise ConfigError(f"{field}: leaves --output-dir: {path!r}")
    return full


class SourceStatusModel(BaseModel):
    """One source of a job, as the API shows it (credentials redacted)."""

    id: str
    url: str
    state: str
    frames: int = 0
    fps: float = 0.0
    dropped: int = 0
    reconnects: int = 0
    decoder_restarts: int = 0
    outages: int = 0  # times the service was down (restart, crash) while this live source ran
    outage_seconds: float = 0.0  # their length in all, from the last heartbeat to the next frame
    last_error: str | None = None
    # With ``serve --ray``: the actor that runs the source and the address of its node.
    actor: str | None = None
    node: str | None = None


class SinkFileModel(BaseModel):
    """Where a file sink writes one source's output (``serve --ray``: on the node that runs it)."""

    source: str
    node: str | None = None
    path: str


class SinkStatusModel(BaseModel):
    """One sink of a job."""

    type: str
    delivered: int = 0
    pending: int = 0
    dropped: int = 0
    last_error: str | None = None
    files: list[SinkFileModel] = Field(default_factory=list)  # serve --ray only


class JobStatus(BaseModel):
    """A job now: its state, error and counters (``created_at``: ISO 8601 UTC)."""

    id: str
    name: str
    state: JobState
    created_at: str
    error: str | None = None
    restarts: int = 0
    sources: list[SourceStatusModel] = Field(default_factory=list)
    sinks: list[SinkStatusModel] = Field(default_factory=list)
