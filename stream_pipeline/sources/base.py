"""What every source shares: its spec, its state machine, its counters and the reconnect policy."""

from __future__ import annotations

import re
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from stream_pipeline.buffer import DropPolicy, RingBuffer
from stream_pipeline.errors import ConfigError
from stream_pipeline.frames import Frame
from stream_pipeline.redact import redact_url
from stream_pipeline.retry import ReconnectPolicy

__all__ = [
    "LIVE_SCHEMES",
    "ReconnectPolicy",
    "Source",
    "SourceSpec",
    "SourceState",
    "SourceStatus",
    "parse_source_arg",
]

LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "rtmps", "srt", "udp", "rtp", "tcp")
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


@dataclass(slots=True)
class SourceStatus:
    """Live counters of one source (written by its thread, read by anyone)."""

    id: str
    url: str  # redacted
    state: SourceState = SourceState.CONNECTING
    frames: int = 0
    reconnects: int = 0
    last_error: str | None = None
    fps: float = 0.0
    total_frames: int | None = None  # known length of a file, for progress
    first_frame_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Source(ABC):
    """A producer: ``run`` decodes frames into ``ring`` in its own thread until the end or ``stop``.

    ``open`` is called (also in a thread) before streaming so bad input fails early; it raises
    :class:`~stream_pipeline.errors.SourceOpenError` with a one-line, redacted message.
    """

    def __init__(self, spec: SourceSpec) -> None:
        spec.validate()
        self.spec = spec
        self.status = SourceStatus(spec.id, spec.display_url)

    @abstractmethod
    def open(self) -> None:
        """Open (and probe) the input, or raise ``SourceOpenError``."""

    @abstractmethod
    def run(self, ring: RingBuffer[Frame], stop: threading.Event) -> None:
        """Produce frames into ``ring`` until the input ends, ``max_frames``, or ``stop``."""

    def close(self) -> None:  # noqa: B027 - most sources hold nothing to release
        """Release resources (idempotent)."""
