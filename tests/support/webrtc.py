"""WebRTC test parts: the app served by uvicorn on loopback, aiortc WHIP and WHEP clients, and a
video track of a still picture."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import av
import numpy as np
import numpy.typing as npt
import uvicorn
from aiortc import RTCPeerConnection, RTCSessionDescription, VideoStreamTrack

from stream_pipeline.engine import Engine
from stream_pipeline.server import ServerSettings, create_app
from tests.support.rtsp import free_port

__all__ = [
    "Served",
    "StillTrack",
    "WhepClient",
    "WhipClient",
    "serve_app",
    "until",
]


async def until(cond: Callable[[], bool], within: float, what: str) -> None:
    """Wait until ``cond()``, or fail saying ``what`` did not happen."""
    deadline = time.monotonic() + within
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}")
        await asyncio.sleep(0.02)


@dataclass
class Served:
    """A running app: its base URL, the engine behind it and an HTTP session to call it."""

    url: str
    engine: Engine
    http: aiohttp.ClientSession
    app: Any

    @property
    def server(self) -> Any:
        """The app's :class:`~stream_pipeline.server.Server`."""
        return self.app.state.server


@contextlib.asynccontextmanager
async def serve_app(engine: Engine, settings: ServerSettings) -> AsyncIterator[Served]:
    """The app on 127.0.0.1 on a free port, stopped on exit (even when the test fails)."""
    app = create_app(engine, settings)
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: server.started or task.done(), 10, "uvicorn to start")
        if task.done():
            task.result()
        async with aiohttp.ClientSession() as http:
            yield Served(f"http://127.0.0.1:{port}", engine, http, app)
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)  # generous: CI machines are shared


class StillTrack(VideoStreamTrack):
    """A camera that films one picture, paced at 30 frames/s."""

    def __init__(self, rgb: npt.NDArray[np.uint8]) -> None:
        super().__init__()
        self.rgb = rgb
        self.sent = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame.from_ndarray(self.rgb, format="rgb24")
        frame.pts, frame.time_base = pts, time_base
        self.sent += 1
        return frame


@dataclass
class _Client:
    http: aiohttp.ClientSession
    url: str
    token: str | None = None
    pc: RTCPeerConnection = field(default_factory=RTCPeerConnection)
    location: str | None = None

    def headers(self, **extra: str) -> dict[str, str]:
        h = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        h.update(extra)
        return h

    async def _offer(self, path: str) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        async with self.http.post(
            self.url + path,
            data=self.pc.localDescription.sdp,
            headers=self.headers(**{"Content-Type": "application/sdp"}),
        ) as resp:
            body = await resp.text()
            if resp.status != 201:
                raise AssertionError(f"POST {path}: {resp.status} {body}")
            self.location = resp.headers["Location"]
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def connected(self, within: float = 10) -> None:
        await until(lambda: self.pc.connectionState == "connected", within, "ICE+DTLS")

    async def delete(self) -> int:
        assert self.location is not None
        async with self.http.delete(self.url + self.location, headers=self.headers()) as resp:
            return resp.status

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.location is not None:
                await self.delete()
        await self.pc.close()


@dataclass
class WhipClient(_Client):
    """Publishes a track to ``/whip/{stream}``."""

    async def publish(self, stream: str, track: Any) -> None:
        self.pc.addTransceiver(track, direction="sendonly")
        await self._offer(f"/whip/{stream}")


@dataclass
class WhepClient(_Client):
    """Watches ``/whep/{stream}``: counts frames, keeps the newest, collects data-channel JSON."""

    frames: int = 0
    latest: npt.NDArray[np.uint8] | None = None
    messages: list[dict[str, Any]] = field(default_factory=list)
    keep: int = 2000
    stalled: bool = False  # a stalled viewer never reads its track
    _reader: asyncio.Task[None] | None = None

    async def watch(self, stream: str) -> None:
        self.pc.addTransceiver("video", direction="recvonly")
        channel = self.pc.createDataChannel("summary")

        @channel.on("message")
        def _message(text: str) -> None:
            if len(self.messages) < self.keep:
                self.messages.append(json.loads(text))

        @self.pc.on("track")
        def _track(track: Any) -> None:
            if not self.stalled:
                self._reader = asyncio.ensure_future(self._read(track))

        await self._offer(f"/whep/{stream}")

    async def _read(self, track: Any) -> None:
        from aiortc.mediastreams import MediaStreamError

        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                self.frames += 1
                self.latest = frame.to_ndarray(format="rgb24")

    async def close(self) -> None:
        await super().close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
