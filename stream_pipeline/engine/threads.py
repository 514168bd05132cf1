"""Threads the engine owns: each reports its end to the event loop as a future.

A thread's target gets a stop event; when it returns or raises, its :attr:`ManagedThread.done`
future settles on the loop (``call_soon_threadsafe``), so the loop awaits threads without
blocking. :meth:`ManagedThread.join` bounds the wait: a thread stuck in a blocking call (a stalled
RTSP push) is a daemon and is abandoned with an error log rather than hanging shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable

__all__ = ["JOIN_GRACE_SECONDS", "ManagedThread"]

log = logging.getLogger(__name__)

JOIN_GRACE_SECONDS = 15.0


class ManagedThread:
    """One named daemon thread whose end (result or error) settles :attr:`done` on ``loop``."""

    def __init__(
        self,
        name: str,
        target: Callable[[threading.Event], None],
        loop: asyncio.AbstractEventLoop,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.name = name
        self.stop = threading.Event()
        self.done: asyncio.Future[None] = loop.create_future()
        self._target = target
        self._loop = loop
        self._on_error = on_error
        self._thread = threading.Thread(target=self._main, name=f"sp-{name}", daemon=True)

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def _main(self) -> None:
        error: BaseException | None = None
        try:
            self._target(self.stop)
        except BaseException as exc:  # reported to the loop; the owner decides what it stops
            error = exc
            if self._on_error is not None:
                self._on_error(exc)
        with contextlib.suppress(RuntimeError):  # the loop may already be closed
            self._loop.call_soon_threadsafe(_settle, self.done, error)

    async def join(self, grace: float = JOIN_GRACE_SECONDS) -> BaseException | None:
        """Wait (without blocking the loop) for the thread; its error, if it raised one."""
        try:
            await asyncio.wait_for(asyncio.shield(self.done), grace)
        except TimeoutError:
            log.error("thread %s did not stop within %.0f s; abandoning it", self.name, grace)
            return None
        except Exception as exc:
            return exc
        finally:
            await self._exited()
        return None

    async def _exited(self) -> None:
        # ``done`` settles just before the thread returns: wait the moment it takes to exit, so
        # that a joined thread is gone (callers count threads to prove nothing leaks).
        if self.done.done() and self._thread.is_alive():
            await asyncio.to_thread(self._thread.join, 1.0)


def _settle(fut: asyncio.Future[None], error: BaseException | None) -> None:
    if fut.done():
        return
    if error is None:
        fut.set_result(None)
    else:
        fut.set_exception(error)
        # The owner reads the error through join(); never "exception was never retrieved".
        fut.exception()
