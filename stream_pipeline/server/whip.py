"""WHIP ingest (RFC 9725): a client's video track becomes a source of the engine.

``POST /whip/{stream}`` (an SDP offer) → ``201``, the answer and the session's ``Location``;
``DELETE`` there ends the session and removes the source; ``PATCH`` (trickle ICE) is ``405``: the
answer carries every candidate of this end, and the offer must carry the client's.
"""

from __future__ import annotations

import asyncio

from aiortc import RTCSessionDescription
from aiortc.mediastreams import MediaStreamTrack
from fastapi import APIRouter, HTTPException, Request, Response

from stream_pipeline.buffer import DropPolicy
from stream_pipeline.engine import HostNeeds, SourceHandle
from stream_pipeline.errors import ConfigError
from stream_pipeline.server.app import Server, add_session_routes, server_of
from stream_pipeline.server.signalling import PeerSession, new_peer, read_offer
from stream_pipeline.sources import SourceSpec
from stream_pipeline.sources.track import TrackSource

__all__ = ["router"]

router = APIRouter()

INGEST_RING = 2  # a browser camera is live: keep the newest frames only (drop_oldest)


@router.post("/whip/{stream}", status_code=201)
async def publish(stream: str, request: Request) -> Response:
    """Take a WHIP offer: negotiate, and attach the offered video track as source ``stream``."""
    server = server_of(request)
    server.authorize(request)
    spec = SourceSpec(
        url=f"whip://{stream}", id=stream, buffer_policy=DropPolicy.DROP_OLDEST,
        buffer_size=INGEST_RING,
    )  # fmt: skip
    try:
        spec.validate()
    except ConfigError as exc:
        raise HTTPException(400, str(exc)) from None
    offer = await read_offer(request, "send")
    if stream in server.pending_whip or stream in server.stream_ids():
        raise HTTPException(409, f"stream {stream!r} is already in use")
    server.pending_whip.add(stream)
    try:
        return await _negotiate(server, spec, offer)
    finally:
        server.pending_whip.discard(stream)


async def _negotiate(server: Server, spec: SourceSpec, offer: str) -> Response:
    settings = server.settings
    pc = new_peer(settings.ice_servers)
    tracks: list[MediaStreamTrack] = []

    @pc.on("track")
    def _track(track: MediaStreamTrack) -> None:
        tracks.append(track)

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        video = next((t for t in tracks if t.kind == "video"), None)
        if video is None:
            raise HTTPException(400, "the SDP offer sends no video track")
        for transceiver in pc.getTransceivers():
            # Receive the first video track only: nothing reads the others (audio included), and
            # aiortc would queue their decoded frames without bound.
            used = transceiver.receiver.track is video
            transceiver.direction = "recvonly" if used else "inactive"
        await pc.setLocalDescription(await pc.createAnswer())
        handle = await server.engine.add_source(
            TrackSource(spec, video),
            model=settings.model,
            thresholds=settings.thresholds,
            job=settings.job,
            needs=HostNeeds(pixels=True),
        )
    except HTTPException:
        await pc.close()
        raise
    except ConfigError as exc:  # raced by another source of the same id
        await pc.close()
        raise HTTPException(409, str(exc)) from None
    except Exception as exc:
        await pc.close()
        raise HTTPException(400, f"cannot negotiate this offer: {exc}") from None
    except BaseException:
        await pc.close()
        raise

    async def release() -> None:
        # Only this session's source: the id may belong to a newer session by now.
        if handle in server.engine.sources_of(settings.job):
            await server.engine.remove_source(spec.id, hard=True, missing_ok=True)

    session = PeerSession("whip", spec.id, pc, release)
    server.sessions.add(session)
    _end_with_source(server, session, handle)
    return Response(
        pc.localDescription.sdp,
        status_code=201,
        media_type="application/sdp",
        headers={"Location": session.location},
    )


def _end_with_source(server: Server, session: PeerSession, handle: SourceHandle) -> None:
    """A source that ends on its own (the engine closes, the track ends) ends its session."""

    def done(_: asyncio.Future[None]) -> None:
        if not session.closed:
            server.sessions.end_soon(session)

    handle.finished.add_done_callback(done)


add_session_routes(router, "whip")
