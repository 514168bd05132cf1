"""Recording in time-based segments with an index and retention, for jobs that run for weeks.

A :class:`SegmentedVideoSink` writes one source into ``directory`` as fragmented MP4 segments of
``segment_seconds`` (by the source's timestamps), each named by the UTC time of its first frame:
``20261202T024000.123Z.mp4``. The segment being written is ``<name>.mp4.part`` and is renamed when
complete, so every ``.mp4`` in the folder is a finished, playable file; a killed process leaves at
most one ``.part`` (playable up to its last fragment), which the next start renames and indexes.

``index.jsonl`` holds one JSON line per finished segment — ``{"file", "start", "end", "frames",
"bytes"}`` (ISO UTC times) — each appended in one write, so it only ever holds whole lines.
Retention (maximum age, maximum total size) deletes the oldest segments first, never the one
being written, and drops their index lines.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import av

from stream_pipeline.consumers.base import Delivery, Sink, SinkContext
from stream_pipeline.consumers.files import ensure_directory, one_line
from stream_pipeline.consumers.rotation import Retention, utc_stamp
from stream_pipeline.consumers.video import VideoFileSink
from stream_pipeline.consumers.visualize import MaskAnnotator
from stream_pipeline.errors import ConfigError, SinkError
from stream_pipeline.frames import SegResult
from stream_pipeline.model.serialize import iso_time

__all__ = ["INDEX_NAME", "SegmentedVideoSink"]

log = logging.getLogger(__name__)

INDEX_NAME = "index.jsonl"
PART = ".part"


@dataclass(slots=True)
class _Open:
    sink: VideoFileSink
    path: Path  # the final name; the sink writes to path + ".part"
    start_wall: float
    start_pts: float
    last_pts: float = 0.0


class SegmentedVideoSink(Sink):
    """Record one source as segments of ``segment_seconds`` (see the module docstring).

    ``retention`` limits what is kept; ``annotator``, ``fps``, ``codec``, ``crf``, ``preset`` and
    ``threads`` are those of :class:`~stream_pipeline.consumers.video.VideoFileSink`.
    :attr:`removed` counts the segments retention deleted.
    """

    name = "segments"
    delivery = Delivery.LOSSLESS

    def __init__(
        self,
        directory: str | os.PathLike[str],
        segment_seconds: float = 600.0,
        annotator: MaskAnnotator | None = None,
        retention: Retention | None = None,
        source_id: str | None = None,
        fps: float | None = None,
        codec: str = "libx264",
        crf: int = 23,
        preset: str = "veryfast",
        threads: int = 0,
    ) -> None:
        super().__init__(source_id)
        if not segment_seconds > 0:
            raise ConfigError(f"segment length must be > 0 s, got {segment_seconds!r}")
        self.directory = Path(directory)
        self.segment_seconds = float(segment_seconds)
        self.retention = retention or Retention()
        self.removed = 0
        self._video: dict[str, Any] = dict(
            annotator=annotator,
            source_id=source_id,
            fps=fps,
            codec=codec,
            crf=crf,
            preset=preset,
            threads=threads,
        )
        VideoFileSink(self.directory / "check.mp4", **self._video)  # settings fail here, not later
        self._context: SinkContext | None = None
        self._current: _Open | None = None
        self._closed = False

    @property
    def index_path(self) -> Path:
        """The index file."""
        return self.directory / INDEX_NAME

    def open(self, context: SinkContext) -> None:
        """Create the folder, finish what a killed run left, and apply retention."""
        if self._context is not None or self._closed:
            raise SinkError(f"segment recorder for {self.directory} was already opened")
        ensure_directory(self.directory, f"recording under {self.directory}")
        self._context = context
        for part in sorted(self.directory.glob("*.mp4" + PART)):
            self._recover(part)
        self._retain()

    def write(self, result: SegResult) -> None:
        """Encode one frame into the current segment, starting a new one when it is full."""
        if self._context is None or self._closed:
            raise SinkError(f"segment recorder for {self.directory} is not open")
        frame = result.frame
        if frame is None:
            raise SinkError(f"segment recorder for {self.directory} needs results with frames")
        pts = frame.meta.pts_seconds
        cur = self._current
        if cur is not None and not (0 <= pts - cur.start_pts < self.segment_seconds):
            # Full, or the source's clock jumped back (a restart): either way a new segment.
            self._finish(cur)
            cur = None
        if cur is None:
            cur = self._current = self._start(frame.meta.captured_at, pts)
        cur.sink.write(result)
        cur.last_pts = pts
        self.stats.count_delivered()

    def close(self) -> None:
        """Finish the current segment; idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._current is not None:
            cur, self._current = self._current, None
            self._finish(cur)

    # -- segments ----------------------------------------------------------------------------

    def _start(self, wall: float, pts: float) -> _Open:
        assert self._context is not None
        path = self.directory / f"{utc_stamp(wall)}.mp4"
        sink = VideoFileSink(Path(str(path) + PART), **self._video)
        sink.open(self._context)
        return _Open(sink, path, wall, pts, pts)

    def _finish(self, cur: _Open) -> None:
        part = cur.sink.path
        try:
            cur.sink.close()
        finally:
            if part.exists():
                frames = cur.sink.stats.delivered
                duration = cur.last_pts - cur.start_pts + self._frame_seconds()
                self._publish(part, cur.path, cur.start_wall, duration, frames)
        self._retain()

    def _frame_seconds(self) -> float:
        """One nominal frame: a segment's last frame lasts this long."""
        rates = self._context.source_fps if self._context is not None else {}
        fps = self._video["fps"] or rates.get(self.source_id or "")
        if fps is None and len(rates) == 1:
            fps = next(iter(rates.values()))
        return 1.0 / float(fps or 30.0)

    def _publish(self, part: Path, path: Path, start: float, duration: float, frames: int) -> None:
        """Rename a finished segment to its final name and append its index line."""
        try:
            os.replace(part, path)
        except OSError as exc:
            raise SinkError(f"cannot finish segment {path}: {one_line(exc)}") from None
        entry = {
            "file": path.name,
            "start": iso_time(start),
            "end": iso_time(start + duration),
            "frames": frames,
            "bytes": path.stat().st_size,
        }
        line = (json.dumps(entry, separators=(",", ":")) + "\n").encode()
        fd = os.open(self.index_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                if os.write(fd, line) != len(line):
                    raise OSError(28, "short write")
                os.fsync(fd)
            except OSError as exc:
                with contextlib.suppress(OSError):  # whole lines only
                    os.ftruncate(fd, size)
                raise SinkError(f"cannot write index {self.index_path}: {one_line(exc)}") from None
        finally:
            os.close(fd)

    def _recover(self, part: Path) -> None:
        """A segment a killed run left: index what plays of it, delete it if nothing does."""
        frames, first, last = 0, None, None
        try:
            with av.open(str(part)) as container:
                for packet in container.demux(video=0):
                    if packet.pts is None or packet.time_base is None:
                        continue
                    t = float(packet.pts * packet.time_base)
                    first = t if first is None else min(first, t)
                    last = t if last is None else max(last, t)
                    frames += 1
        except (av.FFmpegError, OSError, ValueError) as exc:
            log.info("segment %s left by an earlier run does not play (%s)", part.name, exc)
        if not frames or first is None or last is None:
            part.unlink(missing_ok=True)
            return
        path = part.with_name(part.name.removesuffix(PART))
        start = part.stat().st_mtime - (last - first)  # best guess if the name does not parse
        with contextlib.suppress(ValueError):
            start = datetime.strptime(path.stem, "%Y%m%dT%H%M%S.%f%z").timestamp()
        self._publish(part, path, start, last - first + self._frame_seconds(), frames)

    def _retain(self) -> None:
        if not self.retention.active:
            return
        live = self._current.sink.path if self._current is not None else None
        finished = sorted(self.directory.glob("*.mp4"))
        live_bytes = live.stat().st_size if live is not None and live.exists() else 0
        removed = self.retention.apply(finished, live_bytes)
        if not removed:
            return
        self.removed += len(removed)
        self.stats.set_state(f"recording; retention removed {self.removed} segment(s)")
        gone = {p.name for p in removed}
        try:
            lines = self.index_path.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return
        kept = [ln for ln in lines if json.loads(ln).get("file") not in gone]
        tmp = self.index_path.with_name(INDEX_NAME + ".tmp")
        tmp.write_text("".join(kept))
        os.replace(tmp, self.index_path)  # readers see the old index or the new one, whole
