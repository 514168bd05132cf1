"""The decoder child: runs an ordinary thread source with a ring that writes into shared slots.

:func:`child_main` is the target of the child process. It builds the source with the factory
the parent resolved (so a scheme registered only by the parent's imports works too), opens it and
runs it with a :class:`SlotWriter` as its ring. For a PyAV source the writer also does the
source's YUV→RGB conversion (``AvSource.rgb_of``): it takes a slot the parent granted and has
libswscale write the RGB pixels straight into it (:mod:`.convert`), so ``put`` only sends the slot
number; other sources' frames, and formats the direct conversion does not take, are copied into
a slot by ``put``. A second thread reads the parent's messages (grants,
pools, stop) and reports the source's counters when they change.

The child dies with its parent: on Linux ``PR_SET_PDEATHSIG`` kills it when its parent process
(the forkserver, which itself exits when the service does) dies, and an end of file on the pipe
makes it exit too.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import mmap
import os
import signal
import sys
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.reduction import recv_handle
from typing import Any

import numpy as np

from stream_pipeline.buffer import DropPolicy, RingBuffer
from stream_pipeline.errors import SourceError, SourceOpenError
from stream_pipeline.frames import Frame, UInt8Array
from stream_pipeline.redact import redact_text
from stream_pipeline.sources.av_source import AvSource
from stream_pipeline.sources.base import Source, SourceSpec
from stream_pipeline.sources.isolated.convert import DIRECT_FORMATS, rgb24_into
from stream_pipeline.sources.isolated.convert import available as convert_available
from stream_pipeline.sources.isolated.protocol import (
    ChildMessage,
    Ended,
    FrameReady,
    Grant,
    LogLine,
    NeedSlots,
    NewPool,
    Opened,
    OpenFailed,
    Raised,
    StatusUpdate,
    Stop,
)
from stream_pipeline.sources.isolated.slots import frame_bytes, map_slots, slot_view

__all__ = ["SlotWriter", "child_main"]

_PR_SET_PDEATHSIG = 1
_STATUS_EVERY = 0.2  # seconds between looks at the source's counters


class _Sender:
    """``conn.send`` from two threads; a parent that is gone ends the child."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def __call__(self, message: ChildMessage) -> None:
        try:
            with self._lock:
                self.conn.send(message)
        except OSError:
            os._exit(0)


class _PipeHandler(logging.Handler):
    """Log records go to the parent, which logs them under the same logger names."""

    def __init__(self, send: _Sender) -> None:
        super().__init__(logging.INFO)
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._send(LogLine(record.name, record.levelno, record.getMessage()))


