"""What WHIP and WHEP share: reading an SDP offer, a peer connection's life, the session registry.

A session is one ``RTCPeerConnection`` and what it holds (an engine source, a preview viewer). It
ends — once, whoever asks first — on ``DELETE``, when the peer's DTLS closes (a closed tab), when
ICE fails, when it is not connected within ``connect_timeout``, when nothing (no RTCP, no media)
has come from the peer for ``peer_timeout`` (a vanished peer: a killed browser sends no goodbye,
and ICE consent would take 30 s to notice), or at shutdown; ending it closes the peer connection
and releases what it held.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import secrets
from collections.abc import Awaitable, Callable

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection
from aiortc.sdp import SessionDescription
from fastapi import HTTPException, Request

__all__ = [
    "MAX_SDP_BYTES",
    "PeerSession",
    "SessionRegistry",
    "ice_server",
    "new_peer",
    "read_offer",
]

log = logging.getLogger(__name__)

MAX_SDP_BYTES = 64 * 1024  # a browser offer is a few kB; anything near this is not an offer


async def read_offer(request: Request, want: str) -> str:
    """The SDP offer in ``request``'s body, checked before anything is allocated.

    ``want`` is the direction the offer must be able to carry media in: ``"send"`` (WHIP: the
    client sends video) or ``"recv"`` (WHEP: the client receives video). Raises a worded 4xx.
    """
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "application/sdp":
        raise HTTPException(415, f"the body must be an SDP offer (application/sdp), got {ctype!r}")
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_SDP_BYTES:
        raise HTTPException(413, f"an SDP offer is at most {MAX_SDP_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_SDP_BYTES:
            raise HTTPException(413, f"an SDP offer is at most {MAX_SDP_BYTES} bytes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the SDP offer is not UTF-8 text") from None
    if not text.strip():
        raise HTTPException(400, "no SDP offer in the body")
    if not text.lstrip().startswith("v=0"):
        raise HTTPException(400, "malformed SDP offer: it must start with 'v=0'")
    try:
        parsed = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the bad line provokes
        raise HTTPException(400, f"malformed SDP offer: {exc or type(exc).__name__}") from None
    # aiortc gives each m-line the session-level direction when the line has none of its own.
    allowed = {"send": ("sendonly", "sendrecv"), "recv": ("recvonly", "sendrecv")}[want]
    video = [
        m for m in parsed.media if m.kind == "video" and (m.direction or "sendrecv") in allowed
    ]
    if not video:
        who = "sends" if want == "send" else "receives"
        raise HTTPException(400, f"the SDP offer has no video m-line that {who} video")
    if not all(m.ice and m.ice.usernameFragment and m.dtls for m in parsed.media):
        raise HTTPException(400, "malformed SDP offer: every m-line needs ICE and DTLS attributes")
    return text


def ice_server(url: str) -> RTCIceServer:
    """``stun:host:port``, ``turn:host:port?transport=udp`` or, with credentials,
    ``turn:user:password@host:port``."""
    scheme, sep, rest = url.partition(":")
    if not sep or scheme not in ("stun", "stuns", "turn", "turns"):
        raise ValueError(f"an ICE server is stun:, stuns:, turn: or turns:, got {url!r}")
    creds, at, where = rest.rpartition("@")
    if not at:
        return RTCIceServer(urls=url)
    user, _, password = creds.partition(":")
    return RTCIceServer(urls=f"{scheme}:{where}", username=user, credential=password)


def new_peer(ice_servers: tuple[str, ...]) -> RTCPeerConnection:
    """A peer connection with the configured STUN/TURN servers (none on loopback)."""
    servers = [ice_server(url) for url in ice_servers]
    return RTCPeerConnection(RTCConfiguration(iceServers=servers) if servers else None)


class PeerSession:
    """One peer connection and what it holds; :meth:`close` releases both (idempotent)."""

    def __init__(
        self,
        kind: str,
        stream: str,
        pc: RTCPeerConnection,
        release: Callable[[], Awaitable[None]],
    ) -> None:
        self.id = secrets.token_urlsafe(12)
        self.kind = kind
        self.stream = stream
        self.pc = pc
        self._release = release
        self._closing: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watchdog: asyncio.Task[None] | None = None

    @property
    def location(self) -> str:
        """The session's URL path (the ``Location`` of the 201)."""
        return f"/{self.kind}/{self.stream}/{self.id}"

    async def close(self) -> None:
        """Close the peer connection, then release what the session held (once)."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = asyncio.get_running_loop().create_future()
        try:
            if self._timer is not None:
                self._timer.cancel()
            if self._watchdog is not None and self._watchdog is not asyncio.current_task():
                self._watchdog.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._watchdog
            try:
                await self.pc.close()
            finally:
                await self._release()
        finally:
            self._closing.set_result(None)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` has begun."""
        return self._closing is not None


