"""A job's :class:`~stream_pipeline.jobs.spec.JobStatus` from the engine's typed status."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from stream_pipeline.engine import EngineStatus
from stream_pipeline.jobs.spec import JobStatus, SinkStatusModel, SourceStatusModel
from stream_pipeline.redact import redact_text, redact_url

if TYPE_CHECKING:
    from stream_pipeline.jobs.runner import JobRunner

__all__ = ["job_status"]


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


def job_status(job: JobRunner, es: EngineStatus) -> JobStatus:
    """``job``'s status: every source of its spec (those not attached show the job's state,
    paused or queued), every sink, URLs and errors redacted."""
    by_id = {s.id: s for s in es.sources}
    idle = "paused" if job.paused else job.state
    sources = []
    for src in job.spec.sources:
        s = by_id.get(src.id)
        error = s.last_error if s is not None else job.open_errors.get(src.id)
        for url in job.secrets:
            error = redact_text(error, url) if error else error
        outages, outage_seconds = job.outages.of(src.id)
        sources.append(
            SourceStatusModel(
                id=src.id,
                url=redact_url(src.url),
                state=s.state if s is not None else idle,
                frames=s.frames if s else 0,
                fps=s.fps if s else 0.0,
                dropped=s.dropped if s else 0,
                reconnects=s.reconnects if s else 0,
                decoder_restarts=s.decoder_restarts if s else 0,
                outages=outages,
                outage_seconds=outage_seconds,
                last_error=error,
            )
        )
    sinks = [
        SinkStatusModel(
            type=spec.type,
            delivered=k.delivered,
            pending=k.pending,
            dropped=k.dropped,
            last_error=k.last_error,
        )
        for spec, k in zip(job.spec.sinks, es.sinks, strict=False)
    ]
    sinks += [SinkStatusModel(type=s.type) for s in job.spec.sinks[len(sinks) :]]
    return JobStatus(
        id=job.id,
        name=job.spec.name,
        state=job.state,  # type: ignore[arg-type]
        created_at=_iso(job.created_at),
        error=job.error,
        restarts=job.restarts,
        sources=sources,
        sinks=sinks,
    )
