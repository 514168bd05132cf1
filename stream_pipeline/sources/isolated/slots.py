"""Frame slots in shared memory: a pool the parent owns and leases out as numpy views.

A pool is one anonymous memory file (``memfd_create``) of ``count`` slots of ``slot_bytes``,
mapped by the parent and by the decoder child (which gets the descriptor over the pipe). Having
no name, it cannot be left behind in ``/dev/shm`` whoever dies, however: the kernel frees it when
the last mapping and descriptor go. It is not limited by the size of ``/dev/shm`` either (64 MiB
in a default container), and pages are only backed once written; the slots are reused
most-recently-freed first, so a pool touches about as many pages as frames are in flight.

:meth:`SlotPool.lease` gives the engine a view on a slot, with no copy. The slot comes back (to
:class:`SlotReturns`, the one thing the releasing thread touches) when the last array that shares
that memory is garbage-collected: numpy makes the flat array made here the base of every view
derived from it, so a finalizer on it fires only once no view is left. A retired
pool (the frame size grew, or the source closed) closes its descriptor at once; its mapping stays
valid for the frames still out and goes with the last of them.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import threading
import weakref

import numpy as np

from stream_pipeline.frames import UInt8Array

__all__ = ["SlotPool", "SlotReturns", "frame_bytes", "map_slots", "slot_view"]

_PAGE = mmap.PAGESIZE


def frame_bytes(height: int, width: int) -> int:
    """The bytes of one RGB frame."""
    return height * width * 3


def slot_view(mm: mmap.mmap, offset: int, height: int, width: int) -> UInt8Array:
    """A ``height``×``width``×3 uint8 view on ``mm`` at ``offset`` (no copy)."""
    flat = np.frombuffer(mm, dtype=np.uint8, count=frame_bytes(height, width), offset=offset)
    return flat.reshape(height, width, 3)


def map_slots(fd: int, size: int) -> mmap.mmap:
    """Map the pool behind ``fd`` (shared, read-write) and close ``fd``: the mapping suffices."""
    try:
        return mmap.mmap(fd, size)
    finally:
        os.close(fd)


class SlotReturns:
    """Slots coming back from any thread, and a pipe that wakes the source's thread for them.

    Finalizers call :meth:`put` from whichever thread drops a frame last; only the source's
    thread calls :meth:`take`. :meth:`close` (the source closed) closes the pipe at once; frames
    still out then only go back to the deque. The lock is re-entrant because a finalizer can run
    in the middle of :meth:`close` on the same thread (a garbage collection).
    """

    def __init__(self) -> None:
        #: Set by the source's thread while it wants a wake-up per slot (its child runs short);
        #: otherwise slots wait in the deque for its next look, in batches.
        self.wake = False
        self._queue: collections.deque[tuple[int, int]] = collections.deque()
        self._lock = threading.RLock()
        self._closed = False
        self._read, self._write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._close_fds = weakref.finalize(self, _close, self._read, self._write)

    def fileno(self) -> int:
        """Readable when a slot came back (for ``multiprocessing.connection.wait``)."""
        return self._read

    def put(self, item: tuple[int, int]) -> None:
        """``(generation, slot)`` is free again (any thread)."""
        self._queue.append(item)
        if self.wake:
            with self._lock, contextlib.suppress(BlockingIOError):  # full: a wake-up is pending
                if not self._closed:  # a closed descriptor's number may be another file's now
                    os.write(self._write, b"\0")

    def take(self) -> list[tuple[int, int]]:
        """Every slot that came back since the last call."""
        with self._lock, contextlib.suppress(BlockingIOError):
            while not self._closed and os.read(self._read, 4096):
                pass
        items = []
        while self._queue:
            items.append(self._queue.popleft())
        return items

    def close(self) -> None:
        """Close the pipe (idempotent)."""
        with self._lock:
            self._closed = True
            self._close_fds()


def _close(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


class SlotPool:
    """``count`` slots of ``slot_bytes`` (rounded up to a page) in one memory file.

    Used by one thread (the source's); finalizers give slots back through ``returns``.
    """

    def __init__(
        self,
        generation: int,
        slot_bytes: int,
        count: int,
        returns: SlotReturns,
    ) -> None:
        self.generation = generation
        self.slot_bytes = -(-slot_bytes // _PAGE) * _PAGE
        self.count = count
        self.returns = returns
        self.size = self.slot_bytes * count
        fd = os.memfd_create(f"stream-pipeline-slots-{generation}", os.MFD_CLOEXEC)
        try:
            os.ftruncate(fd, self.size)
            self._mm: mmap.mmap | None = mmap.mmap(fd, self.size)
        except BaseException:
            os.close(fd)
            raise
        self._fd: int | None = fd
        # Most recently freed last: popped first, so the same few slots (and pages) are reused.
        self.free: list[int] = list(reversed(range(count)))

    @property
    def fd(self) -> int:
        """The memory file's descriptor (for passing to a child); only while not retired."""
        if self._fd is None:
            raise ValueError("the slot pool is retired")
        return self._fd

    def lease(self, slot: int, height: int, width: int) -> UInt8Array:
        """A view on ``slot`` holding a ``height``×``width`` frame; the slot returns when the view
        and everything derived from it are gone."""
        if self._mm is None:
            raise ValueError("the slot pool is retired")
        rgb = slot_view(self._mm, slot * self.slot_bytes, height, width)
        assert rgb.base is not None  # the flat array: every later view has it as its base
        weakref.finalize(rgb.base, self.returns.put, (self.generation, slot))
        return rgb

    def retire(self) -> None:
        """Close the descriptor and let the mapping go with the last frame still out."""
        fd, self._fd, self._mm = self._fd, None, None
        if fd is not None:
            os.close(fd)
