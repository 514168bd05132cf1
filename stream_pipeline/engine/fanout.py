"""Fan-out of results to consumers, per consumer, by delivery mode.

Every consumer owns a bounded ring between the worker's postprocess thread and itself:

- ``lossless``: a ``block`` ring; the worker waits while it is full (back-pressure to sources);
- ``latest``: a one-slot ``latest`` ring; a slow consumer sees the newest result, never a queue;
- ``spooled``: a ``drop_oldest`` ring; the worker never waits (the sink spools; drops counted).

A consumer selects results by job and/or source ids. It ends — its ring closes, its iterator
stops, its sink thread drains and closes the sink — when every source it named has ended, or, for
a job-wide consumer, when its job ends.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from itertools import count

from stream_pipeline.buffer import DropPolicy, RingBuffer, RingClosed
from stream_pipeline.consumers.base import Delivery
from stream_pipeline.frames import SegResult

__all__ = ["Consumer", "Router", "Subscription"]

_ids = count(1)

SPOOLED_HANDOFF = 64  # results a spooled sink's thread may lag behind before drops begin


def ring_for(delivery: Delivery, buffer: int) -> RingBuffer[SegResult]:
    """The hand-off ring of a consumer with ``delivery``."""
    if delivery is Delivery.LOSSLESS:
        return RingBuffer(buffer, DropPolicy.BLOCK)
    if delivery is Delivery.LATEST:
        return RingBuffer(1, DropPolicy.LATEST)
    return RingBuffer(max(buffer, SPOOLED_HANDOFF), DropPolicy.DROP_OLDEST)


class Consumer:
    """A selection of results and the ring they go into."""

    def __init__(
        self,
        delivery: Delivery,
        buffer: int,
        job: str | None = None,
        sources: frozenset[str] | None = None,
    ) -> None:
        self.id = next(_ids)
        self.delivery = delivery
        self.job = job
        self.sources = sources
        self.ring = ring_for(delivery, buffer)
        self._remaining = set(sources) if sources is not None else None
        self._lock = threading.Lock()

    def matches(self, job: str, source_id: str) -> bool:
        """Whether a result of ``source_id`` in ``job`` is for this consumer."""
        if self.sources is not None:
            return source_id in self.sources
        return self.job is None or self.job == job

    def offer(self, result: SegResult, stopping: threading.Event) -> None:
        """Hand ``result`` over; waits only for a ``lossless`` consumer, and never past a stop."""
        ring = self.ring
        try:
            if self.delivery is not Delivery.LOSSLESS:
                ring.put(result)
                return
            while not ring.put(result, timeout=0.25):
                if stopping.is_set():
                    return
        except RingClosed:  # the consumer left (detached, failed): nothing to deliver to
            return

    def source_ended(self, source_id: str) -> None:
        """``source_id`` has no more results; close when it was the last one named."""
        with self._lock:
            if self._remaining is None or source_id not in self._remaining:
                return
            self._remaining.discard(source_id)
            last = not self._remaining
        if last:
            self.ring.close()

    def job_ended(self, job: str) -> None:
        """``job`` has ended: a consumer of the whole job closes."""
        if self.sources is None and self.job == job:
            self.ring.close()


class Subscription(Consumer):
    """An async iterator over results (see :meth:`Engine.subscribe`).

    ``async for result in subscription`` ends when its sources end; :meth:`aclose` leaves early.
    """

    def __init__(
        self,
        router: Router,
        delivery: Delivery,
        buffer: int,
        job: str | None = None,
        sources: frozenset[str] | None = None,
    ) -> None:
        super().__init__(delivery, buffer, job, sources)
        self._router = router

    def __aiter__(self) -> AsyncIterator[SegResult]:
        return self

    async def __anext__(self) -> SegResult:
        try:
            return await self.ring.aget()
        except RingClosed:
            self._router.remove(self)
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving (idempotent); the worker never waits for this subscriber again."""
        self._router.remove(self)
        self.ring.close()
        self.ring.clear()

    @property
    def dropped(self) -> int:
        """Results this subscriber missed (``latest``: replaced before it read them)."""
        return self.ring.statistics().dropped


class Router:
    """The consumers of an engine; dispatch walks an immutable snapshot, so attach and detach
    never wait for a dispatch in progress."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._consumers: tuple[Consumer, ...] = ()

    def add(self, consumer: Consumer) -> None:
        """Start routing to ``consumer``."""
        with self._lock:
            self._consumers = (*self._consumers, consumer)

    def remove(self, consumer: Consumer) -> None:
        """Stop routing to ``consumer`` (idempotent)."""
        with self._lock:
            self._consumers = tuple(c for c in self._consumers if c is not consumer)

    def dispatch(
        self, result: SegResult, job: str, source_id: str, stopping: threading.Event
    ) -> None:
        """Offer ``result`` to every consumer that selects it."""
        for consumer in self._consumers:
            if consumer.matches(job, source_id):
                consumer.offer(result, stopping)

    def source_ended(self, source_id: str) -> None:
        """Tell every consumer that ``source_id`` ended."""
        for consumer in self._consumers:
            consumer.source_ended(source_id)

    def job_ended(self, job: str) -> None:
        """Tell every consumer that ``job`` ended."""
        for consumer in self._consumers:
            consumer.job_ended(job)

    def close_all(self) -> None:
        """Close every consumer's ring (engine shutdown)."""
        for consumer in self._consumers:
            consumer.ring.close()

    def __len__(self) -> int:
        return len(self._consumers)
