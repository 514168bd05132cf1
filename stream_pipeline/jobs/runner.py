"""One job on the shared engine: :class:`JobRunner` drives it through its states.

queued → starting → running ⇄ paused → completed | failed | stopped. An error that keeps a job
from starting (a missing model, a bad workflow, an unset ``${ENV}``, an output that cannot be
written) puts it in ``failed`` with the message, with no retry. A failure while it runs (a
critical sink, a source that cannot be opened) is retried by the restart policy with exponential
backoff. Pause, resume, hot add and remove of a source and stop come from the API, one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from stream_pipeline.buffer import DropPolicy
from stream_pipeline.config import expand_env
from stream_pipeline.consumers.base import Sink
from stream_pipeline.engine import (
    EngineStatus,
    HostNeeds,
    SinkRunner,
    SourceHandle,
    Thresholds,
)
from stream_pipeline.errors import SourceError
from stream_pipeline.jobs.outage import Outages
from stream_pipeline.jobs.outputs import ResumeSink, build_sink, jsonl_checkpoints
from stream_pipeline.jobs.settings import JobConflict, spec_with, spec_without
from stream_pipeline.jobs.spec import (
    JobStatus,
    SourceSpecModel,
    VideoSinkSpec,
)
from stream_pipeline.jobs.store import JobRecord
from stream_pipeline.jobs.view import job_status
from stream_pipeline.redact import redact_text
from stream_pipeline.sources import AnySource, SourceSpec
from stream_pipeline.sources.isolated import isolate

if TYPE_CHECKING:
    from stream_pipeline.jobs.supervisor import Supervisor

__all__ = ["JobRunner"]

log = logging.getLogger(__name__)
_POLL = 0.2  # seconds between looks at a running job (ends, errors, checkpoints)


class JobRunner:
    """One job: its task, its engine sources and sinks, its state."""

    def __init__(self, sup: Supervisor, record: JobRecord) -> None:
        self.sup = sup
        self.id = record.id
        self.spec = record.spec
        self.state = record.state
        self.error = record.error
        self.created_at = record.created_at
        self.paused = record.state == "paused"
        self.restarts = 0
        self.engine_job = f"{self.id}~0"
        self.handles: dict[str, SourceHandle] = {}
        self.runners: list[SinkRunner] = []
        # Its sinks are attached (a job may have none): sources may be added and started.
        self.attached = False
        self.sinks: list[ResumeSink] = []
        self.secrets: list[str] = []  # expanded URLs, to redact from every message
        self.control = asyncio.Lock()  # one pause/resume/add/remove/stop at a time
        self.wake = asyncio.Event()
        self.stopping = False
        self.task: asyncio.Task[None] | None = None
        self.last: EngineStatus | None = None  # the last run's counts, once it ended
        self.outages = Outages()  # of live sources across service restarts
        self.open_errors: dict[str, str] = {}  # source id → why it could not be opened (redacted)

    # -- state -----------------------------------------------------------------------------

    async def _set(self, state: str, error: str | None = None) -> None:
        self.state, self.error = state, error
        if not self.sup.closing:  # a service shutting down leaves jobs as they were, to resume
            await self.sup.store.aset_state(self.id, state, error)

    def message(self, exc: BaseException) -> str:
        """``exc`` as one line, with the job's expanded URLs redacted."""
        text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        for url in self.secrets:
            text = redact_text(text, url)
        return text

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the job until it completes, fails, is stopped or the service closes."""
        try:
            await self._run()
        except Exception as exc:
            # A bug here must show as the job's failure, never as a job that says "running".
            log.exception("job %s: internal error", self.id)
            with contextlib.suppress(Exception):
                await self._teardown()
            await self._set("failed", f"internal error: {self.message(exc)}")

    async def _run(self) -> None:
        delay = self.sup.config.backoff_initial
        while True:
            error: str | None
            if not self.paused:
                # A retry shows the last attempt's error until it opens (or fails in turn).
                await self._set("starting", self.error if self.state == "starting" else None)
            try:
                await self._start()
            except asyncio.CancelledError:
                await self._teardown()
                raise
            except SourceError as exc:
                # A source that cannot be opened now (camera down) may open later: retried.
                await self._teardown()
                error = self.message(exc)
            except Exception as exc:
                await self._teardown()
                await self._set("failed", self.message(exc))
                log.error("job %s failed to start: %s", self.id, self.error)
                return
            else:
                if not self.paused:
                    await self._set("running")
                error = await self._watch()
            if self.stopping or self.sup.closing:
                if self.stopping:
                    await self._set("stopped")
                return
            if error is None:
                await self._set("completed")
                return
            if self.spec.restart == "never":
                await self._set("failed", error)
                return
            log.warning("job %s failed (%s); restarting in %.1f s", self.id, error, delay)
            await self._set("starting", error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), delay)
            self.wake.clear()
            delay = min(delay * 2, self.sup.config.backoff_max)
            self.restarts += 1
            self.engine_job = f"{self.id}~{self.restarts}"
            if self.stopping or self.sup.closing:
                if self.stopping:
                    await self._set("stopped")
                return

    def _model(self) -> tuple[str, Thresholds]:
        model, mode, custom = self.spec.run_model()
        return model, Thresholds(mode, custom)

    async def _start(self) -> None:
        # Under the control lock: a pause or a hot add waits until the job's sources and sinks
        # are all attached, instead of racing them.
        async with self.control:
            await self._attach()

    async def _attach(self) -> None:
        engine, config = self.sup.engine, self.sup.config
        model, _ = self._model()
        spec = self.spec
        files = [s.id for s in spec.sources if not self.is_live(s)]
        stored = await asyncio.to_thread(self.sup.store.checkpoints, self.id)
        annotator = None
        if any(isinstance(s, VideoSinkSpec) for s in spec.sinks):
            annotator = await asyncio.to_thread(self.sup.annotator, model)
        self.handles, self.runners = {}, []
        built: list[tuple[str, Sink, Path | None, str | None]] = []
        workflow = spec.bound_workflow()  # a workflow job's JSONL holds its outputs by name
        for i, sink_spec in enumerate(spec.sinks):
            sink, jsonl = build_sink(
                i, sink_spec, config.output_dir, config.spool_dir, self.id, annotator, workflow
            )
            built.append((f"{i}:{sink_spec.type}", sink, jsonl, sink_spec.source_id))
        self.sinks = []
        for key, sink, jsonl, only in built:
            if jsonl is not None:
                skip = await asyncio.to_thread(jsonl_checkpoints, jsonl, files)
            else:
                skip = {sid: fid for (k, sid), fid in stored.items() if k == key}
            wrapped = ResumeSink(sink, key, only, skip)
            wrapped.file_sources = frozenset(files)
            self.sinks.append(wrapped)
        if not self.paused:
            for source in spec.sources:
                await self._add(source, start=False)
        for wrapped in self.sinks:
            self.runners.append(await engine.attach_sink(wrapped, job=self.engine_job, model=model))
        self.attached = True
        for sid in self.handles:
            engine.start_source(sid)

    def _source_spec(self, source: SourceSpecModel, expand: bool = True) -> SourceSpec:
        url = expand_env(source.url) if expand else source.url
        if expand and url != source.url:
            self.secrets.append(url)
        policy = DropPolicy(source.buffer_policy) if source.buffer_policy else None
        return SourceSpec(
            url=url,
            id=source.id,
            buffer_policy=policy,
            realtime=source.realtime,
            max_frames=source.max_frames,
        )

    def is_live(self, source: SourceSpecModel) -> bool:
        """Whether ``source`` is live (reconnects) rather than a file (continues)."""
        return self._source_spec(source, expand=False).live

    async def _add(self, source: SourceSpecModel, start: bool) -> None:
        model, thresholds = self._model()
        pixels = any(isinstance(s, VideoSinkSpec) for s in self.spec.sinks)
        try:
            spec = self._source_spec(source)
            built: SourceSpec | AnySource = spec
            if self.sup.config.isolate_decoders:
                # Decoding in a child process: a decoder crash costs a restart, not the service.
                built = await asyncio.to_thread(isolate, spec)
            handle = await self.sup.engine.add_source(
                built,
                model=model,
                thresholds=thresholds,
                job=self.engine_job,
                needs=HostNeeds(pixels=pixels),
                start=start,
            )
        except SourceError as exc:
            # Not attached, so the engine has no status of it: the source shows this until the
            # next attempt opens it.
            self.open_errors[source.id] = self.message(exc)
            raise
        self.open_errors.pop(source.id, None)
        self.handles[source.id] = handle

    async def _watch(self) -> str | None:
        """Until the job ends: ``None`` when its sources all ended well, else the error."""
        engine = self.sup.engine
        ticks = 0
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), _POLL)
            self.wake.clear()
            ticks += 1
            if ticks % 5 == 0:
                await self._save_checkpoints()
            if self.outages.open:
                await self._close_outages()
            error = engine.job_error(self.engine_job)
            if error is not None:
                await self._teardown()
                return self.message(error)
            if self.stopping or self.sup.closing:
                await self._teardown()
                return None
            if self.paused or engine.sources_of(self.engine_job):
                continue
            await self._teardown()
            # The ended sources are in the snapshot the teardown took (no longer in the engine).
            ended = self.last.sources if self.last is not None else ()
            failed = [s for s in ended if s.state == "failed"]
            if failed:
                return f"source {failed[0].id}: {failed[0].last_error or 'failed'}"
            return None

    async def _close_outages(self) -> None:
        frames = {s.id: s.frames for s in self._engine_status().sources}
        for sid, count, seconds in self.outages.observe(frames):
            await self.sup.store.aset_outage(self.id, sid, count, seconds)
            log.info(
                "job %s: source %s is back (%d outages, %.1f s in all)",
                self.id,
                sid,
                count,
                seconds,
            )

    async def _save_checkpoints(self) -> None:
        for wrapped in self.sinks:
            for sid, fid in wrapped.checkpoint().items():
                await self.sup.store.aset_checkpoint(self.id, wrapped.key, sid, fid)

    async def _teardown(self) -> None:
        """Stop the sources (letting buffered frames finish), flush and close the sinks."""
        engine = self.sup.engine
        for sid in list(self.handles):
            await engine.remove_source(sid, hard=self.sup.closing, missing_ok=True)
        engine.end_job(self.engine_job)
        await engine.wait_sinks(self.engine_job)
        if self.sinks:
            await self._save_checkpoints()
        # The ended run's counts stay as a snapshot; its handles go, or every ended job would
        # keep its model (an onnxruntime session) alive after the engine released it.
        self.last = self._engine_status()
        engine.forget_job(self.engine_job)
        self.handles, self.runners, self.sinks = {}, [], []
        self.attached = False

    # -- control (from the API) ------------------------------------------------------------

    async def pause(self) -> None:
        """Stop the sources; sinks stay open. A file source continues after its last frame."""
        async with self.control:
            if self.state in ("completed", "failed", "stopped"):
                raise JobConflict(f"job {self.id} is {self.state}: it cannot be paused")
            if self.paused:
                return
            self.paused = True
            for sid in list(self.handles):
                await self.sup.engine.remove_source(sid, missing_ok=True)
            self.handles.clear()
            await self._set("paused")

    async def resume(self) -> None:
        """Start the sources again."""
        async with self.control:
            if not self.paused:
                if self.state in ("completed", "failed", "stopped"):
                    raise JobConflict(f"job {self.id} is {self.state}: it cannot be resumed")
                return
            if self.state == "paused" and self.attached:
                for source in self.spec.sources:
                    await self._add(source, start=True)
            self.paused = False
            await self._set("running")
            self.wake.set()

    async def add_source(self, source: SourceSpecModel) -> None:
        """Hot-add a source (it starts now unless the job is paused)."""
        async with self.control:
            spec = spec_with(self.id, self.state, self.spec, source)
            self.sup.check_free([source.id])
            live = self.is_live(source)
            if not self.paused and self.attached:
                try:
                    await self._add(source, start=True)
                except Exception:
                    self.open_errors.pop(source.id, None)  # refused: not a source of the job
                    raise
            if not live:
                for wrapped in self.sinks:
                    wrapped.file_sources = wrapped.file_sources | {source.id}
            self.spec = spec
            await self.sup.store.aset_spec(self.id, spec)

    async def remove_source(self, source_id: str) -> None:
        """Hot-remove a source (its buffered frames finish)."""
        async with self.control:
            spec = spec_without(self.id, self.spec, source_id)
            self.spec = spec
            await self.sup.store.aset_spec(self.id, spec)
            if source_id in self.handles:
                await self.sup.engine.remove_source(source_id, missing_ok=True)
                self.handles.pop(source_id, None)

    async def stop(self) -> None:
        """Stop the job: sources end, sinks flush and close; wait for it."""
        async with self.control:
            self.stopping = True
            self.wake.set()
        # Not under the lock: the job's task may need it to finish starting before it stops.
        if self.task is not None:
            await asyncio.shield(self.task)
        if self.state not in ("completed", "failed", "stopped"):
            await self._set("stopped")

    # -- status ----------------------------------------------------------------------------

    def _engine_status(self) -> EngineStatus:
        engine = self.sup.engine
        return engine.status(self.handles.values(), self.runners).for_job(self.engine_job)

    def status(self) -> JobStatus:
        """The job now, from the engine's typed status (credentials redacted)."""
        attached = self.handles or self.runners
        es = self.last if self.last is not None and not attached else self._engine_status()
        return job_status(self, es)
