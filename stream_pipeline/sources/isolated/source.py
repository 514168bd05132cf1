"""The parent side of a decoder child: a thread source whose frames come from another process.

:class:`IsolatedSource` starts a child (:func:`~stream_pipeline.sources.isolated.child.child_main`)
that runs the ordinary source for the spec, and turns the slot numbers it sends into frames whose
pixels are views on the shared slots (no copy on this side). The child is watched: one that dies
(a crash, SIGKILL) or makes no progress for ``hang_timeout`` while it has free slots to write
into is killed, counted (``decoder_restarts``) and started again with backoff; the slots it held
come back. Frame ids come from this side's clock, so they continue across restarts; a restarted
*file* decoder is told how many frames were already received and discards those, so every frame
reaches the ring exactly once. A live one simply reconnects.

Children are started by a forkserver with the decoding modules preloaded
(:mod:`.launch`), so a restart takes milliseconds.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.context
import signal
import threading
import time
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing.connection import Connection, wait
from multiprocessing.reduction import send_handle

from stream_pipeline.buffer import RingBuffer, RingClosed
from stream_pipeline.errors import ConfigError, SourceError, SourceOpenError
from stream_pipeline.frames import Frame
from stream_pipeline.sources import AnySource, make_source, source_factory
from stream_pipeline.sources.base import Source, SourceSpec, SourceState
from stream_pipeline.sources.isolated import protocol as msg
from stream_pipeline.sources.isolated.child import child_main
from stream_pipeline.sources.isolated.launch import DECODER_NAME, decoder_context
from stream_pipeline.sources.isolated.slots import SlotPool, SlotReturns

__all__ = ["IsolatedSource", "describe_exit", "isolate"]

log = logging.getLogger(__name__)

_AHEAD = 8  # slots a child may hold at once: how far a file decoder reads ahead
_START_GRACE = 30.0  # on top of open_timeout: the first start also starts the forkserver
_STOP_GRACE = 2.0  # a stopped child closes its input (RTSP TEARDOWN) within this, or is killed
_MAX_RESTARTS = 5  # restarts in a row without a new frame before the source fails


def isolate(
    spec: SourceSpec, slots: int | None = None, hang_timeout: float | None = None
) -> AnySource:
    """``spec``'s source, decoding in a child process if it is a thread source."""
    source = make_source(spec)
    if source.kind != "thread":
        return source
    source.close()
    return IsolatedSource(spec, slots, hang_timeout)


class _Outcome(Enum):
    ENDED = "ended"
    STOPPED = "stopped"
    DIED = "died"
    HUNG = "hung"


@dataclass(eq=False)
class _Child:
    """One decoder process and what this side knows of it."""

    process: multiprocessing.process.BaseProcess
    conn: Connection
    granted: set[int] = field(default_factory=set)  # slots it may write, not yet sent back
    progress: float = field(default_factory=time.monotonic)  # last message, or last wait
    state: SourceState = SourceState.CONNECTING
    reconnects: int = 0
    error: str | None = None
    frames: int = 0

    @property
    def pid(self) -> int | None:
        return self.process.pid

    def send(self, message: msg.ParentMessage) -> None:
        # A child that is gone is noticed by its sentinel or the end of its pipe, not here.
        with contextlib.suppress(OSError):
            self.conn.send(message)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, ValueError):
            self.process.kill()

    def close(self) -> None:
        self.conn.close()
        self.process.join(5.0)
        if self.process.exitcode is not None:
            self.process.close()


def describe_exit(code: int | None) -> str:
    """How a child ended, in words: ``"was killed by SIGKILL"``, ``"exited with status 1"``."""
    if code is None:
        return "did not exit"
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with status {code}"


