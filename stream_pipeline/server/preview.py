"""The preview of a stream: its annotated frames, made once and shared by every WHEP viewer.

A :class:`Preview` exists while a stream has viewers. It reads the stream's results from one
``latest`` subscription (a slow preview never holds the worker back), draws the overlay and
scales it to at most 720 lines in a worker thread, converts it once to I420 (what aiortc's VP8
and H.264 encoders take) and publishes it with its per-frame summary. Each viewer's track hands
its encoder the newest published frame: a viewer that cannot keep up skips frames, one that has
stalled holds nothing but a reference to the newest frame. The last viewer to leave stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

from stream_pipeline.consumers.visualize import MaskAnnotator
from stream_pipeline.engine import Engine, Subscription
from stream_pipeline.frames import SegResult
from stream_pipeline.model.serialize import class_statistics, confidence_u8

__all__ = ["MAX_PREVIEW_HEIGHT", "Preview", "PreviewTrack", "Previews", "preview_size", "summary"]

MAX_PREVIEW_HEIGHT = 720  # aiortc encodes in software, per viewer: keep previews ≤ 720p
_CLOCK = 90_000  # RTP's video clock: the pts unit of published frames
_TIME_BASE = Fraction(1, _CLOCK)


def preview_size(width: int, height: int, max_height: int = MAX_PREVIEW_HEIGHT) -> tuple[int, int]:
    """The preview's size: at most ``max_height`` lines, aspect kept, both even (I420)."""
    if height > max_height:
        width, height = round(width * max_height / height), max_height
    return max(2, width - width % 2), max(2, height - height % 2)


def summary(
    result: SegResult, class_names: tuple[str, ...], background_id: int | None
) -> dict[str, Any]:
    """The data channel's JSON of one result: ids, time, present classes (share and mean
    confidence, as the prediction format computes it) and the pipeline's latency so far."""
    frame = result.frame
    assert frame is not None
    meta = frame.meta
    count, total, _ = class_statistics(
        result.class_map, confidence_u8(result.confidence), len(class_names)
    )
    pixels = result.width * result.height
    classes = [
        {
            "id": cid,
            "class": class_names[cid],
            "share": round(int(count[cid]) / pixels, 6),
            "confidence": round(int(total[cid]) / int(count[cid]) / 255.0, 6),
        }
        for cid in result.present_class_ids
        if cid != background_id and count[cid] > 0
    ]
    return {
        "type": "frame",
        "stream": meta.source_id,
        "frame_id": meta.frame_id,
        "pts": round(meta.pts_seconds, 6),
        "captured_at": round(meta.captured_at, 6),
        "width": result.width,
        "height": result.height,
        "classes": classes,
        "latency_ms": round((time.monotonic() - meta.arrival_monotonic) * 1000.0, 2),
    }


class PreviewTrack(MediaStreamTrack):
    """One viewer's video track: the newest frame of its preview each time its encoder asks."""

    kind = "video"

    def __init__(self, preview: Preview) -> None:
        super().__init__()
        self._preview = preview
        self._seen = 0

    async def recv(self) -> av.VideoFrame:
        """The next frame newer than the last one this viewer got; ends with the preview."""
        if self.readyState != "live":
            raise MediaStreamError
        frame = await self._preview.next_frame(self._seen)
        if frame is None:
            self.stop()
            raise MediaStreamError
        self._seen, video = frame
        return video


class Viewer:
    """A viewer of a preview: its track and, once the peer opens it, its data channel."""

    def __init__(self, preview: Preview) -> None:
        self.track = PreviewTrack(preview)
        self.channel: Any = None  # aiortc RTCDataChannel

    def send(self, text: str) -> None:
        """Send one summary, unless the channel is not open or the peer is not reading (its
        buffered bytes would grow): a summary is worth nothing once the next one exists."""
        channel = self.channel
        if channel is None or channel.readyState != "open":
            return
        if channel.bufferedAmount > 64 * 1024:
            return
        channel.send(text)


