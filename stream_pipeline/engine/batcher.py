"""One batching worker per (model, device): dynamic batches across every source that uses it.

Two threads drive a :class:`~stream_pipeline.worker.BatchWorker`:

1. *gather + infer*: takes frames round robin from the rings of all attached sources (whatever
   job they belong to) — up to ``max_batch`` frames, or what is there after ``max_wait_ms`` — and
   calls ``worker.start``;
2. *postprocess*: calls ``worker.finish`` on the previous batch meanwhile (onnxruntime and the
   fused kernel release the GIL, so the two overlap on separate cores) and hands each result to
   the engine's dispatch.

A bounded hand-off of two batches sits between them. Sources attach at any time; a source whose
ring is closed and drained leaves the batch, and an end marker travels behind its last frames so
that consumers learn of its end only after its last result.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from stream_pipeline.buffer import RingBuffer, RingClosed
from stream_pipeline.frames import Frame, SegResult
from stream_pipeline.stats import WorkerMeters
from stream_pipeline.worker import BatchWorker, HostNeeds, Thresholds, WorkItem

__all__ = ["Attachment", "Batcher"]


@dataclass(eq=False, slots=True)
class Attachment:
    """A source attached to a batcher: its ring, job, thresholds and what its consumers need."""

    source_id: str
    job: str
    ring: RingBuffer[Frame]
    thresholds: Thresholds
    needs: HostNeeds = field(default_factory=HostNeeds)


@dataclass(slots=True)
class _Batch:
    pending: Any
    items: list[WorkItem]
    attachments: list[Attachment]
    ended: list[Attachment]


class Batcher:
    """The two threads of one model's worker (see module docstring)."""

    def __init__(
        self,
        worker: BatchWorker,
        max_batch: int,
        max_wait_ms: float,
        dispatch: Callable[[SegResult, Attachment], None],
        ended: Callable[[Attachment], None],
        meters: WorkerMeters | None = None,
    ) -> None:
        self.worker = worker
        self.meters = meters or WorkerMeters()
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.doorbell = threading.Event()
        self._dispatch = dispatch
        self._ended = ended
        self._lock = threading.Lock()
        self._attachments: tuple[Attachment, ...] = ()
        self._handoff: RingBuffer[_Batch] = RingBuffer(2, "block")
        self._rr = 0
        self.frames = 0
        self.batches = 0
        self.max_batch_seen = 0

    def attach(self, attachment: Attachment) -> None:
        """Start taking frames from ``attachment``'s ring."""
        with self._lock:
            self._attachments = (*self._attachments, attachment)
        self.doorbell.set()

    @property
    def attached(self) -> int:
        """Sources attached now."""
        return len(self._attachments)

    def _drop(self, gone: list[Attachment]) -> None:
        with self._lock:
            self._attachments = tuple(a for a in self._attachments if a not in gone)

    # -- gathering -------------------------------------------------------------------------

    def _gather(
        self, stop: threading.Event
    ) -> tuple[list[WorkItem], list[Attachment], list[Attachment]]:
        """The next batch and the attachments whose rings ended; empty lists once stopped."""
        items: list[WorkItem] = []
        owners: list[Attachment] = []
        ended: list[Attachment] = []
        deadline: float | None = None
        while not stop.is_set():
            self.doorbell.clear()
            attachments = self._attachments
            n = len(attachments)
            took = True
            # Round robin, one frame per ring per pass, so no source starves the others.
            while took and len(items) < self.max_batch and n:
                took = False
                for k in range(n):
                    att = attachments[(self._rr + k) % n]
                    if att in ended:
                        continue
                    try:
                        frame = att.ring.get_nowait()
                    except RingClosed:
                        ended.append(att)
                        continue
                    if frame is not None:
                        items.append(WorkItem(frame, att.thresholds, att.needs))
                        owners.append(att)
                        took = True
                        if len(items) == self.max_batch:
                            break
                self._rr = (self._rr + 1) % n
            if ended:
                self._drop(ended)
            if len(items) == self.max_batch or (ended and not items):
                return items, owners, ended
            now = time.monotonic()
            if items:
                deadline = deadline or now + self.max_wait
                if now >= deadline:
                    return items, owners, ended
                self.doorbell.wait(deadline - now)
            else:
                self.doorbell.wait(0.25)
        return items, owners, ended

    # -- the two threads -------------------------------------------------------------------

    def run_infer(self, stop: threading.Event) -> None:
        """Thread 1: gather, preprocess, infer; hand batches to the postprocess thread."""
        try:
            while not stop.is_set():
                items, owners, ended = self._gather(stop)
                if not items and not ended:
                    continue
                pending = self.worker.start(items, time.monotonic()) if items else None
                batch = _Batch(pending, items, owners, ended)
                while not self._handoff.put(batch, timeout=0.25):
                    if stop.is_set():
                        return
        except RingClosed:
            return
        finally:
            self._handoff.close()

    def run_post(self, stop: threading.Event) -> None:
        """Thread 2: postprocess each batch, dispatch its results, then announce ended sources."""
        try:
            while True:
                batch = self._handoff.get(timeout=0.25)
                if batch is None:
                    if stop.is_set():
                        return
                    continue
                if batch.items:
                    results = self.worker.finish(batch.pending)
                    self.meters.observe_batch(_stage_rows(results, time.monotonic()))
                    for result, owner in zip(results, batch.attachments, strict=True):
                        self._dispatch(result, owner)
                    size = len(batch.items)
                    self.frames += size
                    self.batches += 1
                    self.max_batch_seen = max(self.max_batch_seen, size)
                for att in batch.ended:
                    self._ended(att)
        except RingClosed:
            return
        finally:
            self._handoff.close()


def _stage_rows(
    results: list[SegResult], now: float
) -> list[tuple[float, float, float, float, float]]:
    """Each result's stage timings and its total (arrival → result) for the meters."""
    rows = []
    for r in results:
        t = r.timings
        arrival = r.frame.meta.arrival_monotonic if r.frame is not None else now
        rows.append((t.queue, t.preprocess, t.infer, t.postprocess, now - arrival))
    return rows
