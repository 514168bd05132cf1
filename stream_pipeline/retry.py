"""Retry with exponential backoff and full jitter: one policy for sources and sinks alike."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["ReconnectPolicy"]


@dataclass(frozen=True, slots=True)
class ReconnectPolicy:
    """Exponential backoff with full jitter, bounded by ``max_delay``.

    ``max_attempts`` consecutive failed attempts (``None``: forever) turn the source ``failed``.
    ``retry_first_open``: keep retrying a live source whose very first open fails (a camera not up
    yet) instead of reporting the error as fatal.
    """

    initial_delay: float = 0.5
    max_delay: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5
    max_attempts: int | None = None
    retry_first_open: bool = False

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before attempt number ``attempt`` (1-based)."""
        base = min(self.max_delay, self.initial_delay * self.multiplier ** max(0, attempt - 1))
        spread = base * self.jitter
        return max(0.0, base - spread + (rng or random).random() * 2 * spread)
