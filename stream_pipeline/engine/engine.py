"""The engine: one per process; models, their batching workers, and everything attached to them.

```python
async with Engine() as engine:                      # CPU, the shipped model as default
    cam = await engine.add_source(SourceSpec("rtsp://…", id="gate"))
    async for result in engine.subscribe("gate", delivery="latest"):
        ...
```

Sources and consumers are attached and detached while it runs. Frames of every source that uses
the same model (and device) are batched together, whatever job they belong to; each frame keeps its
own source's thresholds. A model is loaded once and released when no source uses it. A *job* is a
name that groups sources and sinks: a ``critical`` sink's failure, or a programming error in one of
its sources, stops that job only; a worker failure stops the engine and is raised to every caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from stream_pipeline.buffer import RingBuffer
from stream_pipeline.consumers.base import Delivery, Sink, SinkContext
from stream_pipeline.engine.batcher import Attachment
from stream_pipeline.engine.fanout import Router, Subscription
from stream_pipeline.engine.handles import SourceHandle
from stream_pipeline.engine.models import ModelPool, check_thresholds
from stream_pipeline.engine.sinks import SinkRunner
from stream_pipeline.engine.status import (
    EngineStatus,
    JobStatusView,
    Percentiles,
)
from stream_pipeline.errors import ConfigError, EngineError, SourceError
from stream_pipeline.frames import Frame, SegResult
from stream_pipeline.logs import carry_context
from stream_pipeline.sources import AnySource, AsyncSource, SourceSpec, make_source
from stream_pipeline.stats import LatencyStats
from stream_pipeline.worker import HostNeeds, Thresholds

if TYPE_CHECKING:  # importing the model loads onnxruntime: only where it is needed
    from stream_pipeline.model.segmenter import SegmentationModel

__all__ = ["Engine", "SourceHandle"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Job:
    id: str
    error: BaseException | None = None


class Engine:
    """See the module docstring. Use ``async with``; every method is called on the loop."""

    def __init__(
        self,
        device: str = "auto",
        model: str = "default",
        threads: int | None = None,
        max_batch: int = 4,
        max_wait_ms: float = 5.0,
        consumer_buffer: int = 8,
        registry: Any = None,
        worker: str = "auto",
    ) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be ≥ 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be ≥ 0, got {max_wait_ms}")
        self.device = device
        self.default_model = model
        self.threads = threads
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self.consumer_buffer = consumer_buffer
        self.registry = registry
        self.router = Router()
        self.latency = LatencyStats()
        self.started_at = time.monotonic()
        self.models = ModelPool(
            lambda: self.loop,
            device,
            model,
            threads,
            registry,
            max_batch,
            max_wait_ms,
            self._dispatch,
            self._ended,
            self._worker_failed,
            worker,
        )
        self._sources: dict[str, SourceHandle] = {}
        self._sinks: list[SinkRunner] = []
        self._jobs: dict[str, _Job] = {}
        self._stopping = threading.Event()
        self._results = 0
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Future[None] | None = None
        self._releasing: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Engine:
        self._loop = asyncio.get_running_loop()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The loop the engine runs on (set on entry)."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    @property
    def error(self) -> BaseException | None:
        """The worker failure that stopped the engine, if any."""
        return self._error

    def _check_running(self) -> None:
        if self._error is not None:
            raise EngineError(f"the engine stopped: {self._error}") from self._error
        if self._stopping.is_set():
            raise EngineError("the engine is closing")

    async def aclose(self) -> None:
        """Stop every source, consumer and worker at once, and wait for them (idempotent)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = self.loop.create_future()
        try:
            self._stopping.set()
            for handle in list(self._sources.values()):
                handle.halt(True)
            self.router.close_all()
            for handle in list(self._sources.values()):
                await self._join_source(handle)
            for runner in list(self._sinks):
                await runner.close()
            if self._releasing:
                await asyncio.gather(*self._releasing, return_exceptions=True)
            await self.models.close()
        finally:
            self._closing.set_result(None)

    # -- models ----------------------------------------------------------------------------

    def _worker_failed(self, exc: BaseException) -> None:
        """From a worker thread: a failure there stops the whole engine."""
        if self._error is None:
            self._error = exc
        log.error("worker failed: %s", exc)
        self._stopping.set()
        self.router.close_all()
        with contextlib.suppress(RuntimeError):  # the loop may be closed already
            self.loop.call_soon_threadsafe(self._abort_sources)

    def _abort_sources(self) -> None:
        """After a worker failure no end marker will come: end every source here."""
        for handle in list(self._sources.values()):
            handle.halt(True)
            self._finish_source(handle)

    # -- sources ---------------------------------------------------------------------------

    async def add_source(
        self,
        spec: SourceSpec | AnySource,
        model: str | SegmentationModel | None = None,
        thresholds: Thresholds | None = None,
        job: str = "default",
        needs: HostNeeds | None = None,
        start: bool = True,
    ) -> SourceHandle:
        """Open a source (off the loop) and attach it to its model's worker.

        ``thresholds`` (default ``best``) are checked against the model now, so a wrong mode fails
        here. With ``start=False`` the source is opened and attached but produces nothing until
        :meth:`start_source` (attach sinks in between so that they miss nothing). Source ids are
        unique in the engine: a second one is a :class:`ConfigError`.
        """
        self._check_running()
        source = make_source(spec) if isinstance(spec, SourceSpec) else spec
        sid = source.spec.id
        if sid in self._sources:
            raise ConfigError(f"source id {sid!r} is already attached")
        thresholds = thresholds or Thresholds()
        entry = await self.models.acquire(model)
        try:
            await asyncio.to_thread(check_thresholds, entry.model, thresholds)
            if isinstance(source, AsyncSource):
                await source.open()
            else:  # what the open logs (an isolated decoder's lines) names the source too
                await asyncio.to_thread(carry_context(source.open, source=sid))
        except BaseException:
            if not isinstance(source, AsyncSource):
                await asyncio.to_thread(source.close)
            await self.models.release(entry)
            raise
        if sid in self._sources:  # attached by someone else while this one was opening
            await asyncio.to_thread(source.close)
            await self.models.release(entry)
            raise ConfigError(f"source id {sid!r} is already attached")
        ring: RingBuffer[Frame] = RingBuffer(
            source.spec.buffer_size, source.spec.policy, doorbell=entry.batcher.doorbell
        )
        attachment = Attachment(sid, job, ring, thresholds, needs or HostNeeds())
        handle = SourceHandle(source, attachment, entry, self.loop.create_future())
        self._sources[sid] = handle
        self._jobs.setdefault(job, _Job(job))
        entry.batcher.attach(attachment)
        if start:
            self.start_source(sid)
        return handle

    def start_source(self, source_id: str) -> None:
        """Start a source added with ``start=False`` (idempotent)."""
        handle = self._handle(source_id)
        handle.start(self.loop, lambda exc: self._source_failed(handle, exc))

    def _source_failed(self, handle: SourceHandle, exc: BaseException) -> None:
        """A source's loop raised: a source error is the source's own; anything else its job's."""
        if isinstance(exc, SourceError):
            handle.source.status.set_error(str(exc).splitlines()[0] if str(exc) else repr(exc))
            from stream_pipeline.sources import SourceState

            handle.source.status.set_state(SourceState.FAILED)
            log.error("source %s failed: %s", handle.id, exc)
            return
        self._fail_job(handle.job, exc)

    def _handle(self, source_id: str) -> SourceHandle:
        handle = self._sources.get(source_id)
        if handle is None:
            raise ConfigError(f"no source {source_id!r} is attached")
        return handle

    async def remove_source(
        self, source_id: str, hard: bool = False, missing_ok: bool = False
    ) -> None:
        """Stop a source and wait until it is gone: its thread, ring and decoder freed.

        A soft remove lets its buffered frames finish; a hard one drops them. Other sources never
        pause. An id that is not attached (never was, or already ended) is a
        :class:`ConfigError` unless ``missing_ok``.
        """
        if missing_ok and source_id not in self._sources:
            return
        handle = self._handle(source_id)
        handle.halt(hard)
        await self._join_source(handle)

    async def _join_source(self, handle: SourceHandle) -> None:
        await handle.join()
        if not self._stopping.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(handle.finished)
        else:
            self._finish_source(handle)

    def _ended(self, attachment: Attachment) -> None:
        """From the postprocess thread: a source's last result has been dispatched."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._finish_source_by_id, attachment.source_id)

    def _finish_source_by_id(self, source_id: str) -> None:
        handle = self._sources.get(source_id)
        if handle is not None:
            self._finish_source(handle)

    def _finish_source(self, handle: SourceHandle) -> None:
        if self._sources.get(handle.id) is not handle:
            return
        del self._sources[handle.id]
        self.router.source_ended(handle.id)
        task = self.loop.create_task(self._complete(handle))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _complete(self, handle: SourceHandle) -> None:
        """Release the source's model (stopping its worker when it was the last user), then
        resolve ``finished``: whoever awaits it sees the engine as the source left it."""
        try:
            await self.models.release(handle.model)
        finally:
            if not handle.finished.done():
                handle.finished.set_result(None)

    def _dispatch(self, result: SegResult, attachment: Attachment) -> None:
        """From the postprocess thread: count, time and fan a result out."""
        frame = result.frame
        assert frame is not None
        now = time.monotonic()
        total = now - frame.meta.arrival_monotonic
        t = result.timings
        self.latency.add(
            queue=t.queue,
            preprocess=t.preprocess,
            infer=t.infer,
            postprocess=t.postprocess,
            total=total,
        )
        handle = self._sources.get(attachment.source_id)
        if handle is not None:
            handle.count_result(now, total)
        self._results += 1
        self.router.dispatch(result, attachment.job, attachment.source_id, self._stopping)

    # -- consumers -------------------------------------------------------------------------

    def subscribe(
        self,
        sources: str | Iterable[str] | None = None,
        delivery: Delivery | str = Delivery.LOSSLESS,
        job: str | None = None,
        buffer: int | None = None,
    ) -> Subscription:
        """An async iterator over results from now on (``lossless`` by default).

        ``sources``: one id, several, or ``None`` for every source (of ``job``, when given). It ends
        when the named sources end or are removed (a job-wide one: when :meth:`end_job` is called;
        an engine-wide one: when the engine closes).
        """
        self._check_running()
        named = _names(sources)
        if named is not None:
            missing = sorted(named - self._sources.keys())
            if missing:
                raise ConfigError(f"no source {missing[0]!r} is attached")
        sub = Subscription(
            self.router, Delivery.parse(delivery), buffer or self.consumer_buffer, job, named
        )
        self.router.add(sub)
        return sub

    async def attach_sink(
        self,
        sink: Sink,
        job: str = "default",
        sources: str | Iterable[str] | None = None,
        model: str | SegmentationModel | None = None,
    ) -> SinkRunner:
        """Open ``sink`` (off the loop) and drive it from a thread of its own.

        It gets the results of ``sources`` (default: ``sink.source_id``, else every source of
        ``job``, present and future), by its own :attr:`~Sink.delivery` mode.
        """
        self._check_running()
        named = _names(sources if sources is not None else sink.source_id)
        context = await self._context(job, named, model)
        runner = SinkRunner(
            sink, job, named, self.consumer_buffer, self.loop, self._sink_failed, self._detached
        )
        await runner.open(context)
        self._sinks.append(runner)
        self.router.add(runner.consumer)
        runner.start()
        return runner

    async def _context(
        self, job: str, named: frozenset[str] | None, model: str | SegmentationModel | None
    ) -> SinkContext:
        handles = [
            h
            for h in self._sources.values()
            if (h.id in named if named is not None else h.job == job)
        ]
        if model is None and handles:
            loaded = handles[0].model.model
        else:
            entry = await self.models.acquire(model)
            loaded = entry.model
            await self.models.release(entry)
        package = loaded.package
        return SinkContext(
            model_id=package.model_id,
            class_names=loaded.class_names,
            background_id=package.background_id,
            colors=package.colors,
            source_fps={h.id: float(h.source.fps_hint) for h in handles},
            job_id=job,
        )

    def _sink_failed(self, runner: SinkRunner, exc: BaseException) -> None:
        if runner.critical:
            self._fail_job(runner.job, exc)

    def _detached(self, runner: SinkRunner) -> None:
        self.router.remove(runner.consumer)

    async def detach_sink(self, runner: SinkRunner) -> None:
        """Stop feeding ``runner``'s sink, let it drain what it has, and close it."""
        self.router.remove(runner.consumer)
        await runner.close()
        if runner in self._sinks:
            self._sinks.remove(runner)

    # -- jobs ------------------------------------------------------------------------------

    def _fail_job(self, job: str, exc: BaseException) -> None:
        """Stop ``job`` at once (its sources and consumers); its error reaches its caller."""
        state = self._jobs.setdefault(job, _Job(job))
        if state.error is None:
            state.error = exc
            log.error("job %s failed: %s", job, exc)
        for handle in list(self._sources.values()):
            if handle.job == job:
                handle.halt(True)
        for runner in self._sinks:
            if runner.job == job:
                runner.consumer.ring.close()

    def job_error(self, job: str) -> BaseException | None:
        """What stopped ``job`` (a critical sink, a source's programming error, the worker)."""
        state = self._jobs.get(job)
        return (state.error if state else None) or self._error

    def end_job(self, job: str) -> None:
        """Close the job-wide consumers of ``job`` (its sources are done)."""
        self.router.job_ended(job)

    def forget_job(self, job: str) -> None:
        """Drop what the engine keeps of ``job`` (its error) once it has ended and its status was
        read, so that a service running jobs for weeks keeps nothing of each one it ran."""
        if not self.sources_of(job) and not any(r.job == job for r in self._sinks):
            self._jobs.pop(job, None)

    async def wait_sinks(self, job: str) -> None:
        """Wait until every sink of ``job`` has drained and closed."""
        for runner in [r for r in self._sinks if r.job == job]:
            await runner.wait()
            if runner in self._sinks:
                self._sinks.remove(runner)

    def sources_of(self, job: str) -> list[SourceHandle]:
        """The attached sources of ``job``."""
        return [h for h in self._sources.values() if h.job == job]

    # -- status ----------------------------------------------------------------------------

    def status(
        self, extra_sources: Iterable[SourceHandle] = (), extra_sinks: Iterable[SinkRunner] = ()
    ) -> EngineStatus:
        """The whole engine now (``extra_*``: ended sources and sinks a job still reports)."""
        now = time.monotonic()
        elapsed = now - self.started_at
        handles = {h.id: h for h in extra_sources}
        handles.update(self._sources)
        pct = self.latency.percentiles(50, 99)
        workers = tuple(e.status() for e in self.models.entries())
        jobs = tuple(
            JobStatusView(
                j.id,
                str(j.error) if j.error else None,
                tuple(h.id for h in handles.values() if h.job == j.id),
            )
            for j in list(self._jobs.values())
        )
        return EngineStatus(
            elapsed=round(elapsed, 3),
            results=self._results,
            fps=round(self._results / elapsed, 2) if elapsed > 0 else 0.0,
            sources=tuple(h.status(now) for h in handles.values()),
            sinks=tuple(
                r.status() for r in {**dict.fromkeys(extra_sinks), **dict.fromkeys(self._sinks)}
            ),
            workers=workers,
            jobs=jobs,
            latency_ms={k: Percentiles.of(v) for k, v in pct.items()},
        )


def _names(sources: str | Iterable[str] | None) -> frozenset[str] | None:
    if sources is None:
        return None
    if isinstance(sources, str):
        return frozenset((sources,))
    return frozenset(sources)
