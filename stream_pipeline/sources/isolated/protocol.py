"""The messages between a decoder child and its parent: slot numbers and small metadata only.

Pixels never travel through the pipe; a :class:`FrameReady` names the slot that holds them. Each
message is a small frozen dataclass, pickled by :class:`multiprocessing.connection.Connection`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ChildMessage",
    "Ended",
    "FrameReady",
    "Grant",
    "LogLine",
    "NeedSlots",
    "NewPool",
    "OpenFailed",
    "Opened",
    "ParentMessage",
    "Raised",
    "StatusUpdate",
    "Stop",
]


# -- child → parent ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Opened:
    """The source opened: its nominal frame rate and known length (frames)."""

    fps: float
    total: int | None


@dataclass(frozen=True, slots=True)
class OpenFailed:
    """The source could not be opened: the one-line, redacted message of its ``SourceOpenError``."""

    message: str


@dataclass(frozen=True, slots=True)
class NeedSlots:
    """The next frame needs slots of at least ``nbytes``: the parent makes a new pool."""

    nbytes: int


@dataclass(frozen=True, slots=True)
class FrameReady:
    """Slot ``slot`` of pool ``generation`` holds a ``height``×``width`` RGB frame.

    ``pts`` is the stream time the child's source stamped; ``dropped`` counts the frames a live
    source dropped (no free slot) since the last message.
    """

    generation: int
    slot: int
    height: int
    width: int
    pts: float
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class StatusUpdate:
    """The child's source counters changed (state, reconnections, last error, length)."""

    state: str
    reconnects: int
    error: str | None
    total: int | None


@dataclass(frozen=True, slots=True)
class LogLine:
    """A log record of the child, re-emitted by the parent's logging under ``logger``."""

    logger: str
    level: int
    message: str


@dataclass(frozen=True, slots=True)
class Raised:
    """The source's ``run`` raised: a ``SourceError`` (the source's own) or another error."""

    message: str
    source_error: bool


@dataclass(frozen=True, slots=True)
class Ended:
    """The source's ``run`` returned (end of input, ``max_frames`` or stop); the child exits."""

    dropped: int = 0


ChildMessage = (
    Opened | OpenFailed | NeedSlots | FrameReady | StatusUpdate | LogLine | Raised | Ended
)

# -- parent → child ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NewPool:
    """A new slot pool: its memfd follows on the pipe (``send_handle``)."""

    generation: int
    slot_bytes: int
    count: int


@dataclass(frozen=True, slots=True)
class Grant:
    """Slots of pool ``generation`` the child may now write into."""

    generation: int
    slots: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Stop:
    """Stop the source and exit."""


ParentMessage = NewPool | Grant | Stop
