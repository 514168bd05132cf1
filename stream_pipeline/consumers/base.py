"""The sink contract: a plain synchronous object the engine drives from the sink's own thread.

The engine calls ``open(context)`` once before the sink's first result (so a bad output path fails
before any frame is decoded), then ``write(result)`` for each result in order, from one thread,
then ``close()`` exactly once even after errors (``close`` must make what was written valid: a
playable mp4, whole JSONL lines; a remote sink drains what it can within its drain timeout).
Sinks never see results of other sources when ``source_id`` is set.

How results reach a sink is its :class:`Delivery` mode:

- ``lossless``: every result; a sink that falls behind makes the worker, and so the source, wait
  (files, recordings, JSONL).
- ``latest``: previews; the sink gets the newest result, never a queue.
- ``spooled``: remote sinks (webhook, MQTT); the worker never waits for them. ``write`` must
  return quickly (append to the sink's own bounded, disk-backed spool); what cannot be kept is
  dropped and counted by the sink in :attr:`Sink.stats`.

What a sink's failure means is its :class:`Failure` mode: ``critical`` (the job stops and the error
reaches the caller: the recording of a file job) or ``best_effort`` (only this sink stops; the error
is in the status).
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from stream_pipeline.errors import parse_choice
from stream_pipeline.frames import SegResult

__all__ = ["Delivery", "Failure", "Sink", "SinkContext", "SinkCounters", "SinkStats"]


class Delivery(StrEnum):
    """How results reach a consumer (see module docstring)."""

    LOSSLESS = "lossless"
    LATEST = "latest"
    SPOOLED = "spooled"

    @classmethod
    def parse(cls, value: str | Delivery) -> Delivery:
        """The mode named ``value``; :class:`ConfigError` listing the names otherwise."""
        return parse_choice(cls, value, "delivery")


class Failure(StrEnum):
    """What a sink's failure stops: its job (``critical``) or only itself (``best_effort``)."""

    CRITICAL = "critical"
    BEST_EFFORT = "best_effort"


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What sinks need to know about the model and the sources."""

    model_id: str
    class_names: Sequence[str]
    background_id: int
    colors: Mapping[str, str] = field(default_factory=dict)
    source_fps: Mapping[str, float] = field(default_factory=dict)
    job_id: str = ""


@dataclass(frozen=True, slots=True)
class SinkCounters:
    """A snapshot of :class:`SinkStats`."""

    delivered: int
    dropped: int
    pending: int
    reconnects: int
    state: str
    last_error: str | None


class SinkStats:
    """Counters a sink keeps, written from its threads and read from any (under a lock).

    ``delivered``: results the far end has (written, acknowledged); ``dropped``: results the sink
    itself gave up on (a full spool, a preview encoder behind); ``pending``: held, not yet
    delivered (a spool's backlog); ``state``: the sink's own word (``"open"``, ``"reconnecting"``,
    …); ``reconnects``: how often it had to reconnect.
    """

    __slots__ = ("_delivered", "_dropped", "_error", "_lock", "_pending", "_reconnects", "_state")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._delivered = self._dropped = self._pending = self._reconnects = 0
        self._state = "idle"
        self._error: str | None = None

    def count_delivered(self, n: int = 1) -> None:
        """``n`` more results reached their destination."""
        with self._lock:
            self._delivered += n

    def count_dropped(self, n: int = 1) -> None:
        """``n`` results were given up (and are gone)."""
        with self._lock:
            self._dropped += n

    def count_reconnect(self) -> None:
        """One more reconnection attempt."""
        with self._lock:
            self._reconnects += 1

    def set_pending(self, n: int) -> None:
        """How many results the sink holds, not yet delivered."""
        with self._lock:
            self._pending = n

    def set_state(self, state: str) -> None:
        """The sink's state in its own words."""
        with self._lock:
            self._state = state

    def set_error(self, message: str | None) -> None:
        """The last error (one line, credentials redacted)."""
        with self._lock:
            self._error = message

    @property
    def delivered(self) -> int:
        """Results delivered so far."""
        with self._lock:
            return self._delivered

    @property
    def dropped(self) -> int:
        """Results the sink dropped itself."""
        with self._lock:
            return self._dropped

    @property
    def last_error(self) -> str | None:
        """The last error, if any."""
        with self._lock:
            return self._error

    def snapshot(self) -> SinkCounters:
        """All counters at one instant."""
        with self._lock:
            return SinkCounters(
                self._delivered,
                self._dropped,
                self._pending,
                self._reconnects,
                self._state,
                self._error,
            )


class Sink(ABC):
    """Base class of every sink.

    Subclasses set :attr:`name`, :attr:`delivery` and :attr:`failure` (class attributes or per
    instance). ``source_id`` limits the sink to one source's results (``None``: all of its job).
    """

    name: str = "sink"
    delivery: Delivery = Delivery.LOSSLESS
    failure: Failure = Failure.CRITICAL

    def __init__(self, source_id: str | None = None) -> None:
        self.source_id = source_id
        self.stats = SinkStats()

    @property
    def lossless(self) -> bool:
        """True for ``lossless`` delivery (kept for callers of the first API)."""
        return self.delivery is Delivery.LOSSLESS

    @abstractmethod
    def open(self, context: SinkContext) -> None:
        """Prepare outputs; raise :class:`~stream_pipeline.errors.SinkError` if impossible."""

    @abstractmethod
    def write(self, result: SegResult) -> None:
        """Consume one result (called from the sink's thread, in frame order per source)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and finalise; idempotent."""
