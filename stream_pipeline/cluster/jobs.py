"""A job of ``serve --ray`` as the API sees it: its spec and state here, its parts on actors.

:class:`ClusterJob` answers the same calls as the jobs service's ``JobRunner`` (status, pause,
resume, stop, hot add and remove of a source), but runs nothing itself: the controller places
its parts and reads their statuses back from the actors. Its status is theirs put together —
each source from the part that runs it, with the actor and the node; each sink's counters summed
over the parts, and for a file sink where each source's file is.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from stream_pipeline.cluster.parts import Part, parts_of
from stream_pipeline.jobs.settings import JobConflict, spec_with, spec_without
from stream_pipeline.jobs.spec import (
    JobSpec,
    JobStatus,
    SinkFileModel,
    SinkStatusModel,
    SourceSpecModel,
    SourceStatusModel,
)
from stream_pipeline.redact import redact_url

if TYPE_CHECKING:
    from stream_pipeline.cluster.controller import Controller

__all__ = ["ENDED", "ClusterJob"]

ENDED = ("completed", "failed", "stopped")


class ClusterJob:
    """See the module docstring."""

    def __init__(
        self, ctl: Controller, job_id: str, spec: JobSpec, state: str, error: str | None,
        created_at: float,
    ) -> None:  # fmt: skip
        self.ctl = ctl
        self.id = job_id
        self.spec = spec
        self.state = state
        self.error = error
        self.created_at = created_at
        self.restarts = 0
        self.parts: dict[str, Part] = {p.source_id: p for p in parts_of(job_id, spec)}
        # The last status each part reported, kept once it is done or its actor is gone.
        self.last: dict[str, dict[str, Any]] = {}

    @property
    def paused(self) -> bool:
        """Paused by the API."""
        return self.state == "paused"

    @property
    def active(self) -> bool:
        """Its parts should run (placed on actors)."""
        return self.state not in (*ENDED, "paused")

    def message(self, exc: BaseException) -> str:
        """``exc`` as one line."""
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__

    def _set_spec(self, spec: JobSpec) -> None:
        self.spec = spec
        self.parts = {p.source_id: p for p in parts_of(self.id, spec)}

    # -- control (from the API; the controller applies it on its next round) ---------------

    async def pause(self) -> None:
        """Take its parts off the actors (file parts continue after their last line later)."""
        if self.state in ENDED:
            raise JobConflict(f"job {self.id} is {self.state}: it cannot be paused")
        if not self.paused:
            await self.ctl.set_state(self, "paused")
            await self.ctl.settle(self)

    async def resume(self) -> None:
        """Place its parts again."""
        if not self.paused:
            if self.state in ENDED:
                raise JobConflict(f"job {self.id} is {self.state}: it cannot be resumed")
            return
        await self.ctl.set_state(self, "starting")
        self.ctl.wake()

    async def stop(self) -> None:
        """Stop it: its parts leave the actors, whose sinks flush and close; wait for them."""
        if self.state not in ENDED:
            await self.ctl.set_state(self, "stopped")
        await self.ctl.settle(self)

    async def add_source(self, source: SourceSpecModel) -> None:
        """Hot-add a source: a new part, placed on the next round."""
        spec = spec_with(self.id, self.state, self.spec, source)
        self.ctl.check_free([source.id])
        await self.ctl.set_spec(self, spec)
        self._set_spec(spec)
        self.ctl.wake()

    async def remove_source(self, source_id: str) -> None:
        """Hot-remove a source: its part leaves its actor (its buffered frames finish)."""
        spec = spec_without(self.id, self.spec, source_id)
        await self.ctl.set_spec(self, spec)
        self._set_spec(spec)
        self.last.pop(source_id, None)
        await self.ctl.settle(self)

    # -- status ----------------------------------------------------------------------------

    def status(self) -> JobStatus:
        """Its parts' statuses put together (see the module docstring)."""
        sources: list[SourceStatusModel] = []
        sinks = [SinkStatusModel(type=s.type) for s in self.spec.sinks]
        for src in self.spec.sources:
            part = self.parts[src.id]
            where = self.ctl.where(self.id, src.id)
            done = self.ctl.is_done(part)
            reported = self.ctl.part_status(part.id)
            if reported is not None:
                self.last[src.id] = reported
            elif done or not self.active:
                # Ended or paused: what it reported last. A part that should run but has no
                # report yet (just placed, or moved) shows nothing of its previous run.
                reported = self.last.get(src.id)
            count, seconds = self.ctl.outage_of(self.id, src.id)
            s = reported["sources"][0] if reported and reported["sources"] else None
            state = _source_state(self, s, where is not None, done)
            sources.append(
                SourceStatusModel(
                    id=src.id,
                    url=redact_url(src.url),
                    state=state,
                    frames=s["frames"] if s else 0,
                    fps=s["fps"] if s and where else 0.0,
                    dropped=s["dropped"] if s else 0,
                    reconnects=s["reconnects"] if s else 0,
                    decoder_restarts=s["decoder_restarts"] if s else 0,
                    outages=count,
                    outage_seconds=seconds,
                    last_error=(s["last_error"] if s else None) or self.ctl.refusal(part.id),
                    actor=where.name if where else None,
                    node=where.address if where else None,
                )
            )
            if reported is None:
                continue
            for k, i in enumerate(part.sink_index):
                if k >= len(reported["sinks"]):
                    break
                got, total = reported["sinks"][k], sinks[i]
                total.delivered += got["delivered"]
                total.pending += got["pending"]
                total.dropped += got["dropped"]
                total.last_error = total.last_error or got["last_error"]
                path = getattr(part.spec.sinks[k], "path", None)
                if path is not None:
                    node = self.ctl.ran_on_address(self.id, src.id)
                    total.files.append(SinkFileModel(source=src.id, node=node, path=path))
        return JobStatus(
            id=self.id,
            name=self.spec.name,
            state=self.state,  # type: ignore[arg-type]
            created_at=dt.datetime.fromtimestamp(self.created_at, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            error=self.error,
            restarts=self.restarts,
            sources=sources,
            sinks=sinks,
        )


def _source_state(job: ClusterJob, s: dict[str, Any] | None, placed: bool, done: bool) -> str:
    """A source's state: its part's last report where that still holds, else the job's."""
    if done and s is not None:
        return str(s["state"])  # finished (or failed) where it ran
    if job.paused:
        return "paused"
    if not job.active:
        ended = s is not None and s["state"] in ("finished", "failed")
        return str(s["state"]) if ended and s is not None else job.state
    if s is None:
        return "starting" if placed else "queued"
    return str(s["state"])
