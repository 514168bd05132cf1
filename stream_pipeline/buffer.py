"""Bounded ring buffers between threads and the event loop, with named drop policies.

- ``block``: nothing is lost; a full ring makes the producer wait (files).
- ``drop_oldest``: a full ring drops its oldest item to take the new one; drops are counted (live).
- ``latest``: capacity one; a new item replaces the waiting one (previews).

Producers and consumers may be threads (``put``/``get``) or coroutines (``aput``/``aget``); async
waiters are woken with ``call_soon_threadsafe``. ``close()`` wakes every waiter: getters drain what
is left and then see :class:`RingClosed`; putters see it at once. ``statistics()`` makes metrics
free, as in anyio's memory streams.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from stream_pipeline.errors import ConfigError, parse_choice

__all__ = ["DropPolicy", "RingBuffer", "RingClosed", "RingStatistics"]

T = TypeVar("T")


class DropPolicy(StrEnum):
    """What a full ring does with a new item."""

    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"
    LATEST = "latest"

    @classmethod
    def parse(cls, value: str | DropPolicy) -> DropPolicy:
        """The policy named ``value``; :class:`ConfigError` listing the names otherwise."""
        return parse_choice(cls, value, "buffer policy")


class RingClosed(Exception):
    """The ring is closed (and, for getters, drained)."""


@dataclass(frozen=True, slots=True)
class RingStatistics:
    """A snapshot of a ring's counters."""

    capacity: int
    depth: int
    put: int
    taken: int
    dropped: int
    waited: int
    wait_seconds: float
    closed: bool


class RingBuffer(Generic[T]):
    """A fixed-capacity ring of references with a :class:`DropPolicy`."""

    def __init__(
        self,
        capacity: int,
        policy: DropPolicy | str = DropPolicy.BLOCK,
        doorbell: threading.Event | None = None,
    ) -> None:
        self.policy = DropPolicy.parse(policy)
        if self.policy is DropPolicy.LATEST:
            capacity = 1
        if capacity < 1:
            raise ConfigError(f"ring capacity must be ≥ 1, got {capacity}")
        self._slots: list[T | None] = [None] * capacity  # preallocated; holds references only
        self._head = 0
        self._count = 0
        self._lock = threading.Lock()
        self._not_empty = threading.Condition(self._lock)
        self._not_full = threading.Condition(self._lock)
        self._async_getters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._async_putters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []
        self._doorbell = doorbell
        self._closed = False
        self._put = self._taken = self._dropped = self._waited = 0
        self._wait_seconds = 0.0

    @property
    def capacity(self) -> int:
        """Number of slots."""
        return len(self._slots)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` was called."""
        return self._closed

    def statistics(self) -> RingStatistics:
        """Counters: depth now, items put/taken/dropped, puts that waited and for how long."""
        with self._lock:
            return RingStatistics(
                self.capacity,
                self._count,
                self._put,
                self._taken,
                self._dropped,
                self._waited,
                self._wait_seconds,
                self._closed,
            )

    # -- internals (lock held) -------------------------------------------------------------

    def _push(self, item: T) -> None:
        n = len(self._slots)
        if self._count == n:  # full: only reached for dropping policies
            self._slots[self._head] = None
            self._head = (self._head + 1) % n
            self._count -= 1
            self._dropped += 1
        self._slots[(self._head + self._count) % n] = item
        self._count += 1
        self._put += 1
        self._not_empty.notify()
        self._wake(self._async_getters)
        if self._doorbell is not None:
            self._doorbell.set()

    def _pop(self) -> T:
        item = self._slots[self._head]
        self._slots[self._head] = None
        self._head = (self._head + 1) % len(self._slots)
        self._count -= 1
        self._taken += 1
        self._not_full.notify()
        self._wake(self._async_putters)
        return item  # type: ignore[return-value]

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]]) -> None:
        # Wake every async waiter: each re-checks the ring, so a cancelled waiter never
        # swallows a wake-up that another needed.
        for loop, fut in waiters:
            loop.call_soon_threadsafe(_resolve, fut)
        waiters.clear()

    def _must_wait_to_put(self) -> bool:
        return self.policy is DropPolicy.BLOCK and self._count == len(self._slots)

    # -- thread side -----------------------------------------------------------------------

    def put(self, item: T, timeout: float | None = None) -> bool:
        """Put ``item``; with ``block`` wait for room (``False`` on timeout).

        Raises :class:`RingClosed` if the ring is closed.
        """
        with self._lock:
            if self._closed:
                raise RingClosed
            if self._must_wait_to_put():
                self._waited += 1
                start = time.monotonic()
                ok = self._not_full.wait_for(
                    lambda: self._closed or not self._must_wait_to_put(), timeout
                )
                self._wait_seconds += time.monotonic() - start
                if self._closed:
                    raise RingClosed
                if not ok:
                    return False
            self._push(item)
            return True

    def get(self, timeout: float | None = None) -> T | None:
        """Take the oldest item, waiting up to ``timeout`` (``None`` on timeout).

        Raises :class:`RingClosed` once the ring is closed and empty.
        """
        with self._lock:
            if not self._not_empty.wait_for(lambda: self._count > 0 or self._closed, timeout):
                return None
            if self._count:
                return self._pop()
            raise RingClosed

    def get_nowait(self) -> T | None:
        """Take the oldest item or return ``None``; :class:`RingClosed` if closed and empty."""
        with self._lock:
            if self._count:
                return self._pop()
            if self._closed:
                raise RingClosed
            return None

    def clear(self) -> int:
        """Drop every item waiting in the ring (counted as dropped); how many were dropped."""
        with self._lock:
            n = self._count
            while self._count:
                self._pop()
            self._taken -= n
            self._dropped += n
            return n

    def close(self) -> None:
        """Close the ring and wake every waiter (idempotent). Items left can still be taken."""
        with self._lock:
            self._closed = True
            self._not_empty.notify_all()
            self._not_full.notify_all()
            self._wake(self._async_getters)
            self._wake(self._async_putters)
            if self._doorbell is not None:
                self._doorbell.set()

    # -- event-loop side -------------------------------------------------------------------

    async def aget(self) -> T:
        """Take the oldest item, waiting without blocking the loop; :class:`RingClosed` at end."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._count:
                    return self._pop()
                if self._closed:
                    raise RingClosed
                fut: asyncio.Future[None] = loop.create_future()
                self._async_getters.append((loop, fut))
            await fut

    async def aput(self, item: T) -> None:
        """Put ``item``, waiting without blocking the loop while a ``block`` ring is full."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                if self._closed:
                    raise RingClosed
                if not self._must_wait_to_put():
                    self._push(item)
                    return
                self._waited += 1
                fut: asyncio.Future[None] = loop.create_future()
                self._async_putters.append((loop, fut))
            await fut

    def __aiter__(self) -> RingBuffer[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.aget()
        except RingClosed:
            raise StopAsyncIteration from None


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
