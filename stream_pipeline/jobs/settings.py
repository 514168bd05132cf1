"""The jobs service's settings and the errors its routes turn into 404 and 409."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from stream_pipeline.errors import ConfigError
from stream_pipeline.jobs.spec import JobSpec

__all__ = ["JobConflict", "JobsConfig", "UnknownJob", "spec_without"]


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
    cluster: Any = None  # a RayConfig (serve --ray): sources run on a Ray cluster's actors

    spool_root: Path | None = None  # remote sinks' spools elsewhere (a serve --ray actor)

    @property
    def spool_dir(self) -> Path:
        """Remote sinks' spools (per job and sink)."""
        return self.spool_root if self.spool_root is not None else self.state_dir / "spool"


class UnknownJob(KeyError):
    """No job (or no source in it) by that id: a 404."""


class JobConflict(ConfigError):
    """The request cannot apply to the job as it is now: a 409."""


def spec_without(job_id: str, spec: JobSpec, source_id: str) -> JobSpec:
    """``spec`` less ``source_id`` (a hot remove): :class:`UnknownJob` if the job has no such
    source, :class:`JobConflict` for its last one."""
    if not any(s.id == source_id for s in spec.sources):
        raise UnknownJob(f"no source {source_id!r} in job {job_id}")
    if len(spec.sources) == 1:
        raise JobConflict("a job keeps at least one source: DELETE the job to stop it")
    return spec.model_copy(update={"sources": [s for s in spec.sources if s.id != source_id]})
