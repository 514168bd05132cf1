"""A webhook receiver for tests: an aiohttp server on a free 127.0.0.1 port in its own thread.

It records every request (headers, parsed body, arrival time) and answers from a script: a list of
(status, headers) for the first requests, then 503 while ``down`` is set, else 200. ``delay``
makes each answer slow (a receiver that takes seconds per request).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web


@dataclass
class Request:
    headers: dict[str, str]
    body: bytes
    at: float

    @property
    def items(self) -> list[dict[str, Any]]:
        data = json.loads(self.body)
        assert isinstance(data, list)
        return data


@dataclass
class Receiver:
    port: int = 0
    script: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    down_until: float = 0.0  # monotonic time before which every request gets a 503
    delay: float = 0.0
    requests: list[Request] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def accepted(self) -> list[dict[str, Any]]:
        """Every item of every request that was answered 2xx, in arrival order."""
        with self.lock:
            pairs = list(zip(self.requests, self.answered, strict=False))
        return [item for r, code in pairs if 200 <= code < 300 for item in r.items]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self.lock:
            self.requests.append(Request(dict(request.headers), body, time.monotonic()))
            if self.script:
                status, headers = self.script.pop(0)
            elif time.monotonic() < self.down_until:
                status, headers = 503, {}
            else:
                status, headers = 200, {}
        if self.delay:
            await asyncio.sleep(self.delay)
        with self.lock:
            self.answered.append(status)
        return web.Response(status=status, headers=headers, text=f"answer {status}")


_Handle = tuple[threading.Thread, asyncio.AbstractEventLoop, asyncio.Event]


def start_receiver(receiver: Receiver) -> _Handle:
    """Serve ``receiver`` in a thread; returns what :func:`stop_receiver` needs."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop = asyncio.Event()

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/hook", receiver.handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", receiver.port)
        await site.start()
        server = site._server
        assert server is not None
        receiver.port = server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=lambda: loop.run_until_complete(serve()), name="test-webhook")
    thread.start()
    assert ready.wait(10), "webhook receiver did not start"
    return thread, loop, stop


def stop_receiver(handle: _Handle) -> None:
    thread, loop, stop = handle
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)
    loop.close()


@pytest.fixture
def webhook_receiver() -> Iterator[Receiver]:
    """A running receiver, stopped after the test whatever happens."""
    receiver = Receiver()
    handle = start_receiver(receiver)
    try:
        yield receiver
    finally:
        stop_receiver(handle)
