"""Pushing the annotated stream to an RTSP server (MediaMTX and the like) with PyAV.

The sink is a preview: it takes the latest result only, so a slow or absent server never stalls
recording or predictions. It encodes H.264 for low latency (``zerolatency``, no B-frames, a
keyframe every two seconds so viewers join quickly). When the server is down — at start or
mid-stream — frames are dropped (counted) while it reconnects with backoff, like inputs do.

Known limit: a server that stalls mid-push (alive, but reading nothing) blocks FFmpeg's write
once the socket buffers fill; neither timeout option bounds it. The pipeline then abandons this
sink's thread at shutdown after a grace period instead of hanging.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from fractions import Fraction
from typing import Any

import av

from stream_pipeline.consumers.base import Delivery, Failure, Sink, SinkContext
from stream_pipeline.consumers.files import one_line
from stream_pipeline.consumers.video import TIME_BASE, yuv_frame
from stream_pipeline.consumers.visualize import MaskAnnotator
from stream_pipeline.errors import ConfigError
from stream_pipeline.frames import SegResult
from stream_pipeline.redact import redact_text, redact_url
from stream_pipeline.retry import ReconnectPolicy

__all__ = ["RtspOutSink"]

log = logging.getLogger(__name__)


class RtspOutSink(Sink):
    """Publishes one source's annotated frames to ``rtsp://host[:port]/path`` (ANNOUNCE/RECORD)."""

    name = "rtsp-out"
    delivery = Delivery.LATEST
    failure = Failure.BEST_EFFORT

    def __init__(
        self,
        url: str,
        annotator: MaskAnnotator | None = None,
        source_id: str | None = None,
        transport: str = "tcp",
        open_timeout: float = 5.0,
        reconnect: ReconnectPolicy | None = None,
        preset: str = "ultrafast",
        threads: int = 1,
    ) -> None:
        super().__init__(source_id)
        if not url.lower().startswith(("rtsp://", "rtsps://")):
            raise ConfigError(f"RTSP output must be an rtsp:// URL, got {redact_url(url)!r}")
        if transport not in ("tcp", "udp"):
            raise ConfigError(f"RTSP output transport must be tcp or udp, got {transport!r}")
        self.url = url
        self.display_url = redact_url(url)
        self.annotator = annotator
        self.transport = transport
        self.open_timeout = open_timeout
        self.reconnect = reconnect or ReconnectPolicy(initial_delay=1.0, max_delay=15.0)
        self.preset = preset
        self.threads = threads
        self._fps = 30.0
        self._container: Any = None
        self._stream: Any = None
        self._size: tuple[int, int] | None = None
        self._origin = 0.0
        self._last_pts = -1
        self._retry_at = 0.0
        self._attempt = 0
        self._rng = random.Random()

    def open(self, context: SinkContext) -> None:
        """Remember the source's rate; the connection is made with the first frame."""
        if self.source_id is not None:
            self._fps = context.source_fps.get(self.source_id, self._fps)

    def _connect(self, width: int, height: int, pts_seconds: float) -> None:
        # PyAV's `timeout=` only guards inputs; for the handshake FFmpeg's `timeout` (µs) does.
        options = {"rtsp_transport": self.transport, "timeout": str(int(self.open_timeout * 1e6))}
        container = av.open(self.url, "w", format="rtsp", options=options)
        try:
            rate = Fraction(self._fps).limit_denominator(1001)
            gop = max(1, round(self._fps * 2))
            stream = container.add_stream(
                "libx264",
                rate=rate,
                options={"preset": self.preset, "tune": "zerolatency", "g": str(gop), "bf": "0"},
            )
            stream.width, stream.height = width & ~1, height & ~1
            stream.pix_fmt = "yuv420p"
            stream.time_base = TIME_BASE
            stream.codec_context.time_base = TIME_BASE
            stream.codec_context.thread_count = self.threads
            container.start_encoding()  # ANNOUNCE + RECORD happen here: fail now, not later
        except BaseException:
            container.close()
            raise
        self._container, self._stream = container, stream
        self._size = (width & ~1, height & ~1)
        self._origin = pts_seconds
        self._last_pts = -1
        self.stats.set_state("streaming")
        self._attempt = 0

    def _fail(self, exc: BaseException) -> None:
        self._disconnect()
        self._attempt += 1
        self.stats.count_reconnect()
        delay = self.reconnect.delay(self._attempt, self._rng)
        self._retry_at = time.monotonic() + delay
        self.stats.set_state("reconnecting")
        message = redact_text(one_line(exc), self.url)
        self.stats.set_error(message)
        log.warning("RTSP output %s: %s; retrying in %.1f s", self.display_url, message, delay)

    def write(self, result: SegResult) -> None:
        """Encode and send one result; dropped (and counted) while the server is unreachable."""
        frame = result.frame
        if frame is None or frame.rgb is None:
            return
        if self._container is None:
            if time.monotonic() < self._retry_at:
                self.stats.count_dropped()
                return
            try:
                self._connect(frame.meta.width, frame.meta.height, frame.meta.pts_seconds)
            except (av.FFmpegError, OSError) as exc:
                self.stats.count_dropped()
                self._fail(exc)
                return
        assert self._size is not None
        image = frame.rgb
        if self.annotator is not None:
            image = self.annotator.annotate(image, result.class_map, result.present_class_ids)
        video_frame = yuv_frame(image, self._size)
        pts = max(round((frame.meta.pts_seconds - self._origin) / TIME_BASE), self._last_pts + 1)
        video_frame.pts, video_frame.time_base = pts, TIME_BASE
        try:
            self._container.mux(self._stream.encode(video_frame))
        except (av.FFmpegError, OSError) as exc:
            self.stats.count_dropped()
            self._fail(exc)
            return
        self._last_pts = pts
        self.stats.count_delivered()

    def _disconnect(self) -> None:
        container, stream = self._container, self._stream
        self._container = self._stream = None
        if container is None:
            return
        # When the server is gone there is nothing to flush to: errors here change nothing.
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            container.mux(stream.encode(None))
        with contextlib.suppress(av.FFmpegError, OSError, ValueError):
            container.close()

    def close(self) -> None:
        """Flush and end the RTSP session (idempotent)."""
        self._disconnect()
        self.stats.set_state("stopped")
