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
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from stream_pipeline.buffer import RingBuffer
from stream_pipeline.consumers.base import Delivery, Sink, SinkContext
from stream_pipeline.engine.batcher import Attachment, Batcher
from stream_pipeline.engine.fanout import Router, Subscription
from stream_pipeline.engine.sinks import SinkRunner
from stream_pipeline.engine.status import (
    EngineStatus,
    JobStatusView,
    Percentiles,
    SourceStatus,
    WorkerStatus,
)
from stream_pipeline.engine.threads import ManagedThread
from stream_pipeline.errors import ConfigError, EngineError, SourceError
from stream_pipeline.frames import Frame, SegResult
from stream_pipeline.sources import AnySource, AsyncSource, SourceSpec, make_source
from stream_pipeline.stats import LatencyStats, RateMeter
from stream_pipeline.worker import HostNeeds, Thresholds, make_worker

if TYPE_CHECKING:  # importing the model loads onnxruntime: only where it is needed
    from stream_pipeline.model.segmenter import SegmentationModel

__all__ = ["Engine", "SourceHandle"]

log = logging.getLogger(__name__)


@dataclass(eq=False, slots=True)
class _Model:
    key: tuple[str, str]
    model: SegmentationModel
    batcher: Batcher
    threads: list[ManagedThread]
    users: int = 0


