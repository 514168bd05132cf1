"""Outages of a job's live sources across restarts of the service.

While the service runs it writes a heartbeat to the store every second. When it starts again,
each live source of a job it resumes is *out* from the last heartbeat until its first frame
after the restart; that span is added to the source's outage count and seconds, which are stored
(so they add up over many restarts) and shown in the job's status. An outage still going on
shows its seconds so far. Reconnects within one run of the service are counted by the source
itself (``reconnects``); file sources have no outage, they continue where their sinks stopped.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping

__all__ = ["Outages"]


class Outages:
    """The outages of one job's live sources: stored totals plus those open since a restart."""

    def __init__(self, stored: Mapping[str, tuple[int, float]] | None = None) -> None:
        self.totals: dict[str, tuple[int, float]] = dict(stored or {})
        self.open: dict[str, float] = {}  # source id → wall time it went out

    def begin(self, source_ids: Iterable[str], down_since: float) -> None:
        """The service was down from ``down_since``: these live sources are out until a frame."""
        for sid in source_ids:
            self.open.setdefault(sid, down_since)

    def observe(
        self, frames: Mapping[str, int], now: float | None = None
    ) -> list[tuple[str, int, float]]:
        """Close the outages of sources that produced a frame; ``(id, count, seconds)`` of each
        closed one (to store)."""
        now = time.time() if now is None else now
        closed = []
        for sid, since in list(self.open.items()):
            if frames.get(sid, 0) > 0:
                count, seconds = self.totals.get(sid, (0, 0.0))
                total = (count + 1, seconds + max(0.0, now - since))
                self.totals[sid] = total
                del self.open[sid]
                closed.append((sid, *total))
        return closed

    def of(self, source_id: str, now: float | None = None) -> tuple[int, float]:
        """``(count, seconds)`` of ``source_id``, an open outage included."""
        count, seconds = self.totals.get(source_id, (0, 0.0))
        since = self.open.get(source_id)
        if since is not None:
            now = time.time() if now is None else now
            count, seconds = count + 1, seconds + max(0.0, now - since)
        return count, round(seconds, 3)
