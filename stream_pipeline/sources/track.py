"""A source fed by a media track on the event loop: an aiortc ``MediaStreamTrack`` (WebRTC ingest).

Anything with ``async recv() -> av.VideoFrame`` works. ``recv`` raising aiortc's
``MediaStreamError`` is the end of the track. The RGB conversion runs in a worker thread so the
event loop never waits on pixels.
"""

from __future__ import annotations

import asyncio
from typing import Any, Protocol

from stream_pipeline.buffer import RingBuffer, RingClosed
from stream_pipeline.frames import Frame
from stream_pipeline.sources.base import AsyncSource, SourceSpec, SourceState

__all__ = ["TrackSource", "VideoTrack"]


class VideoTrack(Protocol):
    """The part of aiortc's ``MediaStreamTrack`` a source needs."""

    async def recv(self) -> Any:
        """The next ``av.VideoFrame``; raises at the end of the track."""


class TrackSource(AsyncSource):
    """Frames of ``track`` into the ring (live semantics: ``drop_oldest`` unless told otherwise)."""

    def __init__(self, spec: SourceSpec, track: VideoTrack) -> None:
        super().__init__(spec)
        self.track = track

    async def open(self) -> None:
        """Nothing to probe: the track is already negotiated."""
        self.status.set_state(SourceState.CONNECTING)

    async def run(self, ring: RingBuffer[Frame], stop: asyncio.Event) -> None:
        """Receive frames until the track ends, ``max_frames``, ``stop`` or cancellation."""
        from aiortc.mediastreams import MediaStreamError

        limit = self.spec.max_frames
        try:
            while not stop.is_set():
                try:
                    video_frame = await self.track.recv()
                except MediaStreamError:
                    return
                self.status.set_state(SourceState.STREAMING)
                if video_frame.time is not None and video_frame.time_base is not None:
                    pts: float | None = float(video_frame.pts * video_frame.time_base)
                else:
                    pts = None
                rgb = await asyncio.to_thread(video_frame.to_ndarray, format="rgb24")
                height, width = rgb.shape[:2]
                await ring.aput(Frame(self.clock.stamp(pts, width, height), rgb=rgb))
                if limit is not None and self.clock.next_id >= limit:
                    return
        except RingClosed:
            return
        finally:
            self.status.finish(stopped=stop.is_set())
