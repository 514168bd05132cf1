"""What every source shares: its spec, its state machine, its locked counters and its frame clock.

Two kinds of source sit behind one contract: :class:`Source` decodes in a thread of its own
(PyAV, synthetic scenes) and :class:`AsyncSource` produces on the event loop (an aiortc track);
the engine runs each the way it needs. Both stamp frames with a :class:`FrameClock`, so frame ids
and timestamps continue across reconnects whatever the source.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from stream_pipeline.buffer import DropPolicy, RingBuffer
from stream_pipeline.errors import ConfigError
from stream_pipeline.frames import Frame, FrameMeta
from stream_pipeline.redact import redact_url
from stream_pipeline.retry import ReconnectPolicy

__all__ = [
    "LIVE_SCHEMES",
    "AsyncSource",
    "FrameClock",
    "ReconnectPolicy",
    "Source",
    "SourceCounters",
    "SourceCounts",
    "SourceSpec",
    "SourceState",
    "parse_source_arg",
]

# Live: reconnect, and drop the oldest frame rather than wait (WebRTC peers included).
LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "rtp", "tcp", "whip", "webrtc")
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class SourceState(StrEnum):
    """Where a source is in its life."""

    CONNECTING = "connecting"
    STREAMING = "streaming"
    RECONNECTING = "reconnecting"
    FAILED = "failed"
    STOPPED = "stopped"
    FINISHED = "finished"


@dataclass(frozen=True, slots=True)
class SourceSpec:
    """One input: a URL or path (or ``synthetic://street?...``) and how to read it."""

    url: str
    id: str = ""
    buffer_policy: DropPolicy | None = None  # None: drop_oldest for live, block for files
    buffer_size: int = 8
    realtime: bool = False  # pace a file at its frame rate, like a camera
    transport: str = "tcp"  # RTSP: tcp or udp
    open_timeout: float = 10.0
    read_timeout: float = 5.0  # also the stall watchdog: no frame for this long → reconnect
    max_frames: int | None = None
    reconnect: ReconnectPolicy = field(default_factory=ReconnectPolicy)
    options: tuple[tuple[str, str], ...] = ()  # extra FFmpeg options

    @property
    def scheme(self) -> str:
        """URL scheme (lower case), ``"file"`` for plain paths."""
        head, sep, _ = self.url.partition("://")
        return head.lower() if sep else "file"

    @property
    def live(self) -> bool:
        """Live sources reconnect and default to ``drop_oldest``; files end and default to block."""
        if self.scheme in LIVE_SCHEMES or self.url.startswith("/dev/video"):
            return True
        if self.scheme == "synthetic":
            return self.realtime or "realtime=1" in self.url
        return self.realtime

    @property
    def policy(self) -> DropPolicy:
        """The ring policy in force."""
        if self.buffer_policy is not None:
            return self.buffer_policy
        return DropPolicy.DROP_OLDEST if self.live else DropPolicy.BLOCK

    @property
    def display_url(self) -> str:
        """The URL with any password redacted: the only form shown anywhere."""
        return redact_url(self.url)

    def validate(self) -> None:
        """Raise :class:`ConfigError` for values that cannot work."""
        if not _ID.match(self.id):
            raise ConfigError(f"source id {self.id!r} must be 1-64 letters, digits, '_', '.', '-'")
        if self.transport not in ("tcp", "udp"):
            raise ConfigError(
                f"source {self.id}: transport must be tcp or udp, got {self.transport!r}"
            )
        if self.buffer_size < 1:
            raise ConfigError(f"source {self.id}: buffer_size must be ≥ 1")
        if self.open_timeout <= 0 or self.read_timeout <= 0:
            raise ConfigError(f"source {self.id}: timeouts must be positive")
        if self.max_frames is not None and self.max_frames < 1:
            raise ConfigError(f"source {self.id}: max_frames must be ≥ 1")


def parse_source_arg(arg: str, index: int) -> tuple[str, str]:
    """``"cam1=rtsp://…"`` → ``("cam1", "rtsp://…")``; a bare URL gets an id from its name."""
    head, sep, rest = arg.partition("=")
    if sep and _ID.match(head) and ("://" in rest or "/" in rest or "." in rest):
        return head, rest
    if "://" in arg and not arg.startswith("file://"):
        name = "synthetic" if arg.startswith("synthetic://") else f"src{index}"
        return (name if index == 0 else f"{name}{index}"), arg
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", Path(arg).stem)[:64] or f"src{index}"
    if not _ID.match(stem):
        stem = f"src{index}"
    return stem, arg


@dataclass(frozen=True, slots=True)
class SourceCounts:
    """A snapshot of :class:`SourceCounters`."""

    state: SourceState
    frames: int
    reconnects: int
    last_error: str | None
    total_frames: int | None
    first_frame_at: float | None
    decoder_restarts: int = 0
    dropped: int = 0  # by the source itself (a decoder child with no free slot), not its ring


class SourceCounters:
    """Live counters of one source: written by its thread (or task), read by anyone, locked."""

    def __init__(self, source_id: str, url: str) -> None:
        self.id = source_id
        self.url = url  # redacted
        self._lock = threading.Lock()
        self._state = SourceState.CONNECTING
        self._frames = 0
        self._reconnects = 0
        self._error: str | None = None
        self._total: int | None = None
        self._first: float | None = None
        self._decoder_restarts = 0
        self._dropped = 0

    @property
    def state(self) -> SourceState:
        """Where the source is now."""
        with self._lock:
            return self._state

    def set_state(self, state: SourceState) -> None:
        """Move to ``state``."""
        with self._lock:
            self._state = state

    def finish(self, stopped: bool) -> None:
        """The source's loop ended: ``stopped`` (asked to) or ``finished`` — unless it failed."""
        with self._lock:
            if self._state not in (SourceState.FAILED, SourceState.FINISHED):
                self._state = SourceState.STOPPED if stopped else SourceState.FINISHED

    @property
    def last_error(self) -> str | None:
        """The last error (one line, redacted)."""
        with self._lock:
            return self._error

    def set_error(self, message: str | None) -> None:
        """Record an error (one line, redacted)."""
        with self._lock:
            self._error = message

    def count_reconnect(self) -> None:
        """One more reconnection attempt."""
        with self._lock:
            self._reconnects += 1

    def count_decoder_restart(self) -> None:
        """The decoder's child process died or hung and was started again."""
        with self._lock:
            self._decoder_restarts += 1

    def count_dropped(self, n: int = 1) -> None:
        """``n`` frames dropped before they reached the ring (a live decoder child had no slot)."""
        with self._lock:
            self._dropped += n

    @property
    def total_frames(self) -> int | None:
        """The known length of a file, for progress."""
        with self._lock:
            return self._total

    def set_total(self, total: int | None) -> None:
        """Set the known length (frames)."""
        with self._lock:
            self._total = total

    def count_frame(self, now: float) -> None:
        """One more frame produced at ``now`` (monotonic)."""
        with self._lock:
            self._frames += 1
            if self._first is None:
                self._first = now

    @property
    def frames(self) -> int:
        """Frames produced so far."""
        with self._lock:
            return self._frames

    def snapshot(self) -> SourceCounts:
        """Every counter at one instant."""
        with self._lock:
            return SourceCounts(
                self._state,
                self._frames,
                self._reconnects,
                self._error,
                self._total,
                self._first,
                self._decoder_restarts,
                self._dropped,
            )


class FrameClock:
    """Stamps frames of one source: ids from 0 and monotonic timestamps, across reconnects.

    After :meth:`restart` (a reconnect) the stream's own clock starts again; the next frame then
    continues one nominal frame after the last one instead of jumping back.
    """

    def __init__(self, source_id: str, counters: SourceCounters, fps: float = 30.0) -> None:
        self.source_id = source_id
        self.counters = counters
        self.fps = fps
        self.next_id = 0
        self.last_pts: float | None = None
        self._offset = 0.0
        self._restarted = False

    def restart(self) -> None:
        """The stream's clock restarts (reconnect): continue from the last timestamp."""
        self._restarted = True

    def stamp(self, raw_pts: float | None, width: int, height: int) -> FrameMeta:
        """The metadata of the next frame, whose stream time is ``raw_pts`` (None: unknown)."""
        now_wall, now_mono = time.time(), time.monotonic()
        step = 1.0 / self.fps
        raw = self.next_id * step if raw_pts is None else raw_pts
        if self._restarted and self.last_pts is not None:
            self._offset = self.last_pts + step - raw
        self._restarted = False
        pts = raw + self._offset
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + step
        self.last_pts = pts
        meta = FrameMeta(self.source_id, self.next_id, pts, now_wall, now_mono, width, height)
        self.next_id += 1
        self.counters.count_frame(now_mono)
        return meta


class _SourceBase:
    """What both kinds of source share: the spec, the counters, the clock."""

    #: "thread" sources run in a thread of their own; "async" ones as a task on the loop.
    kind = "thread"

    def __init__(self, spec: SourceSpec) -> None:
        spec.validate()
        self.spec = spec
        self.status = SourceCounters(spec.id, spec.display_url)
        self.clock = FrameClock(spec.id, self.status)

    @property
    def fps_hint(self) -> float:
        """The nominal frame rate (30 when unknown)."""
        return self.clock.fps

    def close(self) -> None:
        """Release resources (idempotent)."""


class Source(_SourceBase, ABC):
    """A producer: ``run`` decodes frames into ``ring`` in its own thread until the end or ``stop``.

    ``open`` is called (also in a thread) before streaming so bad input fails early; it raises
    :class:`~stream_pipeline.errors.SourceOpenError` with a one-line, redacted message.
    """

    kind = "thread"

    @abstractmethod
    def open(self) -> None:
        """Open (and probe) the input, or raise ``SourceOpenError``."""

    @abstractmethod
    def run(self, ring: RingBuffer[Frame], stop: threading.Event) -> None:
        """Produce frames into ``ring`` until the input ends, ``max_frames``, or ``stop``."""

    @staticmethod
    def put(ring: RingBuffer[Frame], frame: Frame, stop: threading.Event) -> bool:
        """Put ``frame``, waiting in slices so a stop is seen while a ``block`` ring is full.

        False when stopped first; :class:`~stream_pipeline.buffer.RingClosed` when the ring closed.
        """
        while not ring.put(frame, timeout=0.2):
            if stop.is_set():
                return False
        return True


class AsyncSource(_SourceBase, ABC):
    """A producer on the event loop (e.g. a WebRTC track): ``run`` awaits frames and ``aput``s them.

    ``open`` is a coroutine too. ``run`` returns at the end of the input or when ``stop`` is set;
    cancellation is re-raised after cleanup.
    """

    kind = "async"

    @abstractmethod
    async def open(self) -> None:
        """Check the input, or raise ``SourceOpenError``."""

    @abstractmethod
    async def run(self, ring: RingBuffer[Frame], stop: asyncio.Event) -> None:
        """Produce frames into ``ring`` (``await ring.aput(frame)``) until the end or ``stop``."""
