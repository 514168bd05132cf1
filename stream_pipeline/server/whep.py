"""WHEP preview: the annotated video of any stream (WHIP, RTSP, file, synthetic) to a viewer.

``POST /whep/{stream}`` (an SDP offer that receives video) → ``201``, the answer and the
session's ``Location``; ``DELETE`` there ends the viewer; ``PATCH`` is ``405`` (no trickle ICE).
A data channel the client opens in its offer gets one JSON summary per frame (see
:func:`stream_pipeline.server.preview.summary`), first a ``{"type": "classes"}`` legend.
"""

from __future__ import annotations

import json
from typing import Any

from aiortc import RTCSessionDescription
from fastapi import APIRouter, HTTPException, Request, Response

from stream_pipeline.errors import ConfigError
from stream_pipeline.server.app import add_session_routes, server_of
from stream_pipeline.server.signalling import PeerSession, new_peer, read_offer

__all__ = ["router"]

router = APIRouter()


@router.post("/whep/{stream}", status_code=201)
async def watch(stream: str, request: Request) -> Response:
    """Take a WHEP offer: a new viewer of ``stream``'s preview."""
    server = server_of(request)
    server.authorize(request)
    offer = await read_offer(request, "recv")
    if stream not in server.stream_ids():
        raise HTTPException(404, f"no stream {stream!r} is running")
    try:
        preview, viewer = server.previews.watch(stream)
    except ConfigError:  # it ended between the check and the subscription
        raise HTTPException(404, f"no stream {stream!r} is running") from None
    pc = new_peer(server.settings.ice_servers)

    async def release() -> None:
        await server.previews.leave(preview, viewer)

    session = PeerSession("whep", stream, pc, release)
    legend = json.dumps({"type": "classes", "classes": server.classes()})

    @pc.on("datachannel")
    def _channel(channel: Any) -> None:
        viewer.channel = channel
        if channel.readyState == "open":
            channel.send(legend)
        else:
            channel.on("open", lambda: channel.send(legend))

    try:
        sender = pc.addTrack(viewer.track)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        for transceiver in pc.getTransceivers():
            # Send the preview; receive nothing (media a viewer sent would queue unread).
            transceiver.direction = "sendonly" if transceiver.sender is sender else "inactive"
        await pc.setLocalDescription(await pc.createAnswer())
    except BaseException as exc:
        await session.close()
        if isinstance(exc, Exception):
            raise HTTPException(400, f"cannot negotiate this offer: {exc}") from None
        raise
    server.sessions.add(session)
    return Response(
        pc.localDescription.sdp,
        status_code=201,
        media_type="application/sdp",
        headers={"Location": session.location},
    )


add_session_routes(router, "whep")