class SessionRegistry:
    """Every live session, and the tasks that end sessions on their own (awaited at shutdown)."""

    def __init__(self, connect_timeout: float, peer_timeout: float) -> None:
        self.connect_timeout = connect_timeout
        self.peer_timeout = peer_timeout
        self._sessions: dict[str, PeerSession] = {}
        self._ending: set[asyncio.Task[None]] = set()

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, kind: str, stream: str, session_id: str) -> PeerSession | None:
        """The session at ``/{kind}/{stream}/{session_id}``, if it is live."""
        session = self._sessions.get(session_id)
        if session is None or session.kind != kind or session.stream != stream:
            return None
        return session

    def of_stream(self, kind: str, stream: str) -> list[PeerSession]:
        """Live sessions of ``kind`` on ``stream``."""
        return [s for s in self._sessions.values() if s.kind == kind and s.stream == stream]

    def add(self, session: PeerSession) -> None:
        """Track ``session`` and end it when its peer goes away or never connects."""
        self._sessions[session.id] = session
        pc = session.pc

        @pc.on("connectionstatechange")
        def _changed() -> None:
            if pc.connectionState in ("failed", "closed"):
                self.end_soon(session)
            elif pc.connectionState == "connected" and session._timer is not None:
                session._timer.cancel()

        loop = asyncio.get_running_loop()
        session._timer = loop.call_later(self.connect_timeout, self._timed_out, session)
        session._watchdog = loop.create_task(self._watch(session), name=f"peer-{session.id}")

    async def _watch(self, session: PeerSession) -> None:
        """End ``session`` once its peer has been silent for ``peer_timeout``: no RTCP report and
        no new media packet (encoders send RTCP only every few seconds; media counts too)."""
        pc = session.pc
        heard: datetime.datetime | None = None
        packets = -1
        period = min(1.0, self.peer_timeout / 4)
        while not session.closed:
            await asyncio.sleep(period)
            if pc.connectionState != "connected":
                continue  # not yet (the connect timeout applies) or ending already
            now = datetime.datetime.now(datetime.UTC)
            stats = list((await pc.getStats()).values())
            reports = [
                s.timestamp
                for s in stats
                if s.type in ("remote-inbound-rtp", "remote-outbound-rtp")
            ]
            received = sum(s.packetsReceived for s in stats if s.type == "inbound-rtp")
            if received > packets:
                reports.append(now)
                packets = received
            heard = max([*reports, heard or now])
            if (now - heard).total_seconds() > self.peer_timeout:
                log.info("%s %s: nothing from the peer for %.0f s", session.kind, session.id,
                         self.peer_timeout)  # fmt: skip
                self.end_soon(session)
                return

    def _timed_out(self, session: PeerSession) -> None:
        if session.pc.connectionState != "connected":
            log.info("%s %s: not connected after %.0f s", session.kind, session.id,
                     self.connect_timeout)  # fmt: skip
            self.end_soon(session)

    def end_soon(self, session: PeerSession) -> None:
        """End ``session`` from a callback; the task is kept until it is done."""
        if session.closed:
            self._sessions.pop(session.id, None)
            return
        task = asyncio.get_running_loop().create_task(self.end(session))
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def end(self, session: PeerSession) -> None:
        """End ``session`` now and forget it."""
        self._sessions.pop(session.id, None)
        try:
            await session.close()
        except Exception:  # a peer that fails to close must not keep its resources
            log.exception("closing %s session %s", session.kind, session.id)

    async def aclose(self) -> None:
        """End every session and wait for every ending."""
        for session in list(self._sessions.values()):
            self.end_soon(session)
        while self._ending:
            with contextlib.suppress(Exception):
                await asyncio.gather(*list(self._ending))
