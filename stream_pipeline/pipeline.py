"""One job on an engine — sources + model + thresholds + sinks — as users know it.

```python
async with Pipeline(PipelineConfig(sources=(SourceSpec("video.mp4", id="cam"),))) as p:
    async for result in p.results():
        ...
```

Without an ``engine`` the pipeline runs on a private one (``stream-pipeline run``). The end of
the inputs cascades: every source ends, its last results reach the consumers, the job ends, each
sink drains its ring and closes. A critical sink's failure or a worker failure stops the job and
is raised to the caller; a failing live source only reconnects.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from stream_pipeline.consumers.base import Sink
from stream_pipeline.engine import Engine, EngineStatus, SinkRunner, SourceHandle, Thresholds
from stream_pipeline.errors import ConfigError
from stream_pipeline.frames import SegResult
from stream_pipeline.model.thresholds import check_confidence
from stream_pipeline.sources import SourceSpec

if TYPE_CHECKING:
    from stream_pipeline.model.segmenter import SegmentationModel
    from stream_pipeline.workflow import BoundWorkflow

__all__ = ["Pipeline", "PipelineConfig"]

_job_ids = itertools.count(1)


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
    worker: str = "auto"  # auto | cpu | cuda (and the CI hooks of worker.make_worker)

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

    @property
    def thresholds(self) -> Thresholds:
        """The thresholds every source of this job uses."""
        return Thresholds(self.confidence_mode, self.custom_confidence)


class Pipeline:
    """A running job (see module docstring). Use as an async context manager."""

    def __init__(
        self,
        config: PipelineConfig,
        sinks: Sequence[Sink] = (),
        model: SegmentationModel | None = None,
        engine: Engine | None = None,
        job: str | None = None,
    ) -> None:
        config.validate()
        self.config = config
        self.model = model
        self.job = job or f"job-{next(_job_ids)}"
        self._sinks = list(sinks)
        self._engine = engine
        self._own_engine = engine is None
        self._handles: list[SourceHandle] = []
        self._runners: list[SinkRunner] = []
        self._prepared = False
        self._tg: asyncio.TaskGroup | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._closing: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.started_at: float | None = None

    @property
    def engine(self) -> Engine:
        """The engine this job runs on (its own unless one was given)."""
        if self._engine is None:
            raise RuntimeError("use `async with Pipeline(...)` before running it")
        return self._engine

    # -- set-up ----------------------------------------------------------------------------

    def add_sink(self, sink: Sink) -> None:
        """Attach a sink before the pipeline is prepared (afterwards: :meth:`attach_sink`)."""
        if self._prepared:
            raise ConfigError("the pipeline is prepared: use `await pipeline.attach_sink(sink)`")
        self._sinks.append(sink)

    async def attach_sink(self, sink: Sink) -> None:
        """Open ``sink`` and attach it now; it gets the results produced from now on."""
        if not self._prepared:
            self._sinks.append(sink)
            return
        self._runners.append(await self.engine.attach_sink(sink, job=self.job))

    async def prepare(self) -> None:
        """Load the model, open every source and sink (off the loop); raise on bad input."""
        if self._prepared:
            return
        cfg = self.config
        if self._engine is None:
            from stream_pipeline.config import read_environment

            self._engine = Engine(
                device=cfg.device,
                model=cfg.model,
                threads=cfg.threads,
                max_batch=cfg.max_batch,
                max_wait_ms=cfg.max_wait_ms,
                consumer_buffer=cfg.consumer_buffer,
                registry=read_environment().models_dir,
                worker=cfg.worker,
            )
            await self._engine.__aenter__()
        engine = self._engine
        model: Any = self.model
        if model is None and (cfg.class_names or cfg.input_size):
            model = await asyncio.to_thread(_load_bare, cfg, engine)
            self.model = model
        if model is None:
            model = cfg.model
        try:
            for spec in cfg.sources:
                self._handles.append(
                    await engine.add_source(
                        spec, model=model, thresholds=cfg.thresholds, job=self.job, start=False
                    )
                )
            for sink in self._sinks:
                self._runners.append(await engine.attach_sink(sink, job=self.job, model=model))
        except BaseException:
            await self._teardown()
            raise
        if self.model is None:
            self.model = self._handles[0].model.model
        self._prepared = True

    async def _teardown(self) -> None:
        engine = self._engine
        if engine is None:
            return
        # Only this job's sources still attached: an ended one's id may be another job's now.
        attached = {h.id for h in engine.sources_of(self.job)}
        for handle in self._handles:
            if handle.id in attached:
                await engine.remove_source(handle.id, hard=True)
        engine.end_job(self.job)
        await engine.wait_sinks(self.job)
        if self._own_engine:
            await engine.aclose()

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
        finally:
            await self.aclose()

    # -- running ---------------------------------------------------------------------------

    async def _run_job(self) -> None:
        engine = self.engine
        loop = asyncio.get_running_loop()
        self.started_at = time.monotonic()
        if self.config.duration is not None:
            self._timer = loop.call_later(self.config.duration, self.stop)
        try:
            for handle in self._handles:
                engine.start_source(handle.id)
            await asyncio.gather(*(asyncio.shield(h.finished) for h in self._handles))
            engine.end_job(self.job)
            await engine.wait_sinks(self.job)
        except asyncio.CancelledError:
            await self.aclose()
            raise
        finally:
            if self._timer is not None:
                self._timer.cancel()
        error = engine.job_error(self.job)
        if error is not None:
            raise error

    def _ensure_started(self) -> asyncio.Task[None]:
        if not self._prepared or self._tg is None:
            raise RuntimeError("use `async with Pipeline(...)` before running it")
        if self._supervisor is None:
            self._supervisor = self._tg.create_task(self._run_job(), name=f"pipeline-{self.job}")
        return self._supervisor

    async def run(self) -> None:
        """Stream until every source ends (or ``duration``, or :meth:`stop`); raise failures."""
        task = self._ensure_started()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    async def results(self) -> AsyncIterator[SegResult]:
        """Every result of the job, in order per source, as an async iterator (lossless).

        Call it instead of :meth:`run`, before streaming starts.
        """
        if self._supervisor is not None:
            raise RuntimeError("results() must be called before the pipeline starts")
        if not self._prepared:
            raise RuntimeError("use `async with Pipeline(...)` before running it")
        subscription = self.engine.subscribe(job=self.job)
        task = self._ensure_started()
        try:
            async for result in subscription:
                yield result
        finally:
            await subscription.aclose()
        await asyncio.wait([task])
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]

    def stop(self) -> None:
        """Graceful stop: sources stop, what is buffered is processed, sinks close cleanly."""
        engine = self._engine
        if engine is None:
            return
        for handle in engine.sources_of(self.job):
            if handle.stop is not None:
                handle.stop.set()
            if isinstance(handle.runner, asyncio.Task):
                handle.runner.cancel()

    async def aclose(self) -> None:
        """Hard stop and wait for every thread and sink of the job to finish (idempotent)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            await self._teardown()
        finally:
            self._closing.set_result(None)

    # -- observing -------------------------------------------------------------------------

    def status(self) -> EngineStatus:
        """A typed snapshot of the job: its sources, sinks, worker and latency percentiles."""
        engine = self.engine
        status = engine.status(self._handles, self._runners).for_job(self.job)
        # The job's own workers, also once released (their counters outlive them).
        entries = {id(h.model): h.model for h in self._handles}
        status = dataclasses.replace(status, workers=tuple(e.status() for e in entries.values()))
        if self.started_at is None:
            return dataclasses.replace(status, elapsed=0.0, fps=0.0)
        elapsed = time.monotonic() - self.started_at
        return dataclasses.replace(
            status,
            elapsed=round(elapsed, 3),
            fps=round(status.results / elapsed, 2) if elapsed > 0 else 0.0,
        )


def _load_bare(cfg: PipelineConfig, engine: Engine) -> SegmentationModel:
    from stream_pipeline.model import load_model

    return load_model(
        cfg.model,
        device=cfg.device,
        threads=cfg.threads,
        class_names=cfg.class_names,
        input_size=cfg.input_size,
        registry=engine.registry,
    )
