"""Typed, frozen status snapshots: what the CLI, the HTTP API and metrics all read.

Every snapshot is taken under the locks of the parts it reads (rings, counters, sinks), so a
reader in any thread sees consistent numbers. :meth:`EngineStatus.to_dict` gives the JSON form.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = [
    "EngineStatus",
    "JobStatusView",
    "Percentiles",
    "SinkStatus",
    "SourceStatus",
    "WorkerStatus",
]


@dataclass(frozen=True, slots=True)
class Percentiles:
    """Latency percentiles in milliseconds over the recent window."""

    p50: float = 0.0
    p99: float = 0.0

    @classmethod
    def of(cls, values: list[float] | None) -> Percentiles:
        """From ``[p50, p99]`` (or nothing)."""
        if not values:
            return cls()
        return cls(round(values[0], 2), round(values[1], 2))


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """One attached source."""

    id: str
    job: str
    url: str  # credentials redacted
    state: str
    frames: int  # produced by the source
    results: int  # segmented and handed to consumers
    total_frames: int | None
    fps: float
    dropped: int  # by the ring (drop_oldest / latest)
    buffered: int  # in the ring now
    reconnects: int
    last_error: str | None
    latency_ms: Percentiles  # arrival → result
    decoder_restarts: int = 0  # child decoder processes restarted (isolated sources)


@dataclass(frozen=True, slots=True)
class SinkStatus:
    """One attached sink."""

    id: int
    type: str
    job: str
    source_id: str | None
    delivery: str
    failure: str
    state: str
    delivered: int
    pending: int  # in the hand-off ring and the sink's own buffer
    dropped: int  # by the hand-off ring and by the sink itself
    reconnects: int
    last_error: str | None


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One batching worker (one per model and device)."""

    model_id: str
    device: str
    sources: int
    frames: int
    batches: int
    mean_batch: float
    max_batch_seen: int


@dataclass(frozen=True, slots=True)
class JobStatusView:
    """One job on the engine: its sources and sinks, and the error that stopped it, if any."""

    id: str
    error: str | None
    sources: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EngineStatus:
    """The whole engine at one instant."""

    elapsed: float
    results: int
    fps: float
    sources: tuple[SourceStatus, ...]
    sinks: tuple[SinkStatus, ...]
    workers: tuple[WorkerStatus, ...]
    jobs: tuple[JobStatusView, ...]
    latency_ms: dict[str, Percentiles]  # per stage: queue, preprocess, infer, postprocess, total

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form (plain dicts, lists and numbers)."""
        return dataclasses.asdict(self)

    def for_job(self, job: str) -> EngineStatus:
        """The same snapshot limited to one job's sources and sinks."""
        sources = tuple(s for s in self.sources if s.job == job)
        results = sum(s.results for s in sources)
        return dataclasses.replace(
            self,
            results=results,
            fps=round(results / self.elapsed, 2) if self.elapsed > 0 else 0.0,
            sources=sources,
            sinks=tuple(k for k in self.sinks if k.job == job),
            jobs=tuple(j for j in self.jobs if j.id == job),
        )
