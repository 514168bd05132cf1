"""Bounded latency statistics: the last N samples per stage and percentiles of them (for the
console and the status JSON), and fixed-bucket histograms of every frame (for ``/metrics``)."""

from __future__ import annotations

import bisect
import itertools
import threading
from collections import deque
from dataclasses import dataclass

import numpy as np

__all__ = [
    "BATCH_BUCKETS",
    "LATENCY_BUCKETS",
    "STAGES",
    "HistogramSnapshot",
    "LatencyStats",
    "RateMeter",
    "WorkerMeters",
]


class LatencyStats:
    """Keeps the most recent ``window`` samples (seconds) of each named stage; thread-safe."""

    def __init__(self, window: int = 20_000) -> None:
        self._window = window
        self._samples: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def add(self, **stages: float) -> None:
        """Record one sample for each given stage."""
        with self._lock:
            for name, value in stages.items():
                bucket = self._samples.get(name)
                if bucket is None:
                    bucket = self._samples[name] = deque(maxlen=self._window)
                bucket.append(value)

    def percentiles(self, *qs: float) -> dict[str, list[float]]:
        """``{stage: [p_q1, p_q2, ...]}`` in milliseconds over the kept samples."""
        with self._lock:
            snapshot = {k: np.fromiter(v, dtype=np.float64) for k, v in self._samples.items()}
        return {
            k: [float(x) for x in np.percentile(v * 1000.0, qs)] if len(v) else [0.0] * len(qs)
            for k, v in snapshot.items()
        }


class RateMeter:
    """Events per second over a sliding window of recent event times."""

    def __init__(self, window_seconds: float = 2.0) -> None:
        self._window = window_seconds
        self._times: deque[float] = deque(maxlen=4096)
        self._lock = threading.Lock()  # ticked by a worker thread, read by status readers

    def tick(self, now: float) -> None:
        """Record an event at ``now`` (monotonic seconds)."""
        with self._lock:
            self._times.append(now)

    def rate(self, now: float) -> float:
        """Events per second over the last window."""
        with self._lock:
            times = self._times
            while times and now - times[0] > self._window:
                times.popleft()
            if len(times) < 2:
                return 0.0
            span = max(now - times[0], 1e-6)
            return (len(times) - 1) / span


# Seconds: from a fast GPU batch (sub-millisecond) to a camera far behind live (10 s).
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64)
STAGES = ("queue", "preprocess", "infer", "postprocess", "total")


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """One histogram at one instant: ``cumulative[i]`` values were ≤ ``bounds[i]``; the last
    entry of ``cumulative`` (one longer than ``bounds``) is every value, ``+Inf``."""

    bounds: tuple[float, ...]
    cumulative: tuple[int, ...]
    sum: float

    @property
    def count(self) -> int:
        """How many values were observed."""
        return self.cumulative[-1]


class _Buckets:
    """Counts per fixed bucket and a sum; not locked (its owner holds the lock)."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # Prometheus buckets are "≤ le": bisect_left finds the first bound ≥ value.
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self.bounds, tuple(itertools.accumulate(self.counts)), self.sum)


class WorkerMeters:
    """Histograms of one batching worker: seconds per stage (:data:`STAGES`) per frame, and
    frames per batch. Fixed buckets, so the memory is constant however long the worker runs;
    one lock taken once per batch (by the postprocess thread), read by scrapes."""

    def __init__(
        self,
        latency_bounds: tuple[float, ...] = LATENCY_BUCKETS,
        batch_bounds: tuple[float, ...] = BATCH_BUCKETS,
    ) -> None:
        self._stages = {stage: _Buckets(latency_bounds) for stage in STAGES}
        self._batch = _Buckets(batch_bounds)
        self._busy = 0.0  # seconds the worker spent on its batches (its measured cost)
        self._frames = 0
        self._lock = threading.Lock()

    def observe_batch(self, rows: list[tuple[float, float, float, float, float]]) -> None:
        """One batch: a row of (queue, preprocess, infer, postprocess, total) seconds per frame."""
        stages = tuple(self._stages.values())
        # Preprocess and infer are the batch's (the same in every row); postprocess is per frame.
        busy = rows[0][1] + rows[0][2] + sum(row[3] for row in rows) if rows else 0.0
        with self._lock:
            self._busy += busy
            self._frames += len(rows)
            self._batch.observe(len(rows))
            for row in rows:
                for buckets, value in zip(stages, row, strict=True):
                    buckets.observe(value)

    def latency(self) -> dict[str, HistogramSnapshot]:
        """Seconds per frame, by stage."""
        with self._lock:
            return {stage: b.snapshot() for stage, b in self._stages.items()}

    def cost(self) -> tuple[int, float]:
        """``(frames, seconds)``: frames processed and the worker's time on them in all
        (preprocess + infer per batch, postprocess per frame): the measured cost of the model."""
        with self._lock:
            return self._frames, self._busy

    def batch_sizes(self) -> HistogramSnapshot:
        """Frames per batch."""
        with self._lock:
            return self._batch.snapshot()