class IsolatedSource(Source):
    """``spec``'s (thread) source, decoding in a child process (see the module docstring).

    ``slots``: frames in shared memory at once (default ``2 × buffer_size + 8``): those in the
    ring, in the worker and in consumers' queues, plus a few being decoded. ``hang_timeout``:
    seconds without progress, while the child has somewhere to write, before it is restarted
    (default ``max(open_timeout, read_timeout) + 10``).
    """

    def __init__(
        self, spec: SourceSpec, slots: int | None = None, hang_timeout: float | None = None
    ) -> None:
        super().__init__(spec)
        self._factory = source_factory(spec)
        probe = self._factory(spec)  # bad parameters fail here, as they would in-process
        try:
            if probe.kind != "thread":
                raise ConfigError(f"source {spec.id}: only thread sources decode in a child")
            self.clock.fps = probe.clock.fps
            self.status.set_total(probe.status.total_frames)
        finally:
            if isinstance(probe, Source):
                probe.close()
        self.slot_count = slots or 2 * spec.buffer_size + 8
        if self.slot_count < 2:
            raise ConfigError(f"source {spec.id}: a decoder child needs at least 2 slots")
        self.hang_timeout = hang_timeout or max(spec.open_timeout, spec.read_timeout) + 10.0
        self._returns = SlotReturns()
        self._pool: SlotPool | None = None
        self._generation = 0
        self._child: _Child | None = None
        self._lock = threading.Lock()

    @property
    def child_pid(self) -> int | None:
        """The decoder child's process id, while one runs."""
        child = self._child
        return None if child is None else child.pid

    # -- the child's life ------------------------------------------------------------------

    def _spawn(self, restart: bool) -> _Child:
        ctx = decoder_context()
        ours, theirs = ctx.Pipe(duplex=True)
        skip = self.clock.next_id if restart and not self.spec.live else 0
        process = ctx.Process(
            target=child_main,
            args=(theirs, self._factory, self.spec, skip, restart, self._pool is not None),
            name=f"{DECODER_NAME}:{self.spec.id}",
            daemon=True,
        )
        try:
            process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        child = _Child(process, ours)
        if self._pool is not None:
            self._offer_pool(child)
        with self._lock:
            self._child = child
        return child

    def _offer_pool(self, child: _Child) -> None:
        pool = self._pool
        assert pool is not None and child.pid is not None
        child.send(msg.NewPool(pool.generation, pool.slot_bytes, pool.count))
        with contextlib.suppress(OSError):
            send_handle(child.conn, pool.fd, child.pid)
        child.granted.clear()
        self._grant(child)

    def _grant(self, child: _Child) -> None:
        """Give the child freed slots, up to :data:`_AHEAD` held at once, in batches: once it
        holds half of that or less (and be woken by the next slot that comes back till then)."""
        pool = self._pool
        if pool is None:
            return
        short = len(child.granted) <= _AHEAD // 2
        self._returns.wake = short  # before taking: a slot returned after take() wakes the wait
        for generation, slot in self._returns.take():
            if generation == pool.generation:
                pool.free.append(slot)
        room = _AHEAD - len(child.granted)
        if not short or not pool.free:
            return
        slots = tuple(pool.free[-room:])
        del pool.free[-room:]
        child.granted.update(slots)
        child.send(msg.Grant(pool.generation, slots))

    def _new_pool(self, child: _Child, nbytes: int) -> None:
        if self._pool is not None:
            self._pool.retire()  # frames still out keep their mapping
        self._generation += 1
        self._pool = SlotPool(self._generation, nbytes, self.slot_count, self._returns)
        self._offer_pool(child)

    def _stop_child(self) -> None:
        """Ask the child to stop, kill it if it does not, and reap it (idempotent)."""
        with self._lock:
            child, self._child = self._child, None
        if child is None:
            return
        child.send(msg.Stop())
        child.process.join(_STOP_GRACE)
        if child.process.exitcode is None:
            child.kill()
        child.close()

    def _bury(
        self, child: _Child, outcome: _Outcome, ring: RingBuffer[Frame], stop: threading.Event
    ) -> str:
        """Reap a dead or hung child, keep the frames it finished, reclaim its slots; why it
        ended, in words."""
        if outcome is _Outcome.HUNG:
            child.kill()
        child.process.join(5.0)
        why = (
            f"made no progress for {self.hang_timeout:g} s"
            if outcome is _Outcome.HUNG
            else describe_exit(child.process.exitcode)
        )
        # Frames it sent before the end are whole (a slot is written before it is named).
        with contextlib.suppress(Exception):  # a message cut off by the kill ends the drain
            while child.conn.poll(0):
                message = child.conn.recv()
                if isinstance(message, msg.FrameReady):
                    self._take_frame(message, child, ring, stop)
        pool = self._pool
        if pool is not None:
            pool.free.extend(child.granted)
        with self._lock:
            if self._child is child:
                self._child = None
        child.close()
        return why

    # -- Source ----------------------------------------------------------------------------

    def open(self) -> None:
        """Start the child and wait until it has opened the input, or raise its error."""
        self.status.set_state(SourceState.CONNECTING)
        child = self._spawn(restart=False)
        deadline = time.monotonic() + self.spec.open_timeout + _START_GRACE
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise SourceOpenError(
                        f"source {self.spec.id}: the decoder process did not open the input "
                        f"within {self.spec.open_timeout + _START_GRACE:g} s"
                    )
                ready = wait([child.conn, child.process.sentinel], remaining)
                if child.conn in ready:
                    try:
                        message = child.conn.recv()
                    except (EOFError, OSError):
                        message = None
                    if message is not None:
                        if self._handle_open(message, child):
                            return
                        continue
                if child.process.sentinel in ready or child.conn in ready:
                    child.process.join(5.0)
                    why = describe_exit(child.process.exitcode)
                    raise SourceOpenError(
                        f"source {self.spec.id}: the decoder process {why} while opening"
                    )
        except BaseException as exc:
            self._stop_child()
            if isinstance(exc, SourceOpenError):
                self.status.set_error(str(exc))
                self.status.set_state(SourceState.FAILED)
            raise

    def _handle_open(self, message: msg.ChildMessage, child: _Child) -> bool:
        """A message while opening: True once opened; raises what the child could not open."""
        if isinstance(message, msg.Opened):
            self._opened(message)
            return True
        if isinstance(message, msg.OpenFailed):
            raise SourceOpenError(message.message)
        if isinstance(message, msg.Raised):
            raise RuntimeError(f"source {self.spec.id}: {message.message}")
        if isinstance(message, msg.StatusUpdate):
            self._mirror(message, child)
        elif isinstance(message, msg.LogLine):
            logging.getLogger(message.logger).log(message.level, "%s", message.message)
        return False

    def _opened(self, message: msg.Opened) -> None:
        self.clock.fps = message.fps
        if message.total is not None:
            self.status.set_total(message.total)

    def run(self, ring: RingBuffer[Frame], stop: threading.Event) -> None:
        """Turn the child's slots into frames until the end, ``stop``, or a child that keeps
        dying without delivering a frame."""
        in_a_row = 0
        try:
            while not stop.is_set():
                child = self._child or self._spawn(restart=True)
                try:
                    outcome = self._serve(child, ring, stop)
                except RingClosed:
                    return
                if outcome in (_Outcome.ENDED, _Outcome.STOPPED):
                    return
                why = self._bury(child, outcome, ring, stop)
                in_a_row = 1 if child.frames else in_a_row + 1
                self._restarted(why, in_a_row)
                if stop.wait(min(0.1 * 2 ** (in_a_row - 1), 5.0)):
                    return
        finally:
            self._stop_child()
            self.status.finish(stopped=stop.is_set())

    def _restarted(self, why: str, in_a_row: int) -> None:
        n = self.clock.next_id
        where = f"after frame {n - 1}" if n else "before the first frame"
        if in_a_row > _MAX_RESTARTS:
            raise SourceError(
                f"source {self.spec.id}: the decoder process {why} {where}, "
                f"{in_a_row} times in a row"
            )
        message = f"decoder process {why} {where}; restarted"
        self.status.count_decoder_restart()
        self.status.set_error(message)
        log.warning("source %s: %s", self.spec.id, message)
        if self.spec.live:
            self.clock.restart()

    def _serve(self, child: _Child, ring: RingBuffer[Frame], stop: threading.Event) -> _Outcome:
        """Take the child's messages until it ends, dies or hangs, or ``stop``."""
        while not stop.is_set():
            self._grant(child)
            # A slot coming back wakes this wait too: the child gets it at once.
            ready = wait([child.conn, child.process.sentinel, self._returns.fileno()], 0.05)
            if child.conn in ready:
                try:
                    message = child.conn.recv()
                except (EOFError, OSError):
                    return _Outcome.DIED
                child.progress = time.monotonic()
                outcome = self._handle(message, child, ring, stop)
                if outcome is not None:
                    return outcome
            elif child.process.sentinel in ready:
                return _Outcome.DIED
            elif self._hung(child):
                return _Outcome.HUNG
        return _Outcome.STOPPED

    def _hung(self, child: _Child) -> bool:
        now = time.monotonic()
        # Every slot of the pool with us: it waits for the consumers. Before its first frame
        # there is no pool yet, and it owes us one.
        waiting = self._pool is not None and not child.granted
        if waiting or child.state is SourceState.RECONNECTING:
            child.progress = now  # waiting for slots, or backing off: nothing is due
            return False
        return now - child.progress > self.hang_timeout

    def _handle(
        self,
        message: msg.ChildMessage,
        child: _Child,
        ring: RingBuffer[Frame],
        stop: threading.Event,
    ) -> _Outcome | None:
        if isinstance(message, msg.FrameReady):
            if not self._take_frame(message, child, ring, stop):
                return _Outcome.STOPPED
        elif isinstance(message, msg.NeedSlots):
            self._new_pool(child, message.nbytes)
        elif isinstance(message, msg.StatusUpdate):
            self._mirror(message, child)
        elif isinstance(message, msg.LogLine):
            logging.getLogger(message.logger).log(message.level, "%s", message.message)
        elif isinstance(message, msg.Opened):
            self._opened(message)
        elif isinstance(message, msg.OpenFailed):
            raise SourceOpenError(message.message)
        elif isinstance(message, msg.Raised):
            if message.source_error:
                raise SourceError(message.message)
            raise RuntimeError(f"source {self.spec.id}: {message.message}")
        elif isinstance(message, msg.Ended):
            if message.dropped:
                self.status.count_dropped(message.dropped)
            return _Outcome.ENDED
        return None

    def _take_frame(
        self, message: msg.FrameReady, child: _Child, ring: RingBuffer[Frame], stop: threading.Event
    ) -> bool:
        pool = self._pool
        if pool is None or message.generation != pool.generation:
            raise SourceError(f"source {self.spec.id}: the decoder wrote outside its slots")
        child.granted.discard(message.slot)
        child.frames += 1
        if message.dropped:
            self.status.count_dropped(message.dropped)
        rgb = pool.lease(message.slot, message.height, message.width)
        frame = Frame(self.clock.stamp(message.pts, message.width, message.height), rgb=rgb)
        del rgb
        return self.put(ring, frame, stop)

    def _mirror(self, message: msg.StatusUpdate, child: _Child) -> None:
        """The child's source counters, continued across children."""
        state = SourceState(message.state)
        if state not in (SourceState.FINISHED, SourceState.STOPPED):
            self.status.set_state(state)
        for _ in range(message.reconnects - child.reconnects):
            self.status.count_reconnect()
        child.reconnects = max(child.reconnects, message.reconnects)
        if message.error != child.error and message.error is not None:
            self.status.set_error(message.error)
        child.error = message.error
        if message.total is not None:
            self.status.set_total(message.total)
        child.state = state

    def close(self) -> None:
        """Stop the child and retire the slot pool; frames still out keep their pixels."""
        self._stop_child()
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.retire()
        self._returns.close()
