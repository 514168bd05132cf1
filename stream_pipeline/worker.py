"""The batching worker: rings → preprocess → infer → postprocess → consumers.

Two threads: one gathers a batch across all source rings (round robin, up to ``max_batch``
frames or whatever is there after ``max_wait_ms``), preprocesses it and runs the network; the
other postprocesses the previous batch meanwhile. onnxruntime and the fused kernel both release
the GIL, so the two overlap on separate cores. A bounded hand-off of two batches sits between.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_pipeline.buffer import RingBuffer, RingClosed
from stream_pipeline.frames import Frame, SegResult, StageTimings
from stream_pipeline.model.postprocess import postprocess_fast
from stream_pipeline.model.segmenter import SegmentationModel

__all__ = ["Worker", "WorkerSettings"]


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Batching and thresholds."""

    max_batch: int = 4
    max_wait_ms: float = 5.0
    confidence_mode: str = "best"
    custom_confidence: float | None = None


@dataclass(slots=True)
class _Batch:
    frames: list[Frame]
    logits: Any
    geos: list[Any]
    picked: float
    preprocess: float
    infer: float


class Worker:
    """Runs the model over frames from ``rings`` and hands each result to ``dispatch``.

    ``dispatch`` may block (lossless consumers apply back-pressure) and raises
    :class:`RingClosed` when the pipeline is being torn down.
    """

    def __init__(
        self,
        model: SegmentationModel,
        rings: Sequence[RingBuffer[Frame]],
        doorbell: threading.Event,
        dispatch: Callable[[SegResult], None],
        settings: WorkerSettings,
    ) -> None:
        self.model = model
        self.rings = list(rings)
        self.doorbell = doorbell
        self.dispatch = dispatch
        self.settings = settings
        self._rr = 0
        self._handoff: RingBuffer[_Batch] = RingBuffer(2, "block")
        self.batches = 0
        self.frames = 0

    # -- gathering -------------------------------------------------------------------------

    def _gather(self, stop: threading.Event) -> list[Frame] | None:
        """The next batch; ``None`` once every ring is closed and drained (or on stop)."""
        max_batch = self.settings.max_batch
        max_wait = self.settings.max_wait_ms / 1000.0
        frames: list[Frame] = []
        deadline: float | None = None
        n = len(self.rings)
        while not stop.is_set():
            self.doorbell.clear()
            alive = False
            took = True
            # Round robin, one frame per ring per pass, so no source starves the others.
            while took and len(frames) < max_batch:
                took = False
                for k in range(n):
                    ring = self.rings[(self._rr + k) % n]
                    try:
                        frame = ring.get_nowait()
                    except RingClosed:
                        continue
                    alive = True
                    if frame is not None:
                        frames.append(frame)
                        took = True
                        if len(frames) == max_batch:
                            break
                self._rr = (self._rr + 1) % n
            if len(frames) == max_batch:
                return frames
            if not alive:
                return frames or None
            now = time.monotonic()
            if frames:
                deadline = deadline or now + max_wait
                if now >= deadline:
                    return frames
                self.doorbell.wait(deadline - now)
            else:
                self.doorbell.wait(0.25)
        return None

    # -- the two threads -------------------------------------------------------------------

    def run_infer(self, stop: threading.Event) -> None:
        """Thread 1: gather, preprocess, infer; hand batches to the postprocess thread."""
        try:
            while (frames := self._gather(stop)) is not None:
                picked = time.monotonic()
                images = [f.rgb for f in frames]
                logits, geos, t_pre, t_inf = self.model.infer(images)  # type: ignore[arg-type]
                batch = _Batch(frames, logits, geos, picked, t_pre, t_inf)
                while not self._handoff.put(batch, timeout=0.25):
                    if stop.is_set():
                        return
        except RingClosed:
            return
        finally:
            self._handoff.close()

    def run_post(self, stop: threading.Event) -> None:
        """Thread 2: postprocess each frame of each batch and dispatch the results."""
        settings = self.settings
        try:
            while True:
                batch = self._handoff.get(timeout=0.25)
                if batch is None:
                    if stop.is_set():
                        return
                    continue
                head = self.model.head(
                    batch.logits.shape[1], settings.confidence_mode, settings.custom_confidence
                )
                size = len(batch.frames)
                n_classes = len(self.model.class_names)
                for frame, logits, geo in zip(batch.frames, batch.logits, batch.geos, strict=True):
                    t0 = time.perf_counter()
                    class_map, conf = postprocess_fast(logits, geo, head)
                    counts = np.bincount(class_map.ravel(), minlength=n_classes)
                    present = tuple(int(i) for i in np.flatnonzero(counts))
                    timings = StageTimings(
                        queue=batch.picked - frame.meta.arrival_monotonic,
                        preprocess=batch.preprocess,
                        infer=batch.infer,
                        postprocess=time.perf_counter() - t0,
                        batch_size=size,
                    )
                    result = SegResult(class_map, conf, present, frame, str(uuid.uuid4()), timings)
                    self.dispatch(result)
                    self.frames += 1
                self.batches += 1
        except RingClosed:
            return
        finally:
            self._handoff.close()
