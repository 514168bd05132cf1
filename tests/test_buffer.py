"""RingBuffer: policies, statistics, close semantics, thread and async waiters."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from stream_pipeline.buffer import DropPolicy, RingBuffer, RingClosed
from stream_pipeline.errors import ConfigError


def test_block_policy_waits_and_loses_nothing() -> None:
    ring: RingBuffer[int] = RingBuffer(3, "block")
    got: list[int] = []

    def consume() -> None:
        try:
            while True:
                item = ring.get(timeout=5)
                if item is not None:
                    got.append(item)
                    time.sleep(0.001)
        except RingClosed:
            pass

    t = threading.Thread(target=consume)
    t.start()
    for i in range(200):
        assert ring.put(i, timeout=5)
    ring.close()
    t.join(5)
    assert got == list(range(200))
    stats = ring.statistics()
    assert stats.put == stats.taken == 200 and stats.dropped == 0 and stats.waited > 0
    assert stats.closed and stats.depth == 0


def test_block_put_times_out_when_full() -> None:
    ring: RingBuffer[int] = RingBuffer(1, "block")
    assert ring.put(1)
    assert ring.put(2, timeout=0.05) is False
    assert ring.statistics().depth == 1


def test_drop_oldest_keeps_newest_and_counts_drops() -> None:
    ring: RingBuffer[int] = RingBuffer(4, DropPolicy.DROP_OLDEST)
    for i in range(10):
        assert ring.put(i)
        assert ring.statistics().depth <= 4
    assert [ring.get_nowait() for _ in range(4)] == [6, 7, 8, 9]
    stats = ring.statistics()
    assert stats.dropped == 6 and stats.put == 10 and stats.taken == 4


def test_latest_holds_one() -> None:
    ring: RingBuffer[str] = RingBuffer(8, "latest")
    assert ring.capacity == 1
    for s in "abc":
        ring.put(s)
    assert ring.get_nowait() == "c" and ring.get_nowait() is None
    assert ring.statistics().dropped == 2


def test_close_wakes_every_waiter_and_drains() -> None:
    ring: RingBuffer[int] = RingBuffer(1, "block")
    ring.put(1)
    outcomes: list[str] = []

    def putter() -> None:
        try:
            ring.put(2)
            outcomes.append("put")
        except RingClosed:
            outcomes.append("closed")

    threads = [threading.Thread(target=putter) for _ in range(3)]
    for t in threads:
        t.start()
    time.sleep(0.05)
    ring.close()
    for t in threads:
        t.join(2)
        assert not t.is_alive()
    assert outcomes == ["closed"] * 3
    assert ring.get() == 1  # what was in the ring can still be taken
    with pytest.raises(RingClosed):
        ring.get(timeout=1)
    with pytest.raises(RingClosed):
        ring.put(3)
    ring.close()  # idempotent


def test_unknown_policy_is_a_clear_error() -> None:
    with pytest.raises(
        ConfigError, match="buffer policy must be one of block, drop_oldest, latest"
    ):
        RingBuffer(2, "fifo")


@pytest.mark.timeout(10)
async def test_async_side_with_thread_producer() -> None:
    ring: RingBuffer[int] = RingBuffer(2, "block")

    def produce() -> None:
        for i in range(50):
            ring.put(i)
        ring.close()

    t = threading.Thread(target=produce)
    t.start()
    got = [item async for item in ring]
    t.join(2)
    assert got == list(range(50))


@pytest.mark.timeout(10)
async def test_async_getter_cancelled_does_not_lose_wakeups() -> None:
    ring: RingBuffer[int] = RingBuffer(2, "block")
    first = asyncio.ensure_future(ring.aget())
    second = asyncio.ensure_future(ring.aget())
    await asyncio.sleep(0.01)
    first.cancel()
    ring.put(7)
    assert await asyncio.wait_for(second, 2) == 7
    await ring.aput(8)
    await ring.aput(9)
    blocked = asyncio.ensure_future(ring.aput(10))
    await asyncio.sleep(0.01)
    assert not blocked.done()
    ring.close()
    with pytest.raises(RingClosed):
        await asyncio.wait_for(blocked, 2)
