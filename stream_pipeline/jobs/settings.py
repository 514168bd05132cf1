"""The jobs service's settings and the errors its routes turn into 404 and 409."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from stream_pipeline.errors import ConfigError
from stream_pipeline.jobs.spec import JobSpec

__all__ = ["JobConflict", "JobsConfig", "UnknownJob"]


@dataclasses.dataclass(frozen=True, slots=True)
class JobsConfig:
    """Where the jobs service keeps its state and writes its outputs."""

    state_dir: Path
    output_dir: Path
    backoff_initial: float = 1.0
    backoff_max: float = 60.0
    declared: tuple[JobSpec, ...] = ()  # --jobs FILE: created at start when absent (by name)
    max_sources: int | None = None  # --max-sources: over all active jobs
    isolate_decoders: bool = True  # each thread source decodes in a child process

    @property
    def spool_dir(self) -> Path:
        """Remote sinks' spools."""
        return self.state_dir / "spool"


class UnknownJob(KeyError):
    """No job (or no source in it) by that id: a 404."""


class JobConflict(ConfigError):
    """The request cannot apply to the job as it is now: a 409."""
