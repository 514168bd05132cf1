"""Anything PyAV opens: files, HTTP/HLS URLs, RTSP cameras, V4L2 webcams.

Decoding runs in the source's own thread. Live sources reconnect with backoff and jitter; a
stalled stream (open, but no frames for ``read_timeout``) is noticed by PyAV's interrupt callback
and treated like a dropped connection. Frame ids keep counting and timestamps stay monotonic
across reconnects. Every message that leaves this module has the URL's password redacted.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av

from stream_pipeline.buffer import RingBuffer, RingClosed
from stream_pipeline.errors import SourceError, SourceOpenError
from stream_pipeline.frames import Frame, UInt8Array
from stream_pipeline.redact import redact_text
from stream_pipeline.sources.base import Source, SourceSpec, SourceState

__all__ = ["AvSource"]

log = logging.getLogger(__name__)

# A file that yields this many undecodable packets in a row is considered broken beyond repair.
_MAX_CONSECUTIVE_DECODE_ERRORS = 50


def _to_rgb24(vf: Any) -> UInt8Array:
    rgb: UInt8Array = vf.to_ndarray(format="rgb24")
    return rgb


class AvSource(Source):
    """A PyAV-decoded source (see module docstring)."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._container: Any = None
        self._rng = random.Random()
        self._close_lock = threading.Lock()
        # How a decoded VideoFrame becomes H×W×3 RGB; a decoder child sets its own, which
        # converts straight into a shared-memory slot.
        self.rgb_of: Callable[[Any], UInt8Array] = _to_rgb24

    # -- opening ---------------------------------------------------------------------------

    def _options(self) -> dict[str, str]:
        spec = self.spec
        options: dict[str, str] = {}
        if spec.scheme in ("rtsp", "rtsps"):
            options["rtsp_transport"] = spec.transport
            # FFmpeg ≥ 5 ignores `stimeout` silently; `timeout` is the socket timeout in µs.
            options["timeout"] = str(int(spec.read_timeout * 1_000_000))
            # The default probe reads ~2 s of video before the first frame and then delivers it
            # as a burst: the pipeline would start 2 s behind live. The size comes from the SDP
            # or the first frame. (`fflags=nobuffer` was measured to make it worse.)
            options["probesize"] = "32"
        options.update(dict(spec.options))
        return options

    def _error(self, exc: BaseException) -> str:
        text = str(exc).strip() or type(exc).__name__
        # Recognised by type (PyAV maps FFmpeg's AVERROR codes to classes), never by the text.
        if isinstance(exc, av.error.ExitError):
            # PyAV's interrupt callback fired: the open or read timeout passed without data.
            spec = self.spec
            text = (
                f"no data within the timeout (open {spec.open_timeout:g} s, "
                f"read {spec.read_timeout:g} s): stalled"
            )
        elif isinstance(exc, av.error.HTTPUnauthorizedError):
            text = f"401 Unauthorized (wrong or missing credentials): {text}"
        elif isinstance(exc, av.error.HTTPNotFoundError):
            text = f"404 Not Found (wrong path?): {text}"
        return redact_text(text.splitlines()[0], self.spec.url)

    def _open_container(self) -> Any:
        spec = self.spec
        if spec.scheme == "file" and not spec.url.startswith("/dev/"):
            path = Path(spec.url)
            if not path.exists():
                raise SourceOpenError(f"source {spec.id}: no such file: {path}")
            if path.is_dir():
                raise SourceOpenError(f"source {spec.id}: {path} is a directory, not a video")
        fmt = "v4l2" if spec.url.startswith("/dev/video") else None
        try:
            container = av.open(
                spec.url,
                format=fmt,
                options=self._options(),
                timeout=(spec.open_timeout, spec.read_timeout),
            )
        except av.error.InvalidDataError:
            raise SourceOpenError(
                f"source {spec.id}: {spec.display_url} is not a video PyAV can read (invalid data)"
            ) from None
        except (av.FFmpegError, OSError) as exc:
            raise SourceOpenError(
                f"source {spec.id}: cannot open {spec.display_url}: {self._error(exc)}"
            ) from None
        if not container.streams.video:
            container.close()
            raise SourceOpenError(f"source {spec.id}: {spec.display_url} has no video stream")
        stream = container.streams.video[0]
        # Frame threading adds a frame of delay per thread: live streams want slice threads.
        stream.thread_type = "SLICE" if spec.live else "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        if rate:
            self.clock.fps = float(rate)
        if not spec.live and stream.frames:
            total = int(stream.frames)
            self.status.set_total(min(spec.max_frames, total) if spec.max_frames else total)
        return container

    def open(self) -> None:
        """Open the input once, so that bad input fails before the pipeline starts."""
        self.status.set_state(SourceState.CONNECTING)
        try:
            self._container = self._open_container()
        except SourceOpenError as exc:
            self.status.set_error(str(exc))
            if not (self.spec.live and self.spec.reconnect.retry_first_open):
                self.status.set_state(SourceState.FAILED)
                raise
            self.status.set_state(SourceState.RECONNECTING)

    # -- streaming -------------------------------------------------------------------------

    def run(self, ring: RingBuffer[Frame], stop: threading.Event) -> None:
        """Decode until the end (files), ``max_frames``, ``stop`` or a fatal failure."""
        spec = self.spec
        attempt = 0
        try:
            while not stop.is_set():
                if self._container is None:
                    self.status.set_state(SourceState.CONNECTING)
                    try:
                        self._container = self._open_container()
                    except SourceOpenError as exc:
                        if not spec.live:
                            raise
                        attempt += 1
                        error = str(exc).removeprefix(f"source {spec.id}: ")
                        if not self._backoff(error, attempt, stop):
                            return
                        continue
                frames_before = self.clock.next_id
                try:
                    done = self._stream(ring, stop)
                    if done or not spec.live:
                        return
                    raise SourceError("stream ended")
                except RingClosed:
                    return
                except (av.FFmpegError, OSError) as exc:
                    if not spec.live:
                        # Mid-file fault: keep what was decoded, say where it broke, finish.
                        self._warn_file_fault(exc)
                        return
                    # Back off from scratch only if this connection delivered frames.
                    attempt = 1 if self.clock.next_id > frames_before else attempt + 1
                    self._close_container()
                    if not self._backoff(self._error(exc), attempt, stop):
                        return
        finally:
            self._close_container()
            self.status.finish(stopped=stop.is_set())

    def _backoff(self, error: str, attempt: int, stop: threading.Event) -> bool:
        """Record ``error`` and wait before the next attempt; False when giving up or stopped."""
        policy = self.spec.reconnect
        self.status.set_error(error)
        if policy.max_attempts is not None and attempt > policy.max_attempts:
            self.status.set_state(SourceState.FAILED)
            log.error("source %s failed after %d attempts: %s", self.spec.id, attempt - 1, error)
            return False
        self.status.set_state(SourceState.RECONNECTING)
        self.status.count_reconnect()
        self.clock.restart()
        delay = policy.delay(attempt, self._rng)
        log.warning(
            "source %s: %s; reconnecting in %.1f s (attempt %d)",
            self.spec.id,
            error,
            delay,
            attempt,
        )
        return not stop.wait(delay)

    def _warn_file_fault(self, exc: BaseException) -> None:
        n = self.clock.next_id
        where = f"after frame {n - 1}" if n else "before the first frame"
        if self.clock.last_pts is not None:
            where += f" (t={self.clock.last_pts:.3f} s)"
        message = f"decoding stopped {where}: {self._error(exc)}"
        self.status.set_error(message)
        log.warning("source %s: %s", self.spec.id, message)

    def _stream(self, ring: RingBuffer[Frame], stop: threading.Event) -> bool:
        """Decode from the open container; True when ``max_frames`` or ``stop`` ended it."""
        spec = self.spec
        container = self._container
        stream = container.streams.video[0]
        self.status.set_state(SourceState.STREAMING)
        consecutive_errors = 0
        pace_origin: tuple[float, float] | None = None
        for packet in container.demux(stream):
            if stop.is_set():
                return True
            try:
                frames = packet.decode()
                consecutive_errors = 0
            except av.error.InvalidDataError as exc:
                # A corrupt packet: skip it and keep decoding, as players do; say so once.
                consecutive_errors += 1
                if consecutive_errors == 1:
                    message = f"skipped corrupt data: {self._error(exc)}"
                    self.status.set_error(message)
                    log.warning("source %s: %s", spec.id, message)
                if consecutive_errors >= _MAX_CONSECUTIVE_DECODE_ERRORS:
                    raise
                continue
            for vf in frames:
                frame = self._to_frame(vf)
                if spec.realtime:
                    pace_origin = self._pace(frame.meta.pts_seconds, pace_origin, stop)
                if not self.put(ring, frame, stop):
                    return True
                if spec.max_frames is not None and self.clock.next_id >= spec.max_frames:
                    return True
        return False

    def _to_frame(self, vf: Any) -> Frame:
        rgb = self.rgb_of(vf)
        height, width = rgb.shape[:2]
        return Frame(self.clock.stamp(vf.time, width, height), rgb=rgb)

    def _pace(
        self, pts: float, origin: tuple[float, float] | None, stop: threading.Event
    ) -> tuple[float, float]:
        if origin is None:
            return (time.monotonic(), pts)
        delay = origin[0] + (pts - origin[1]) - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        return origin

    def _close_container(self) -> None:
        with self._close_lock:
            container, self._container = self._container, None
        if container is not None:
            with contextlib.suppress(av.FFmpegError, OSError):
                container.close()

    def close(self) -> None:
        """Close the container if open (idempotent)."""
        self._close_container()