@dataclass(eq=False, slots=True)
class SourceHandle:
    """An attached source. ``finished`` resolves once its last result reached its consumers."""

    source: AnySource
    attachment: Attachment
    model: _Model
    finished: asyncio.Future[None]
    runner: ManagedThread | asyncio.Task[None] | None = None
    stop: threading.Event | asyncio.Event | None = None
    results: int = 0
    rate: RateMeter = field(default_factory=RateMeter)
    latency: LatencyStats = field(default_factory=lambda: LatencyStats(window=4096))
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def id(self) -> str:
        """The source id (unique in the engine)."""
        return self.source.spec.id

    @property
    def job(self) -> str:
        """The job the source belongs to."""
        return self.attachment.job


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
        self._models: dict[tuple[str, str], _Model] = {}
        self._model_lock = asyncio.Lock()
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
                self._halt(handle, hard=True)
            self.router.close_all()
            for handle in list(self._sources.values()):
                await self._join_source(handle)
            for runner in list(self._sinks):
                await runner.close()
            if self._releasing:
                await asyncio.gather(*self._releasing, return_exceptions=True)
            for entry in list(self._models.values()):
                await self._stop_model(entry)
        finally:
            self._closing.set_result(None)

    # -- models ----------------------------------------------------------------------------

    async def _acquire(self, model: str | SegmentationModel | None) -> _Model:
        from stream_pipeline.model import load_model

        ref: Any = model if model is not None else self.default_model
        key = (ref if isinstance(ref, str) else f"object:{id(ref)}", self.device)
        async with self._model_lock:
            entry = self._models.get(key)
            if entry is None:
                if isinstance(ref, str):
                    loaded = await asyncio.to_thread(
                        load_model,
                        ref,
                        device=self.device,
                        threads=self.threads,
                        registry=self.registry,
                    )
                else:
                    loaded = ref
                entry = self._start_model(key, loaded)
                self._models[key] = entry
            entry.users += 1
            return entry

    def _start_model(self, key: tuple[str, str], model: SegmentationModel) -> _Model:
        batcher = Batcher(
            make_worker(model), self.max_batch, self.max_wait_ms, self._dispatch, self._ended
        )
        entry = _Model(key, model, batcher, [])
        for name, target in (("infer", batcher.run_infer), ("post", batcher.run_post)):
            thread = ManagedThread(
                f"worker-{name}-{model.package.model_id}", target, self.loop, self._worker_failed
            )
            entry.threads.append(thread)
            thread.start()
        return entry

    async def _release(self, entry: _Model) -> None:
        async with self._model_lock:
            entry.users -= 1
            if entry.users > 0 or self._models.get(entry.key) is not entry:
                return
            del self._models[entry.key]
        await self._stop_model(entry)

    async def _stop_model(self, entry: _Model) -> None:
        for thread in entry.threads:
            thread.stop.set()
        entry.batcher.doorbell.set()
        for thread in entry.threads:
            await thread.join()
        entry.batcher.worker.close()
        self._models.pop(entry.key, None)

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
            self._halt(handle, hard=True)
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
        entry = await self._acquire(model)
        try:
            await asyncio.to_thread(_check_thresholds, entry.model, thresholds)
            if isinstance(source, AsyncSource):
                await source.open()
            else:
                await asyncio.to_thread(source.open)
        except BaseException:
            if not isinstance(source, AsyncSource):
                await asyncio.to_thread(source.close)
            await self._release(entry)
            raise
        if sid in self._sources:  # attached by someone else while this one was opening
            await asyncio.to_thread(source.close)
            await self._release(entry)
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
        if handle.runner is not None:
            return
        source, ring = handle.source, handle.attachment.ring
        if isinstance(source, AsyncSource):
            stop = asyncio.Event()
            handle.stop = stop
            handle.runner = self.loop.create_task(
                self._run_async(source, ring, stop, handle), name=f"source-{source_id}"
            )
            return

        def target(stop: threading.Event) -> None:
            try:
                source.run(ring, stop)
            finally:
                ring.close()
                source.close()

        thread = ManagedThread(
            f"source-{source_id}",
            target,
            self.loop,
            lambda exc: self._source_failed(handle, exc),
        )
        handle.stop = thread.stop
        handle.runner = thread
        thread.start()

    async def _run_async(
        self,
        source: AsyncSource,
        ring: RingBuffer[Frame],
        stop: asyncio.Event,
        handle: SourceHandle,
    ) -> None:
        try:
            await source.run(ring, stop)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._source_failed(handle, exc)
        finally:
            ring.close()
            source.close()

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

    def _halt(self, handle: SourceHandle, hard: bool) -> None:
        """Tell a source to stop; a hard stop drops what is buffered and closes the ring now."""
        if handle.stop is not None:
            handle.stop.set()
        if isinstance(handle.runner, asyncio.Task):
            handle.runner.cancel()
        if hard or handle.runner is None:
            handle.attachment.ring.clear()
            handle.attachment.ring.close()
        handle.model.batcher.doorbell.set()

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
        self._halt(handle, hard)
        await self._join_source(handle)

    async def _join_source(self, handle: SourceHandle) -> None:
        runner = handle.runner
        if isinstance(runner, ManagedThread):
            await runner.join()
        elif isinstance(runner, asyncio.Task):
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        elif runner is None and not isinstance(handle.source, AsyncSource):
            await asyncio.to_thread(handle.source.close)
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
            await self._release(handle.model)
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
            with handle.lock:
                handle.results += 1
            handle.rate.tick(now)
            handle.latency.add(total=total)
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
            entry = await self._acquire(model)
            loaded = entry.model
            await self._release(entry)
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
                self._halt(handle, hard=True)
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

    def source_status(self, handle: SourceHandle, now: float) -> SourceStatus:
        """A snapshot of one source."""
        counts = handle.source.status.snapshot()
        ring = handle.attachment.ring.statistics()
        with handle.lock:
            results = handle.results
        return SourceStatus(
            id=handle.id,
            job=handle.job,
            url=handle.source.spec.display_url,
            state=counts.state.value,
            frames=counts.frames,
            results=results,
            total_frames=counts.total_frames,
            fps=round(handle.rate.rate(now), 2),
            dropped=ring.dropped,
            buffered=ring.depth,
            reconnects=counts.reconnects,
            last_error=counts.last_error,
            latency_ms=Percentiles.of(handle.latency.percentiles(50, 99).get("total")),
        )

    def status(
        self, extra_sources: Iterable[SourceHandle] = (), extra_sinks: Iterable[SinkRunner] = ()
    ) -> EngineStatus:
        """The whole engine now (``extra_*``: ended sources and sinks a job still reports)."""
        now = time.monotonic()
        elapsed = now - self.started_at
        handles = {h.id: h for h in extra_sources}
        handles.update(self._sources)
        pct = self.latency.percentiles(50, 99)
        workers = tuple(
            WorkerStatus(
                model_id=e.model.package.model_id,
                device=e.batcher.worker.device,
                sources=e.batcher.attached,
                frames=e.batcher.frames,
                batches=e.batcher.batches,
                mean_batch=round(e.batcher.frames / e.batcher.batches, 2)
                if e.batcher.batches
                else 0.0,
                max_batch_seen=e.batcher.max_batch_seen,
            )
            for e in list(self._models.values())
        )
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
            sources=tuple(self.source_status(h, now) for h in handles.values()),
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


def _check_thresholds(model: SegmentationModel, thresholds: Thresholds) -> None:
    """Resolve the thresholds against the package now, not on the first frame."""
    channels = model.session.channels
    if channels is None:  # a dynamic channel axis: ask the network once with a blank frame
        import numpy as np

        spec = model.package.input
        logits, *_ = model.infer([np.zeros((spec.height, spec.width, 3), np.uint8)])
        channels = int(logits.shape[1])
    model.head(channels, thresholds.mode, thresholds.custom)
