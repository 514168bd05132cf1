"""Recording to an mp4 file: annotated (or raw) frames, H.264 by default, at the source's timing.

Timestamps come from each frame's ``pts_seconds`` (relative to the first frame written), in a
1/90000 s time base, so the file plays at the source's pace even when the source's rate varies or
frames were dropped upstream. The nominal rate (``fps``, else the source's rate from the
:class:`SinkContext`, else 30) only guides the encoder's rate control and the container metadata.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import numpy.typing as npt
from av.container import OutputContainer
from av.video.stream import VideoStream

from stream_pipeline.consumers.base import Delivery, Sink, SinkContext
from stream_pipeline.consumers.files import one_line, prepare_output_file
from stream_pipeline.consumers.visualize import MaskAnnotator
from stream_pipeline.errors import ConfigError, SinkError
from stream_pipeline.frames import SegResult

__all__ = ["FRAGMENTED_MP4", "VideoFileSink", "yuv_frame"]

TIME_BASE = Fraction(1, 90000)  # MPEG's clock: exact for 24, 25, 30, 50, 60 and 30000/1001 fps
DEFAULT_FPS = 30.0
RESTART_TICKS = 90000  # a timestamp more than 1 s behind the previous one: the clock restarted
# Fragmented MP4: the index comes first (empty moov) and each fragment (a keyframe, or 1 s) is
# self-describing and flushed to the OS as soon as it is complete, so a killed process leaves a
# file that plays up to its last whole fragment (a plain mp4 only gets its index at close).
FRAGMENTED_MP4 = {
    "movflags": "+frag_keyframe+empty_moov+delay_moov+default_base_moof",
    "frag_duration": "1000000",
    "flush_packets": "1",
}
_X264_LIKE = ("libx264", "libx265")
_X264_PRESETS = (
    "ultrafast",
    "superfast",
    "veryfast",
    "faster",
    "fast",
    "medium",
    "slow",
    "slower",
    "veryslow",
    "placebo",
)


def yuv_frame(image: npt.NDArray[np.uint8], size: tuple[int, int]) -> av.VideoFrame:
    """An RGB image as a yuv420p frame of ``size`` (width, height): odd edges cropped, scaled if
    the size changed since the stream started."""
    # A view, not a copy: from_ndarray copies into the frame's planes anyway.
    even = image[: image.shape[0] & ~1, : image.shape[1] & ~1]
    return av.VideoFrame.from_ndarray(even, format="rgb24").reformat(
        width=size[0], height=size[1], format="yuv420p"
    )


class VideoFileSink(Sink):
    """Writes one source's results as a fragmented mp4 (plays while written and after a crash).

    With an ``annotator`` each frame is drawn with its class map, otherwise the frame is written
    as it came. Odd widths/heights lose their last column/row (yuv420p needs even sizes); a frame
    whose size differs from the first one is scaled to the first one's size. Timestamps that do
    not increase are nudged one tick (11 µs) past the previous one rather than dropped, so a
    recording never loses a frame; one more than a second behind the previous one (a source
    whose clock restarted) continues the timeline one nominal frame later. ``threads=0`` lets
    libx264 pick its thread count; pass a small number when one machine records many streams.

    Zero frames: ``close()`` removes the file (an mp4 without a single frame plays nowhere), so
    an existing file means a playable recording. After a failed write the sink refuses further
    frames, and ``close()`` still finalises what was encoded into a playable file.
    """

    name = "video"
    delivery = Delivery.LOSSLESS

    def __init__(
        self,
        path: str | os.PathLike[str],
        annotator: MaskAnnotator | None = None,
        source_id: str | None = None,
        fps: float | None = None,
        codec: str = "libx264",
        crf: int = 23,
        preset: str = "veryfast",
        threads: int = 0,
    ) -> None:
        super().__init__(source_id)
        if fps is not None and not fps > 0:
            raise ConfigError(f"fps must be > 0, got {fps!r}")
        if not 0 <= crf <= 63:
            raise ConfigError(f"crf must be in [0, 63], got {crf!r}")
        try:
            kind = av.Codec(codec, "w").type
        except (ValueError, av.FFmpegError):
            raise ConfigError(f"unknown encoder {codec!r}") from None
        if kind != "video":
            raise ConfigError(f"encoder {codec!r} is not a video encoder ({kind})")
        if codec in _X264_LIKE and preset not in _X264_PRESETS:
            # x264 would only say "Invalid argument" at the first frame.
            raise ConfigError(f"preset must be one of {', '.join(_X264_PRESETS)}, got {preset!r}")
        if threads < 0:
            raise ConfigError(f"threads must be >= 0 (0 = automatic), got {threads!r}")
        self.path = Path(path)
        self.annotator = annotator
        self.fps = fps
        self.codec = codec
        self.crf = crf
        self.preset = preset
        self.threads = threads
        self._container: OutputContainer | None = None
        self._stream: VideoStream | None = None
        self._size: tuple[int, int] | None = None  # (width, height) fixed by the first frame
        self._origin = 0.0
        self._frame_ticks = round(1 / DEFAULT_FPS / TIME_BASE)
        self._last_pts = -1
        self._frames = 0
        self._failed = False
        self._closed = False
        self._writer_source: str | None = None

    def open(self, context: SinkContext) -> None:
        """Create the file and set up the encoder; :class:`SinkError` naming the path if not."""
        if self._container is not None or self._closed:
            raise SinkError(f"video sink for {self.path} was already opened")
        prepare_output_file(self.path, "video file")
        rate = self.fps
        if rate is None and self.source_id is not None:
            rate = context.source_fps.get(self.source_id)
        elif rate is None and len(context.source_fps) == 1:
            rate = next(iter(context.source_fps.values()))
        self._frame_ticks = round(1 / (rate or DEFAULT_FPS) / TIME_BASE)
        # The file exists and is writable now; PyAV opens it only when the first packet is muxed.
        try:
            container = av.open(
                str(self.path),
                "w",
                format="mp4",
                # Container-only: `options=` would also hand movflags to the codec, which warns.
                container_options=FRAGMENTED_MP4,
            )
            options = (
                {"crf": str(self.crf), "preset": self.preset} if self.codec in _X264_LIKE else {}
            )
            nominal = Fraction(rate or DEFAULT_FPS).limit_denominator(1001)
            stream = container.add_stream(self.codec, rate=nominal, options=options)
            assert isinstance(stream, VideoStream)  # checked in __init__
            stream.pix_fmt = "yuv420p"
            stream.time_base = TIME_BASE
            stream.codec_context.time_base = TIME_BASE
            stream.codec_context.thread_count = self.threads
        except (av.FFmpegError, ValueError, OSError) as exc:
            self.path.unlink(missing_ok=True)
            raise SinkError(
                f"cannot set up {self.codec} for video file {self.path}: {one_line(exc)}"
            ) from None
        self._container, self._stream = container, stream

    def write(self, result: SegResult) -> None:
        """Annotate (if configured), convert to yuv420p, encode and mux one result's frame."""
        container, stream = self._container, self._stream
        if container is None or stream is None or self._closed:
            raise SinkError(f"video sink for {self.path} is not open")
        if self._failed:
            raise SinkError(f"video file {self.path} failed earlier; not writing more frames")
        frame = result.frame
        if frame is None or frame.rgb is None:
            raise SinkError(f"video file {self.path} needs results that carry host (rgb) frames")
        source = frame.meta.source_id
        if self._writer_source is None:
            self._writer_source = source
        elif source != self._writer_source:
            raise SinkError(
                f"video file {self.path} records source {self._writer_source!r}, got {source!r}"
            )
        image = frame.rgb
        if self.annotator is not None:
            image = self.annotator.annotate(image, result.class_map, result.present_class_ids)
        if self._size is None:
            self._size = self._start(stream, image.shape[1], image.shape[0])
            self._origin = frame.meta.pts_seconds
        video_frame = yuv_frame(image, self._size)
        pts = round((frame.meta.pts_seconds - self._origin) / TIME_BASE)
        if pts < self._last_pts - RESTART_TICKS:
            # The source's clock restarted: continue the timeline one nominal frame later instead
            # of nudging every following frame by a tick (which would squash them together).
            pts = self._last_pts + self._frame_ticks
            self._origin = frame.meta.pts_seconds - pts * TIME_BASE
        pts = max(pts, self._last_pts + 1)
        video_frame.pts = pts
        video_frame.time_base = TIME_BASE
        try:
            container.mux(stream.encode(video_frame))
        except (av.FFmpegError, OSError, ValueError) as exc:
            self._failed = True
            self.stats.set_error(f"encode: {one_line(exc)}")
            raise SinkError(
                f"encoding into video file {self.path} failed: {one_line(exc)}"
            ) from None
        self._last_pts = pts
        self._frames += 1
        self.stats.count_delivered()

    def _start(self, stream: VideoStream, width: int, height: int) -> tuple[int, int]:
        even_w, even_h = width & ~1, height & ~1
        if even_w < 2 or even_h < 2:
            raise SinkError(
                f"video file {self.path}: frame {width}x{height} is too small to encode"
            )
        stream.width, stream.height = even_w, even_h
        return even_w, even_h

    def close(self) -> None:
        """Flush the encoder and finalise the file (removed if no frame was written); idempotent.

        Raises :class:`SinkError` if finalising fails, after releasing everything.
        """
        if self._closed:
            return
        self._closed = True
        container, stream = self._container, self._stream
        self._container = self._stream = None
        if container is None or stream is None:
            return
        errors: list[str] = []
        if self._frames:
            try:
                container.mux(stream.encode(None))
            except (av.FFmpegError, OSError, ValueError) as exc:
                errors.append(f"flush: {one_line(exc)}")
        try:
            container.close()
        except (av.FFmpegError, OSError, ValueError) as exc:
            errors.append(f"finalise: {one_line(exc)}")
        if not self._frames:
            self.path.unlink(missing_ok=True)
        if errors:
            self.stats.set_error("; ".join(errors))
            raise SinkError(f"closing video file {self.path} failed: {self.stats.last_error}")
