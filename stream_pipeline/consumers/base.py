"""The sink contract: a plain synchronous object the pipeline drives from the sink's own thread.

The pipeline calls ``open(context)`` once before streaming (so a bad output path fails before any
frame is decoded), then ``write(result)`` for each result in order, from one thread, then
``close()`` exactly once even after errors (``close`` must make what was written valid: a playable
mp4, whole JSONL lines). Sinks never see results of other sources when ``source_id`` is set.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from stream_pipeline.frames import SegResult

__all__ = ["Sink", "SinkContext", "SinkStats"]


@dataclass(frozen=True, slots=True)
class SinkContext:
    """What sinks need to know about the model and the sources."""

    model_id: str
    class_names: Sequence[str]
    background_id: int
    colors: Mapping[str, str] = field(default_factory=dict)
    source_fps: Mapping[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class SinkStats:
    """Counters a sink keeps (read from any thread; plain ints are safe to read)."""

    delivered: int = 0
    dropped: int = 0
    last_error: str | None = None


class Sink(ABC):
    """Base class of every sink.

    ``lossless`` sinks get every result of their sources (the pipeline waits for them: nothing is
    lost with ``block`` sources); other sinks (previews) get only the latest result.
    """

    name: str = "sink"
    lossless: bool = True

    def __init__(self, source_id: str | None = None) -> None:
        self.source_id = source_id
        self.stats = SinkStats()

    @abstractmethod
    def open(self, context: SinkContext) -> None:
        """Prepare outputs; raise :class:`~stream_pipeline.errors.SinkError` if impossible."""

    @abstractmethod
    def write(self, result: SegResult) -> None:
        """Consume one result (called from the sink's thread, in frame order per source)."""

    @abstractmethod
    def close(self) -> None:
        """Flush and finalise; idempotent."""
