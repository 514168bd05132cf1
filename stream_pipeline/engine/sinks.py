"""A sink attached to the engine: its hand-off ring, its thread, its failure mode and status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

from stream_pipeline.buffer import RingClosed
from stream_pipeline.consumers.base import Failure, Sink, SinkContext
from stream_pipeline.engine.fanout import Consumer
from stream_pipeline.engine.status import SinkStatus
from stream_pipeline.engine.threads import JOIN_GRACE_SECONDS, ManagedThread
from stream_pipeline.logs import carry_context

__all__ = ["SinkRunner"]

log = logging.getLogger(__name__)


def _one_line(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


class SinkRunner:
    """Drives one :class:`Sink` from its own thread (see :meth:`Engine.attach_sink`).

    The thread writes what its ring holds, in order, until the ring is closed and drained, then
    closes the sink. A failure stops this sink only (``best_effort``) or its job (``critical``);
    either way the error is in the status.
    """

    def __init__(
        self,
        sink: Sink,
        job: str,
        sources: frozenset[str] | None,
        buffer: int,
        loop: asyncio.AbstractEventLoop,
        on_failure: Callable[[SinkRunner, BaseException], None],
        on_detach: Callable[[SinkRunner], None],
    ) -> None:
        self.sink = sink
        self.job = job
        self.consumer = Consumer(sink.delivery, buffer, job=job, sources=sources)
        self._loop = loop
        self._on_failure = on_failure
        self._on_detach = on_detach
        self._thread: ManagedThread | None = None
        self._opened = False
        self.failed: BaseException | None = None
        self._lock = threading.Lock()

    @property
    def id(self) -> int:
        """The sink's id in the engine."""
        return self.consumer.id

    @property
    def critical(self) -> bool:
        """Whether a failure of this sink stops its job."""
        return self.sink.failure is Failure.CRITICAL

    async def open(self, context: SinkContext) -> None:
        """Open the sink in a thread; raise what it raises (bad path, …)."""
        await asyncio.to_thread(self.sink.open, context)
        self._opened = True
        if self.sink.stats.snapshot().state == "idle":  # a sink's own word wins ("connecting")
            self.sink.stats.set_state("open")

    def start(self) -> None:
        """Start the sink's thread."""
        run = carry_context(self._run, job=self.job)  # its log records carry the job id
        self._thread = ManagedThread(f"sink-{self.sink.name}-{self.id}", run, self._loop)
        self._thread.start()

    def _run(self, stop: threading.Event) -> None:
        ring = self.consumer.ring
        sink = self.sink
        error: BaseException | None = None
        try:
            while True:
                result = ring.get(timeout=0.25)
                if result is not None:
                    sink.write(result)
        except RingClosed:
            pass
        except Exception as exc:
            error = exc
        finally:
            ring.close()
            ring.clear()  # a failed sink's backlog is dropped (counted), never waited on
            try:
                sink.close()
            except Exception as exc:
                error = error or exc
        if error is not None:
            self.failed = error
            message = _one_line(error)
            sink.stats.set_error(message)
            sink.stats.set_state("failed")
            log.error("sink %s (%s) failed: %s", sink.name, self.sink.failure.value, message)
            with contextlib.suppress(RuntimeError):  # the loop may be closed already
                self._loop.call_soon_threadsafe(self._report, error)
        elif sink.stats.snapshot().state in ("idle", "open"):  # keep a sink's own last word
            sink.stats.set_state("closed")

    def _report(self, error: BaseException) -> None:
        self._on_detach(self)
        self._on_failure(self, error)

    async def wait(self) -> None:
        """Wait until the sink's thread has drained its ring and closed the sink.

        A remote sink's ``close`` may wait up to its own ``drain_timeout`` for the far end; the
        grace before the thread is abandoned is that plus the usual margin.
        """
        if self._thread is not None:
            drain = float(getattr(self.sink, "drain_timeout", 0.0) or 0.0)
            await self._thread.join(JOIN_GRACE_SECONDS + drain)
        elif self._opened:
            await asyncio.to_thread(self.sink.close)
            self._opened = False

    async def close(self) -> None:
        """Stop feeding the sink, let its thread finish what it holds, and close it."""
        self.consumer.ring.close()
        await self.wait()

    def status(self) -> SinkStatus:
        """A snapshot of the sink and its hand-off ring."""
        counters = self.sink.stats.snapshot()
        ring = self.consumer.ring.statistics()
        return SinkStatus(
            id=self.id,
            type=self.sink.name,
            job=self.job,
            source_id=self.sink.source_id,
            delivery=self.sink.delivery.value,
            failure=self.sink.failure.value,
            state=counters.state,
            delivered=counters.delivered,
            pending=ring.depth + counters.pending,
            dropped=ring.dropped + counters.dropped,
            reconnects=counters.reconnects,
            last_error=counters.last_error,
        )
