"""What webhook and MQTT sinks share: a spool, a sender thread, the payload, draining on close.

``write`` (the runtime's sink thread) serialises the result and appends it to the sink's
:class:`~stream_pipeline.consumers.spool.Spool`, and returns: it never touches the network. The
sink's own sender thread (``sp-<name>-send``) delivers from the spool and acknowledges entries only
when the far end did. ``close`` lets the sender drain for up to ``drain_timeout`` seconds; what is
still pending stays in the spool for the next start (same ``spool_dir``) and is reported in
:attr:`~stream_pipeline.consumers.base.Sink.stats`.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stream_pipeline.consumers.base import Delivery, Failure, Sink, SinkContext
from stream_pipeline.consumers.files import prediction_json
from stream_pipeline.consumers.spool import Spool, pack_fields, unpack_fields
from stream_pipeline.errors import ConfigError, SinkError
from stream_pipeline.frames import SegResult
from stream_pipeline.model.serialize import prediction_dict
from stream_pipeline.redact import redact_text, redact_url
from stream_pipeline.retry import ReconnectPolicy

__all__ = ["PAYLOADS", "RemoteSink", "summary_dict"]

PAYLOADS = ("full", "summary")
SYNC_INTERVAL = 0.25  # seconds between fsyncs of the spool by the sender
DEFAULT_POLICY = ReconnectPolicy(initial_delay=0.25, max_delay=30.0)


def summary_dict(
    result: SegResult, class_names: Sequence[str], model_id: str, background_id: int
) -> dict[str, Any]:
    """Per present class: pixel coverage (fraction of the frame) and mean confidence; no masks.

    The frame fields and confidences are those of the full prediction object.
    """
    full = prediction_dict(result, class_names, model_id, background_id, with_masks=False)
    entries = full.pop("predictions")
    counts = np.bincount(result.class_map.ravel(), minlength=len(class_names))
    pixels = float(result.width * result.height)
    full["image"] = entries["image"]
    full["classes"] = [
        {
            "class_id": e["class_id"],
            "class": e["class"],
            "coverage": round(float(counts[e["class_id"]]) / pixels, 6),
            "confidence": e["confidence"],
        }
        for e in entries["predictions"]
    ]
    return full


def spool_directory(base: str | os.PathLike[str], kind: str, url: str) -> Path:
    """A stable per-destination folder under ``base`` (the password is not part of its name)."""
    digest = hashlib.sha256(redact_url(url).encode()).hexdigest()[:12]
    return Path(base) / f"{kind}-{digest}"


class RemoteSink(Sink):
    """Base of the sinks that leave the machine (``spooled`` delivery, ``best_effort`` failure).

    ``payload`` is ``full`` (the prediction JSON, docs/outputs.md; ``with_masks=False`` leaves out
    the RLE masks) or ``summary`` (:func:`summary_dict`). ``spool_bytes`` bounds the spool on disk.
    """

    delivery = Delivery.SPOOLED
    failure = Failure.BEST_EFFORT

    def __init__(
        self,
        url: str,
        spool_dir: str | os.PathLike[str],
        spool_bytes: int = 256 * 1024 * 1024,
        drain_timeout: float = 60.0,
        payload: str = "full",
        with_masks: bool = True,
        reconnect: ReconnectPolicy = DEFAULT_POLICY,
        source_id: str | None = None,
    ) -> None:
        super().__init__(source_id)
        if payload not in PAYLOADS:
            raise ConfigError(f"payload must be one of {', '.join(PAYLOADS)}, got {payload!r}")
        if not drain_timeout >= 0:
            raise ConfigError(f"drain timeout must be >= 0 s, got {drain_timeout!r}")
        self._url = url
        self.url = redact_url(url)
        self.payload = payload
        self.with_masks = with_masks
        self.drain_timeout = drain_timeout
        self.reconnect = reconnect
        self.spool = Spool(spool_dir, spool_bytes)
        self._context: SinkContext | None = None
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._drain_deadline = float("inf")
        self._closed = False
        self._last_sync = 0.0

    # -- the runtime's side ------------------------------------------------------------------

    def open(self, context: SinkContext) -> None:
        """Open (or recover) the spool and start the sender; what an earlier run left is sent."""
        if self._thread is not None or self._closed:
            raise SinkError(f"{self.name} sink for {self.url} was already opened")
        self._context = context
        self.spool.open()
        self.stats.set_pending(self.spool.pending)
        self.stats.set_state("connecting")
        self._thread = threading.Thread(
            target=self._sender, name=f"sp-{self.name}-send", daemon=True
        )
        self._thread.start()

    def write(self, result: SegResult) -> None:
        """Serialise ``result`` and append it to the spool; never waits for the network."""
        if self._context is None or self._closed:
            raise SinkError(f"{self.name} sink for {self.url} is not open")
        key = result.inference_id or hashlib.sha256(os.urandom(16)).hexdigest()[:32]
        ctx = self.context
        if self.payload == "summary":
            summary = summary_dict(result, ctx.class_names, ctx.model_id, ctx.background_id)
            body = json.dumps(summary, separators=(",", ":"), ensure_ascii=False).encode()
        else:
            body = prediction_json(result, ctx, self.with_masks)
        dropped = self.spool.append(pack_fields(key.encode(), self._topic(result).encode(), body))
        if dropped:
            self.stats.count_dropped(dropped)
        self.stats.set_pending(self.spool.pending)

    def close(self) -> None:
        """Drain for up to ``drain_timeout`` s, then stop; what is left stays in the spool."""
        if self._closed:
            return
        self._closed = True
        thread = self._thread
        if thread is not None:
            self._drain_deadline = time.monotonic() + self.drain_timeout
            self._closing.set()
            self._wake()
            thread.join(self.drain_timeout + 1.0)
            if thread.is_alive():
                self._abort()
                thread.join(10.0)
        self.spool.close()
        pending = self.spool.pending
        self.stats.set_pending(pending)
        self.stats.set_state("closed" if not pending else f"closed, {pending} kept in the spool")

    # -- for subclasses ----------------------------------------------------------------------

    @property
    def context(self) -> SinkContext:
        """The context given to :meth:`open`."""
        assert self._context is not None
        return self._context

    def _topic(self, result: SegResult) -> str:
        """Where this result goes (MQTT topic); empty for sinks with one destination."""
        return ""

    @staticmethod
    def _fields(payload: bytes) -> tuple[str, str, bytes]:
        key, topic, body = unpack_fields(payload, 3)
        return key.decode(), topic.decode(), body

    def _finished(self) -> bool:
        """True when the sender should stop: closing, and drained or out of drain time."""
        if not self._closing.is_set():
            return False
        return self.spool.pending == 0 or time.monotonic() >= self._drain_deadline

    def _remaining(self) -> float:
        """Seconds of drain time left (infinite until close)."""
        return self._drain_deadline - time.monotonic()

    def _maybe_sync(self) -> None:
        now = time.monotonic()
        if now - self._last_sync >= SYNC_INTERVAL:
            self._last_sync = now
            self.spool.sync()

    def _report(self, message: str) -> None:
        """Record an error (one line, credentials redacted)."""
        self.stats.set_error(" ".join(redact_text(message, self._url).split())[:300])

    def _delivered(self, seqs: list[int]) -> None:
        n = self.spool.ack(seqs)
        if n:
            self.stats.count_delivered(n)
        self.stats.set_pending(self.spool.pending)

    def _rewind(self) -> None:
        """Send again what is not acknowledged (after a lost connection)."""
        lost = self.spool.rewind()
        if lost:
            self.stats.count_dropped(lost)

    def _rejected(self, seqs: list[int], why: str) -> None:
        """The far end refused these for good (HTTP 4xx, MQTT refusal): dropped and counted."""
        n = self.spool.ack(seqs)
        self.stats.count_dropped(n)
        self.stats.set_pending(self.spool.pending)
        self._report(why)

    def _sender(self) -> None:
        try:
            self._serve()
        except BaseException as exc:  # best effort: only this sink stops; the error is shown
            self._report(f"sender stopped: {type(exc).__name__}: {exc}")
            self.stats.set_state("failed")
        finally:
            self.spool.sync()

    @abstractmethod
    def _serve(self) -> None:
        """Deliver from the spool until :meth:`_finished` (runs in the sender thread)."""

    def _wake(self) -> None:
        """Wake the sender so it sees that the sink is closing (default: it polls)."""

    def _abort(self) -> None:
        """Stop the sender now: the drain time is over."""
