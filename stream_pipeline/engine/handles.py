"""An attached source: how it runs (a thread, or a task on the loop), stops, is joined and
reported."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stream_pipeline.engine.batcher import Attachment
from stream_pipeline.engine.models import ModelEntry
from stream_pipeline.engine.status import Percentiles, SourceStatus
from stream_pipeline.engine.threads import ManagedThread
from stream_pipeline.logs import carry_context, set_ids
from stream_pipeline.sources import AnySource, AsyncSource
from stream_pipeline.stats import LatencyStats, RateMeter

__all__ = ["SourceHandle"]


@dataclass(eq=False, slots=True)
class SourceHandle:
    """An attached source. ``finished`` resolves once its last result reached its consumers."""

    source: AnySource
    attachment: Attachment
    model: ModelEntry
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

    def start(
        self, loop: asyncio.AbstractEventLoop, failed: Callable[[BaseException], None]
    ) -> None:
        """Run the source: a thread source in its own thread, an async one as a task."""
        if self.runner is not None:
            return
        source, ring = self.source, self.attachment.ring
        if isinstance(source, AsyncSource):
            stop = asyncio.Event()
            self.stop = stop

            async def run_async() -> None:
                set_ids(source=self.id)  # the task's own copy of the loop's context
                try:
                    await source.run(ring, stop)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    failed(exc)
                finally:
                    ring.close()
                    source.close()

            self.runner = loop.create_task(run_async(), name=f"source-{self.id}")
            return

        def target(stop: threading.Event) -> None:
            try:
                source.run(ring, stop)
            finally:
                ring.close()
                source.close()

        # The thread's log records carry the job id of whoever started it, and the source id.
        run = carry_context(target, job=self.job, source=self.id)
        thread = ManagedThread(f"source-{self.id}", run, loop, failed)
        self.stop, self.runner = thread.stop, thread
        thread.start()

    def halt(self, hard: bool) -> None:
        """Tell the source to stop; a hard stop drops what is buffered and closes the ring now."""
        if self.stop is not None:
            self.stop.set()
        if isinstance(self.runner, asyncio.Task):
            self.runner.cancel()
        if hard or self.runner is None:
            self.attachment.ring.clear()
            self.attachment.ring.close()
        self.model.batcher.doorbell.set()

    async def join(self) -> None:
        """Wait (without blocking the loop) until the source's thread or task has ended."""
        runner = self.runner
        if isinstance(runner, ManagedThread):
            await runner.join()
        elif isinstance(runner, asyncio.Task):
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        elif runner is None and not isinstance(self.source, AsyncSource):
            await asyncio.to_thread(self.source.close)

    def count_result(self, now: float, latency: float) -> None:
        """One more result dispatched (from the postprocess thread)."""
        with self.lock:
            self.results += 1
        self.rate.tick(now)
        self.latency.add(total=latency)

    def status(self, now: float | None = None) -> SourceStatus:
        """A snapshot of the source, its ring and its results."""
        now = time.monotonic() if now is None else now
        counts = self.source.status.snapshot()
        ring = self.attachment.ring.statistics()
        with self.lock:
            results = self.results
        return SourceStatus(
            id=self.id,
            job=self.job,
            url=self.source.spec.display_url,
            state=counts.state.value,
            frames=counts.frames,
            results=results,
            total_frames=counts.total_frames,
            fps=round(self.rate.rate(now), 2),
            dropped=ring.dropped + counts.dropped,
            buffered=ring.depth,
            reconnects=counts.reconnects,
            last_error=counts.last_error,
            latency_ms=Percentiles.of(self.latency.percentiles(50, 99).get("total")),
            decoder_restarts=counts.decoder_restarts,
        )
