"""The controller's view of one actor: its handle, its last status, whether it is alive.

Liveness is the controller's own: an actor is alive while its ``status()`` polls answer within
``liveness_timeout`` (Ray's actor states are hints only), and lost when they stop answering or
when Ray marks its node dead. At most one status call and one apply call are outstanding per
actor: with ``max_task_retries=-1`` a call to an actor that is down waits instead of failing, so
new calls would only pile up behind it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

__all__ = ["ActorView"]


def _future(ref: Any) -> asyncio.Future[Any]:
    """A Ray ObjectRef as an asyncio future of this loop."""
    return asyncio.wrap_future(ref.future())


class ActorView:
    """See the module docstring."""

    def __init__(self, name: str, handle: Any, since: float) -> None:
        self.name = name
        self.handle = handle
        self.status: dict[str, Any] | None = None  # the last answer
        self.last_ok: float | None = None
        self.since = since  # when the controller started watching it
        self.lost_at: float | None = None
        self.restarted_from: float | None = None  # set when it answers from a new process
        self._poll: asyncio.Future[Any] | None = None
        self._apply: asyncio.Future[Any] | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def node(self) -> str | None:
        """The Ray node id it last answered from."""
        return None if self.status is None else str(self.status["node"])

    @property
    def address(self) -> str | None:
        """The address of that node."""
        return None if self.status is None else str(self.status["address"])

    @property
    def version(self) -> str | None:
        """The version of the assignment it runs."""
        return None if self.status is None else str(self.status["version"])

    def alive(self, now: float, timeout: float) -> bool:
        """Answered within ``timeout`` and not marked lost."""
        return self.lost_at is None and self.last_ok is not None and now - self.last_ok <= timeout

    def check_lost(self, now: float, timeout: float, dead_nodes: set[str]) -> bool:
        """Mark it lost (and say so, once) when it stopped answering or its node died."""
        if self.lost_at is not None:
            return False
        last = self.last_ok if self.last_ok is not None else self.since
        if now - last > timeout or (self.node is not None and self.node in dead_nodes):
            self.lost_at = now
            return True
        return False

    # -- calls -----------------------------------------------------------------------------

    def poll(self) -> None:
        """Send a status call unless one is outstanding, or take the answer of one that is done
        (one never answered waits in Ray's queue: no second is piled behind it, and its answer
        still counts whenever it comes)."""
        if self._poll is None:
            self._poll = _future(self.handle.status.remote())
        elif self._poll.done():
            self._take(self._poll)
            self._poll = None

    def _take(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        status = future.result()
        if self.status is not None and status.get("pid") != self.status.get("pid"):
            # A new process (Ray restarted it): its parts ran nowhere since its last answer.
            self.restarted_from = self.last_ok
        elif self.status is not None and status["seq"] <= self.status["seq"]:
            return  # older than the answer already taken (calls finish out of order)
        # Any answer makes it alive again: a restarted process, or a node that came back (the
        # parts it had were moved meanwhile; the next apply tells it so).
        self.lost_at = None
        self.status = status
        self.last_ok = time.time()

    def push(self, version: str, parts: dict[str, str]) -> None:
        """Send an apply of ``parts`` unless one is on its way or it runs this version."""
        self.collect()
        if self._apply is None and self.version != version:
            self._apply = _future(self.handle.apply.remote(version, parts))

    def collect(self) -> None:
        """Take the answer of a finished apply."""
        if self._apply is not None and self._apply.done():
            self._take(self._apply)
            self._apply = None

    def cancel(self) -> None:
        """Stop waiting for its calls (the controller closes)."""
        for future in (self._poll, self._apply):
            if future is not None:
                future.cancel()