class Preview:
    """The shared annotated frames of one stream (see the module docstring)."""

    def __init__(
        self,
        engine: Engine,
        stream: str,
        annotator: MaskAnnotator,
        background_id: int | None,
        on_end: Callable[[Preview], None],
        max_height: int = MAX_PREVIEW_HEIGHT,
    ) -> None:
        self.stream = stream
        self.annotator = annotator
        self.background_id = background_id
        self.max_height = max_height
        self.viewers: list[Viewer] = []
        self.frames = 0
        self._sub: Subscription = engine.subscribe(stream, delivery="latest")
        self._on_end = on_end
        self._latest: tuple[int, av.VideoFrame] | None = None
        self._changed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._ended = False
        self._t0 = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"preview-{stream}")

    def add_viewer(self) -> Viewer:
        """A new viewer of this preview."""
        viewer = Viewer(self)
        self.viewers.append(viewer)
        return viewer

    def remove_viewer(self, viewer: Viewer) -> bool:
        """Forget ``viewer``; ``True`` when it was the last one (then :meth:`aclose` it)."""
        viewer.track.stop()
        if viewer in self.viewers:
            self.viewers.remove(viewer)
        return not self.viewers

    async def next_frame(self, seen: int) -> tuple[int, av.VideoFrame] | None:
        """The newest frame after number ``seen``, waiting for one; ``None`` once it ended."""
        while True:
            latest = self._latest
            if latest is not None and latest[0] > seen:
                return latest
            if self._ended:
                return None
            await asyncio.shield(self._changed)

    def _render(self, result: SegResult) -> tuple[av.VideoFrame, str]:
        """In a worker thread: overlay, scale, I420, and the summary; never on the loop."""
        frame = result.frame
        assert frame is not None and frame.rgb is not None
        drawn = self.annotator.annotate(frame.rgb, result.class_map, result.present_class_ids)
        width, height = preview_size(result.width, result.height, self.max_height)
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(drawn), format="rgb24")
        video = video.reformat(width=width, height=height, format="yuv420p")
        # One clock for the stream, so every viewer's encoder sees rising timestamps.
        video.pts = int((time.monotonic() - self._t0) * _CLOCK)
        video.time_base = _TIME_BASE
        info = summary(result, self.annotator.class_names, self.background_id)
        return video, json.dumps(info, separators=(",", ":"))

    def _publish(self, value: tuple[int, av.VideoFrame] | None) -> None:
        if value is not None:
            self._latest = value
        changed, self._changed = self._changed, asyncio.get_running_loop().create_future()
        changed.set_result(None)

    async def _run(self) -> None:
        try:
            async for result in self._sub:
                if result.frame is None or result.frame.rgb is None:
                    continue  # no host pixels (a device-only source): nothing to draw
                video, text = await asyncio.to_thread(self._render, result)
                self.frames += 1
                self._publish((self.frames, video))
                for viewer in list(self.viewers):
                    viewer.send(text)
        finally:
            self._ended = True
            self._publish(None)
            await self._sub.aclose()
        # Reached only when the stream ended (not when the last viewer left): tell the owner.
        self._on_end(self)

    async def aclose(self) -> None:
        """Stop reading results and end every viewer's track (idempotent)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


class Previews:
    """The previews of an engine's streams, one per watched stream, made on the first viewer."""

    def __init__(
        self,
        engine: Engine,
        annotator: MaskAnnotator,
        background_id: int | None,
        on_stream_end: Callable[[str], None],
        max_height: int = MAX_PREVIEW_HEIGHT,
    ) -> None:
        self.engine = engine
        self.annotator = annotator
        self.background_id = background_id
        self.max_height = max_height
        self._on_stream_end = on_stream_end
        self._previews: dict[str, Preview] = {}

    def _ended(self, preview: Preview) -> None:
        self._forget(preview)
        self._on_stream_end(preview.stream)

    def __len__(self) -> int:
        return len(self._previews)

    def get(self, stream: str) -> Preview | None:
        """The running preview of ``stream``, if anyone watches it."""
        return self._previews.get(stream)

    def watch(self, stream: str) -> tuple[Preview, Viewer]:
        """A viewer of ``stream`` (its preview starts with its first viewer)."""
        preview = self._previews.get(stream)
        if preview is None:
            preview = Preview(
                self.engine,
                stream,
                self.annotator,
                self.background_id,
                self._ended,
                self.max_height,
            )
            self._previews[stream] = preview
        return preview, preview.add_viewer()

    async def leave(self, preview: Preview, viewer: Viewer) -> None:
        """``viewer`` has gone; the last viewer stops the preview (no encoding for nobody)."""
        if preview.remove_viewer(viewer):
            self._forget(preview)
            await preview.aclose()

    def _forget(self, preview: Preview) -> None:
        if self._previews.get(preview.stream) is preview:
            del self._previews[preview.stream]

    async def aclose(self) -> None:
        """Stop every preview."""
        for preview in list(self._previews.values()):
            self._forget(preview)
            await preview.aclose()
