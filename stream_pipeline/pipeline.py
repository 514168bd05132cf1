"""One pipeline: sources → rings → the batching worker → consumers, owned by one TaskGroup.

```python
async with Pipeline(PipelineConfig(sources=(SourceSpec("video.mp4", id="cam"),))) as p:
    async for result in p.results():
        ...
```

Blocking work runs in threads (a decode thread per source, two worker threads, a thread per
sink); the event loop only supervises. The end of the inputs cascades: a finished source closes
its ring, the worker drains every ring and closes the consumer rings, each sink drains its ring and
closes. A worker or sink failure tears everything down and is raised to the caller; a failing
live source only reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from stream_pipeline.buffer import RingBuffer, RingClosed
from stream_pipeline.config import read_environment
from stream_pipeline.consumers.base import Sink, SinkContext
from stream_pipeline.errors import ConfigError, StreamPipelineError
from stream_pipeline.frames import Frame, SegResult
from stream_pipeline.model import load_model
from stream_pipeline.model.segmenter import SegmentationModel
from stream_pipeline.model.thresholds import check_confidence
from stream_pipeline.sources import Source, SourceSpec, make_source
from stream_pipeline.stats import LatencyStats, RateMeter
from stream_pipeline.worker import Worker, WorkerSettings
from stream_pipeline.workflow import BoundWorkflow

__all__ = ["Pipeline", "PipelineConfig"]

log = logging.getLogger(__name__)

JOIN_GRACE_SECONDS = 15.0  # how long a hard stop waits for each thread


@dataclass(frozen=True, slots=True)
class PipelineConfig:
    """Everything one pipeline runs. Build it directly, or from a workflow with
    :meth:`from_workflow`."""

    sources: tuple[SourceSpec, ...]
    model: str = "default"
    confidence_mode: str = "best"
    custom_confidence: float | None = None
    device: str = "auto"
    threads: int | None = None
    max_batch: int = 4
    max_wait_ms: float = 5.0
    duration: float | None = None
    class_names: tuple[str, ...] | None = None  # for a bare .onnx
    input_size: tuple[int, int] | None = None  # (width, height) for a bare .onnx
    consumer_buffer: int = 8

    @classmethod
    def from_workflow(cls, workflow: BoundWorkflow, **fields: Any) -> PipelineConfig:
        """A config whose model and thresholds come from a bound workflow."""
        return cls(
            model=workflow.model_id,
            confidence_mode=workflow.confidence_mode,
            custom_confidence=workflow.custom_confidence,
            **fields,
        )

    def validate(self) -> None:
        """Raise :class:`ConfigError` for anything that cannot work."""
        if not self.sources:
            raise ConfigError("at least one source is needed")
        ids = [s.id for s in self.sources]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"source ids must be unique, got {ids}")
        for spec in self.sources:
            spec.validate()
        check_confidence(self.confidence_mode, self.custom_confidence)
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be ≥ 1, got {self.max_batch}")
        if self.max_wait_ms < 0:
            raise ConfigError(f"max_wait_ms must be ≥ 0, got {self.max_wait_ms}")
        if self.duration is not None and self.duration <= 0:
            raise ConfigError(f"duration must be positive, got {self.duration}")


@dataclass(slots=True)
class _Consumer:
    sink: Sink
    ring: RingBuffer[SegResult]


@dataclass(slots=True)
class _Thread:
    name: str
    target: Callable[[threading.Event], None]
    done: asyncio.Future[None]
    thread: threading.Thread | None = None


@dataclass(slots=True)
class _Counters:
    results: int = 0
    started: float = 0.0
    per_source: dict[str, int] = field(default_factory=dict)
    rates: dict[str, RateMeter] = field(default_factory=dict)


class Pipeline:
    """A running pipeline (see module docstring). Use as an async context manager."""

    def __init__(
        self,
        config: PipelineConfig,
        sinks: Sequence[Sink] = (),
        model: SegmentationModel | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self._sinks = list(sinks)
        self.model = model
        self.sources: list[Source] = []
        self.latency = LatencyStats()
        self._source_rings: dict[str, RingBuffer[Frame]] = {}
        self._consumers: list[_Consumer] = []
        self._doorbell = threading.Event()
        self._stop_sources = threading.Event()
        self._stop_all = threading.Event()
        self._threads: list[_Thread] = []
        self._counters = _Counters()
        self._tg: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._prepared = False
        self._started = asyncio.Event()
        self._finished = asyncio.Event()
        self._error: BaseException | None = None
        self._closing: asyncio.Future[None] | None = None
        self.worker: Worker | None = None
        self.started_at: float | None = None

    # -- set-up ----------------------------------------------------------------------------

    def add_sink(self, sink: Sink) -> None:
        """Attach a sink; only before the pipeline starts streaming."""
        if self._threads:
            raise ConfigError("sinks must be added before the pipeline starts")
        self._sinks.append(sink)

    async def prepare(self) -> None:
        """Load the model, open every source and sink (in threads); raise on bad input."""
        if self._prepared:
            return
        cfg = self.config
        if self.model is None:
            self.model = await asyncio.to_thread(
                load_model,
                cfg.model,
                device=cfg.device,
                threads=cfg.threads,
                class_names=cfg.class_names,
                input_size=cfg.input_size,
                registry=read_environment().models_dir,
            )
        model = self.model
        # Validate thresholds against the package now, not on the first frame.
        await asyncio.to_thread(
            lambda: model.head(_probe_channels(model), cfg.confidence_mode, cfg.custom_confidence)
        )
        self.sources = [make_source(spec) for spec in cfg.sources]
        opened: list[Source] = []
        try:
            results = await asyncio.gather(
                *(asyncio.to_thread(s.open) for s in self.sources), return_exceptions=True
            )
            opened = [s for s, r in zip(self.sources, results, strict=True) if r is None]
            for r in results:
                if isinstance(r, BaseException):
                    raise r
            context = SinkContext(
                model_id=model.package.model_id,
                class_names=model.class_names,
                background_id=model.package.background_id,
                colors=model.package.colors,
                source_fps={s.spec.id: float(getattr(s, "fps_hint", 30.0)) for s in self.sources},
            )
            for sink in self._sinks:
                await asyncio.to_thread(sink.open, context)
                self._consumers.append(
                    _Consumer(
                        sink,
                        RingBuffer(cfg.consumer_buffer, "block" if sink.lossless else "latest"),
                    )
                )
        except BaseException:
            for s in opened:
                await asyncio.to_thread(s.close)
            for c in self._consumers:
                await asyncio.to_thread(c.sink.close)
            raise
        for s in self.sources:
            self._source_rings[s.spec.id] = RingBuffer(
                s.spec.buffer_size, s.spec.policy, doorbell=self._doorbell
            )
            self._counters.per_source[s.spec.id] = 0
            self._counters.rates[s.spec.id] = RateMeter()
        self._prepared = True

    async def __aenter__(self) -> Pipeline:
        await self.prepare()
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc is not None or self._supervisor is None or not self._supervisor.done():
                # Leaving early (an error, or a loop broken out of): stop everything first.
                await self.aclose()
            assert self._tg is not None
            await self._tg.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # One pipeline error is raised as itself, not wrapped in a group.
            errors = [e for e in group.exceptions if not isinstance(e, asyncio.CancelledError)]
            if len(errors) == 1:
                raise errors[0] from None
            raise

    # -- running ---------------------------------------------------------------------------

    def _dispatch(self, result: SegResult) -> None:
        frame = result.frame
        assert frame is not None
        sid = frame.meta.source_id
        now = time.monotonic()
        t = result.timings
        self.latency.add(
            queue=t.queue,
            preprocess=t.preprocess,
            infer=t.infer,
            postprocess=t.postprocess,
            total=now - frame.meta.arrival_monotonic,
        )
        self.latency.add(**{_SOURCE_LATENCY + sid: now - frame.meta.arrival_monotonic})
        counters = self._counters
        counters.results += 1
        counters.per_source[sid] += 1
        counters.rates[sid].tick(now)
        for consumer in self._consumers:
            if consumer.sink.source_id not in (None, sid):
                continue
            while not consumer.ring.put(result, timeout=0.25):
                if self._stop_all.is_set():
                    raise RingClosed

    def _sink_loop(self, consumer: _Consumer) -> Callable[[threading.Event], None]:
        def loop(stop: threading.Event) -> None:
            try:
                while True:
                    result = consumer.ring.get(timeout=0.25)
                    if result is None:
                        continue
                    consumer.sink.write(result)
            except RingClosed:
                pass
            except BaseException as exc:
                consumer.sink.stats.set_error(str(exc))
                raise
            finally:
                consumer.ring.close()
                consumer.sink.close()

        return loop

    def _source_loop(self, source: Source) -> Callable[[threading.Event], None]:
        ring = self._source_rings[source.spec.id]

        def loop(stop: threading.Event) -> None:
            try:
                source.run(ring, self._stop_sources)
            finally:
                ring.close()
                source.close()

        return loop

    def _spawn_threads(self) -> None:
        assert self.model is not None
        cfg = self.config
        self.worker = Worker(
            self.model,
            list(self._source_rings.values()),
            self._doorbell,
            self._dispatch,
            WorkerSettings(
                cfg.max_batch, cfg.max_wait_ms, cfg.confidence_mode, cfg.custom_confidence
            ),
        )
        loop = asyncio.get_running_loop()
        targets: list[tuple[str, Callable[[threading.Event], None]]] = [
            (f"source-{s.spec.id}", self._source_loop(s)) for s in self.sources
        ]
        targets.append(("worker-infer", self.worker.run_infer))
        targets.append(("worker-post", self._post_then_close(self.worker)))
        targets += [
            (f"sink-{c.sink.name}", self._sink_loop(c))
            for c in self._consumers
            if not isinstance(c.sink, _IteratorSink)  # read by results() itself
        ]
        for name, target in targets:
            rec = _Thread(name, target, loop.create_future())
            rec.thread = threading.Thread(
                target=self._thread_main, args=(rec, loop), name=f"sp-{name}", daemon=True
            )
            self._threads.append(rec)
        self.started_at = time.monotonic()
        self._counters.started = self.started_at
        for rec in self._threads:
            assert rec.thread is not None
            rec.thread.start()

    def _post_then_close(self, worker: Worker) -> Callable[[threading.Event], None]:
        def loop(stop: threading.Event) -> None:
            try:
                worker.run_post(stop)
            finally:
                for c in self._consumers:
                    c.ring.close()

        return loop

    def _thread_main(self, rec: _Thread, loop: asyncio.AbstractEventLoop) -> None:
        error: BaseException | None = None
        try:
            rec.target(self._stop_all)
        except BaseException as exc:  # reported to the loop, raised to the caller there
            error = exc
            self._hard_stop()
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            loop.call_soon_threadsafe(_settle, rec.done, error)

    def _hard_stop(self) -> None:
        self._stop_sources.set()
        self._stop_all.set()
        for ring in self._source_rings.values():
            ring.close()
        for c in self._consumers:
            c.ring.close()
        self._doorbell.set()

    async def _supervise(self) -> None:
        self._spawn_threads()
        self._started.set()
        timer: asyncio.TimerHandle | None = None
        if self.config.duration is not None:
            timer = asyncio.get_running_loop().call_later(self.config.duration, self.stop)
        try:
            for rec in self._threads:
                try:
                    await asyncio.shield(rec.done)
                except StreamPipelineError as exc:
                    self._error = self._error or exc
                except Exception as exc:
                    self._error = self._error or exc
            if self._error is not None:
                raise self._error
        except asyncio.CancelledError:
            self._hard_stop()
            await self._join()
            raise
        finally:
            if timer is not None:
                timer.cancel()
            self._finished.set()

    async def _join(self) -> None:
        for rec in self._threads:
            try:
                await asyncio.wait_for(asyncio.shield(rec.done), JOIN_GRACE_SECONDS)
            except TimeoutError:
                # A thread stuck in a blocking call (a stalled RTSP push): it is a daemon thread,
                # so it cannot keep the process alive; say so rather than hang the shutdown.
                log.error(
                    "thread %s did not stop within %.0f s; abandoning it",
                    rec.name,
                    JOIN_GRACE_SECONDS,
                )
            except Exception:  # its error was recorded by the supervisor; cancellation propagates
                pass

    def _ensure_started(self) -> asyncio.Task[None]:
        if not self._prepared or self._tg is None:
            raise RuntimeError("use `async with Pipeline(...)` before running it")
        if self._supervisor is None:
            self._supervisor = self._tg.create_task(self._supervise(), name="pipeline-supervisor")
        return self._supervisor

    async def run(self) -> None:
        """Stream until every source ends (or ``duration``, or :meth:`stop`); raise failures."""
        task = self._ensure_started()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def results(self) -> AsyncIterator[SegResult]:
        """Every result, in order per source, as an async iterator (lossless).

        Call it instead of :meth:`run`, before streaming starts.
        """
        if self._supervisor is not None:
            raise RuntimeError("results() must be called before the pipeline starts")
        ring: RingBuffer[SegResult] = RingBuffer(self.config.consumer_buffer, "block")
        self._consumers.append(_Consumer(_IteratorSink(), ring))
        self._ensure_started()
        async for result in ring:
            yield result

    def stop(self) -> None:
        """Graceful stop: sources stop, what is buffered is processed, sinks close cleanly."""
        self._stop_sources.set()

    async def aclose(self) -> None:
        """Hard stop and wait for every thread and sink to finish (idempotent)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            self._hard_stop()
            if self._supervisor is not None:
                await self._join()
            else:  # never started: close what prepare() opened, off the loop
                for s in self.sources:
                    await asyncio.to_thread(s.close)
                for c in self._consumers:
                    await asyncio.to_thread(c.sink.close)
        finally:
            self._closing.set_result(None)

    # -- observing -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """A JSON-able snapshot: per-source state and counters, sinks, latency percentiles."""
        now = time.monotonic()
        elapsed = now - self.started_at if self.started_at else 0.0
        pct = self.latency.percentiles(50, 99)
        sources = []
        for s in self.sources:
            ring = self._source_rings.get(s.spec.id)
            stats = ring.statistics() if ring else None
            st = s.status
            sources.append(
                {
                    "id": st.id,
                    "url": st.url,
                    "state": st.state.value,
                    "frames": st.frames,
                    "results": self._counters.per_source.get(st.id, 0),
                    "total_frames": st.total_frames,
                    "fps": round(self._counters.rates[st.id].rate(now), 2)
                    if st.id in self._counters.rates
                    else 0.0,
                    "dropped": stats.dropped if stats else 0,
                    "buffered": stats.depth if stats else 0,
                    "reconnects": st.reconnects,
                    "last_error": st.last_error,
                    "latency_ms": _p50_p99(pct.get(_SOURCE_LATENCY + st.id)),
                }
            )
        return {
            "elapsed": round(elapsed, 3),
            "results": self._counters.results,
            "fps": round(self._counters.results / elapsed, 2) if elapsed > 0 else 0.0,
            "sources": sources,
            "sinks": [
                {
                    "type": c.sink.name,
                    "source_id": c.sink.source_id,
                    "delivered": c.sink.stats.delivered,
                    "pending": c.ring.statistics().depth,
                    "dropped": c.ring.statistics().dropped + c.sink.stats.dropped,
                    "last_error": c.sink.stats.last_error,
                }
                for c in self._consumers
                if not isinstance(c.sink, _IteratorSink)
            ],
            "latency_ms": {
                k: _p50_p99(v) for k, v in pct.items() if not k.startswith(_SOURCE_LATENCY)
            },
        }


class _IteratorSink(Sink):
    """Placeholder consumer behind :meth:`Pipeline.results` (the ring is the output)."""

    name = "results"

    def open(self, context: SinkContext) -> None:
        """Nothing to open."""

    def write(self, result: SegResult) -> None:
        """Never called: the iterator reads the ring directly."""

    def close(self) -> None:
        """Nothing to close."""


_SOURCE_LATENCY = "source:"  # per-source arrival-to-result latency, kept beside the stages


def _p50_p99(values: list[float] | None) -> dict[str, float]:
    if not values:
        return {"p50": 0.0, "p99": 0.0}
    return {"p50": round(values[0], 2), "p99": round(values[1], 2)}


def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)


def _probe_channels(model: SegmentationModel) -> int:
    channels = model.session.channels
    if channels is not None:
        return channels
    # A dynamic channel axis: ask the network once with a blank frame.
    spec = model.package.input
    import numpy as np

    logits, *_ = model.infer([np.zeros((spec.height, spec.width, 3), np.uint8)])
    return int(logits.shape[1])
