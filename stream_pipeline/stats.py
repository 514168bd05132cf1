"""Bounded latency statistics: the last N samples per stage, and percentiles of them."""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

__all__ = ["LatencyStats", "RateMeter"]


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
