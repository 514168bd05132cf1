"""A job cut into *parts*: one source each, the unit the controller places on an actor.

A part is the job's spec with that one source and the sinks that take it. A file sink (JSONL,
video) not limited to one source writes one file per source — ``<stem>.<source id><suffix>`` —
since a job's sources may run on different nodes and two writers must never share a file; a sink
limited to the source keeps its path. Everything here is a pure function of the job's spec, so
the controller and an actor compute the same part from it, before and after any restart.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import PurePosixPath

from stream_pipeline.jobs.spec import JobSpec, JsonlSinkSpec, VideoSinkSpec

__all__ = ["Part", "assignment_version", "part_id", "parts_of"]


def part_id(job_id: str, source_id: str) -> str:
    """The name of a part (``{job}.{source}``; job ids have no dot, so it is unambiguous)."""
    return f"{job_id}.{source_id}"


def _per_source(path: str, source_id: str) -> str:
    pure = PurePosixPath(path)
    return str(pure.with_name(f"{pure.stem}.{source_id}{pure.suffix}"))


class Part:
    """One source of one job, with the job's sinks that take it (``sink_index``: their indices
    in the job's spec)."""

    __slots__ = ("id", "job_id", "sink_index", "source_id", "spec", "wire")

    def __init__(self, job_id: str, spec: JobSpec, source_id: str) -> None:
        self.job_id = job_id
        self.source_id = source_id
        self.id = part_id(job_id, source_id)
        source = next(s for s in spec.sources if s.id == source_id)
        sinks, index = [], []
        for i, sink in enumerate(spec.sinks):
            if sink.source_id not in (None, source_id):
                continue
            if isinstance(sink, JsonlSinkSpec | VideoSinkSpec) and sink.source_id is None:
                sink = sink.model_copy(update={"path": _per_source(sink.path, source_id)})
            sinks.append(sink)
            index.append(i)
        self.sink_index = tuple(index)
        self.spec = spec.model_copy(update={"sources": [source], "sinks": sinks})
        # The spec as JSON, as it travels to an actor: made once (a job's parts are made anew
        # when its spec changes), not at every round of the controller.
        self.wire = self.spec.model_dump_json()


def parts_of(job_id: str, spec: JobSpec) -> list[Part]:
    """Every part of a job, in the order of its sources."""
    return [Part(job_id, spec, s.id) for s in spec.sources]


def assignment_version(parts: Mapping[str, str]) -> str:
    """A digest of an actor's assignment (part id → spec JSON): equal iff the same parts."""
    text = json.dumps(dict(sorted(parts.items())), separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
