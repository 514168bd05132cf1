"""The jobs service's settings and the errors its routes turn into 404 and 409."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from stream_pipeline.errors import ConfigError
from stream_pipeline.jobs.spec import JobSpec, SourceSpecModel

__all__ = [
    "JobConflict",
    "JobsConfig",
    "UnknownJob",
    "check_sources_free",
    "spec_with",
    "spec_without",
]


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


def spec_with(job_id: str, state: str, spec: JobSpec, source: SourceSpecModel) -> JobSpec:
    """``spec`` plus ``source`` (a hot add): :class:`JobConflict` if the job has ended or
    already has a source of that id."""
    if state in ("completed", "failed", "stopped"):
        raise JobConflict(f"job {job_id} is {state}: no source can be added")
    if any(s.id == source.id for s in spec.sources):
        raise JobConflict(f"source id {source.id!r} is already in job {job_id}")
    return spec.model_copy(update={"sources": [*spec.sources, source]})


def spec_without(job_id: str, spec: JobSpec, source_id: str) -> JobSpec:
    """``spec`` less ``source_id`` (a hot remove): :class:`UnknownJob` if the job has no such
    source, :class:`JobConflict` for its last one."""
    if not any(s.id == source_id for s in spec.sources):
        raise UnknownJob(f"no source {source_id!r} in job {job_id}")
    if len(spec.sources) == 1:
        raise JobConflict("a job keeps at least one source: DELETE the job to stop it")
    return spec.model_copy(update={"sources": [s for s in spec.sources if s.id != source_id]})


def check_sources_free(
    active: Iterable[tuple[str, JobSpec]], source_ids: list[str], limit: int | None
) -> None:
    """:class:`JobConflict` if one of the ``active`` jobs (id, spec) already has one of
    ``source_ids``, or if they would take the service beyond ``limit`` (``--max-sources``)."""
    jobs = list(active)
    if limit is not None:
        running = sum(len(spec.sources) for _, spec in jobs)
        if running + len(source_ids) > limit:
            raise JobConflict(
                f"the service runs at most {limit} sources (--max-sources); {running} are in use"
            )
    for job_id, spec in jobs:
        taken = {s.id for s in spec.sources} & set(source_ids)
        if taken:
            raise JobConflict(f"source id {sorted(taken)[0]!r} is in use by job {job_id}")