class SlotWriter(RingBuffer[Frame]):
    """The ring the child's source puts into: each frame is copied into a granted slot.

    A ``block`` source waits for the parent to grant a slot (back-pressure); a dropping (live)
    one drops the frame when none is free, and the drop is reported with the next frame. The
    first ``skip`` frames are discarded: a restarted file decoder catches up without repeating.
    With ``pool_coming``, the parent offered its pool at the start: wait for it before asking
    for one (the offer may still be in the pipe).
    """

    def __init__(
        self,
        send: Callable[[ChildMessage], None],
        policy: DropPolicy,
        skip: int,
        pool_coming: bool,
    ) -> None:
        super().__init__(1)
        self._send = send
        self._wait = policy is DropPolicy.BLOCK
        self._skip = skip
        self._cond = threading.Condition()
        self._free: list[int] = []
        self._generation = -1
        self._mm: mmap.mmap | None = None
        self._slot_bytes = 0
        self._asked = 0
        self._dropped = 0
        self._pool_coming = pool_coming
        self._stopped = False
        self._pending: tuple[UInt8Array, int, int] | None = None
        self._drop_next = False
        self.direct = 0  # frames converted straight into a slot
        self.copied = 0  # frames converted by to_ndarray (then copied into a slot, or dropped)

    @property
    def dropped(self) -> int:
        """Frames dropped and not yet reported."""
        return self._dropped

    def grant(self, grant: Grant) -> None:
        """Slots the parent freed for this child (ignored if their pool is no longer current)."""
        with self._cond:
            if grant.generation == self._generation:
                self._free.extend(grant.slots)
                self._cond.notify_all()

    def use_pool(self, pool: NewPool, mm: mmap.mmap) -> None:
        """A new pool replaces the old one, with no slot granted yet."""
        with self._cond:
            self._generation, self._mm, self._slot_bytes = pool.generation, mm, pool.slot_bytes
            self._free = []
            self._cond.notify_all()

    def stop(self) -> None:
        """The parent asked to stop: a ``put`` waiting for a slot gives up at once."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    def _ready(self, nbytes: int) -> bool:
        return self._stopped or (self._slot_bytes >= nbytes and bool(self._free))

    def _take_slot(self, nbytes: int, timeout: float | None) -> tuple[mmap.mmap, int, int] | bool:
        """A granted slot big enough for ``nbytes`` as (map, generation, slot); True when a live
        source must drop the frame (none free), False when none came in ``timeout`` or stopped."""
        with self._cond:
            if self._pool_coming:
                self._cond.wait_for(lambda: self._stopped or self._mm is not None, timeout)
                if self._mm is None:
                    return False
            if self._stopped:
                return False
            if self._slot_bytes < nbytes and self._asked < nbytes:
                self._asked = nbytes
                self._send(NeedSlots(nbytes))
            if self._slot_bytes >= nbytes and not self._free and not self._wait:
                return True  # live: never wait for the parent, as a dropping ring
            if not self._cond.wait_for(lambda: self._ready(nbytes), timeout) or self._stopped:
                return False
            assert self._mm is not None
            return self._mm, self._generation, self._free.pop()

    def rgb_of(self, vf: Any) -> UInt8Array:
        """The source's conversion (``AvSource.rgb_of``): YUV straight into a slot.

        The slot is taken here, before the frame exists, so the conversion is the only pass over
        the pixels; ``put`` then only sends its number. Frames to skip or drop, a format
        :func:`rgb24_into` does not take, and a stop while waiting convert as in-process
        (``to_ndarray``), and ``put`` copies or drops them as before.
        """
        if not self._skip and vf.format.name in DIRECT_FORMATS and convert_available():
            height, width = vf.height, vf.width
            taken = self._take_slot(frame_bytes(height, width), None)
            if isinstance(taken, tuple):
                mm, generation, slot = taken
                view = slot_view(mm, slot * self._slot_bytes, height, width)
                if rgb24_into(vf, view):
                    self._pending = (view, generation, slot)
                    self.direct += 1
                    return view
                self.grant(Grant(generation, (slot,)))
            elif taken:
                self._dropped += 1
                self._drop_next = True
        self.copied += 1
        rgb: UInt8Array = vf.to_ndarray(format="rgb24")
        return rgb

    def put(self, item: Frame, timeout: float | None = None) -> bool:
        """Send ``item``'s slot (or copy it into one first) and tell the parent; False if no slot
        came in ``timeout``."""
        if self._skip:
            self._skip -= 1
            return True
        rgb = item.rgb
        if rgb is None:
            raise SourceError("a decoder child can only pass host (RGB) frames")
        height, width = rgb.shape[:2]
        pending, self._pending = self._pending, None
        if pending is not None and pending[0] is rgb:
            _, generation, slot = pending
        else:
            if pending is not None:  # a slot converted into but never put: free it again
                self.grant(Grant(pending[1], (pending[2],)))
            if self._drop_next:  # rgb_of found no free slot: counted as dropped there
                self._drop_next = False
                return True
            taken = self._take_slot(frame_bytes(height, width), timeout)
            if not isinstance(taken, tuple):
                if taken:
                    self._dropped += 1
                return taken
            mm, generation, slot = taken
            np.copyto(slot_view(mm, slot * self._slot_bytes, height, width), rgb)
        dropped, self._dropped = self._dropped, 0
        self._send(FrameReady(generation, slot, height, width, item.meta.pts_seconds, dropped))
        return True


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (checked once, against the race)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(0)


def _status(source: Source) -> StatusUpdate:
    counts = source.status.snapshot()
    return StatusUpdate(
        counts.state.value, counts.reconnects, counts.last_error, counts.total_frames
    )


def _control(
    conn: Connection,
    send: _Sender,
    source: Source,
    writer: SlotWriter,
    stop: threading.Event,
) -> None:
    """Read the parent's messages; report the source's counters when they change."""
    last = _status(source)
    send(last)
    while True:
        try:
            if conn.poll(_STATUS_EVERY):
                message = conn.recv()
                if isinstance(message, Grant):
                    writer.grant(message)
                elif isinstance(message, NewPool):
                    fd = recv_handle(conn)
                    writer.use_pool(message, map_slots(fd, message.slot_bytes * message.count))
                elif isinstance(message, Stop):
                    stop.set()
                    writer.stop()
        except (EOFError, OSError):
            os._exit(0)  # the parent is gone: nobody wants these frames
        now = _status(source)
        if now != last:
            send(now)
            last = now


def child_main(
    conn: Connection,
    factory: Callable[[SourceSpec], object],
    spec: SourceSpec,
    skip: int,
    restart: bool,
    pool_coming: bool,
) -> None:
    """Open and run ``factory(spec)`` in this (child) process, frames into the parent's slots."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the service's to handle
    send = _Sender(conn)
    root = logging.getLogger()
    root.addHandler(_PipeHandler(send))
    root.setLevel(logging.INFO)
    try:
        source = factory(spec)
        if not isinstance(source, Source):
            raise TypeError(f"source {spec.id}: not a thread source")
        try:
            source.open()
        except SourceOpenError:
            # A restarted live source reconnects in run(), as after a dropped connection.
            if not (restart and spec.live):
                raise
    except SourceOpenError as exc:
        send(OpenFailed(str(exc).splitlines()[0]))
        return
    except Exception as exc:
        send(Raised(_one_line(exc, spec), source_error=False))
        return
    send(Opened(source.clock.fps, source.status.total_frames))
    writer = SlotWriter(send, spec.policy, skip, pool_coming)
    if isinstance(source, AvSource):
        source.rgb_of = writer.rgb_of  # decode straight into the slots
    stop = threading.Event()
    threading.Thread(
        target=_control, args=(conn, send, source, writer, stop), name="control", daemon=True
    ).start()
    try:
        source.run(writer, stop)
    except SourceError as exc:
        send(Raised(_one_line(exc, spec), source_error=True))
    except Exception as exc:
        send(Raised(_one_line(exc, spec), source_error=False))
    else:
        send(_status(source))
        send(Ended(writer.dropped))
    finally:
        source.close()


def _one_line(exc: BaseException, spec: SourceSpec) -> str:
    text = str(exc).strip()
    return redact_text(text.splitlines()[0], spec.url) if text else type(exc).__name__
