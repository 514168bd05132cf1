"""Sinks that write results to files (JSONL predictions, PNG masks) or hand them to a callable.

Every file sink checks its output location in ``open()`` (so a bad path fails before any frame is
decoded) and leaves only complete records behind: whole JSONL lines, whole PNG files.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from stream_pipeline.consumers.base import Delivery, Failure, Sink, SinkContext
from stream_pipeline.consumers.rotation import Retention, utc_stamp
from stream_pipeline.errors import ConfigError, SinkError
from stream_pipeline.frames import SegResult
from stream_pipeline.model.serialize import confidence_u8, prediction_dict, raw_dict

__all__ = [
    "CallbackSink",
    "JsonlSink",
    "MasksSink",
    "ensure_directory",
    "one_line",
    "prediction_json",
    "prepare_output_file",
]


def one_line(exc: BaseException) -> str:
    """An OS/FFmpeg error as one line without the path (callers name it) or traceback text."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(str(text).split())


_ENCODED_KEEP = 64  # results kept encoded: about how far one sink may lag behind another


class _Encoding:
    """A result being encoded by one sink thread, which the others wait for."""

    __slots__ = ("data", "done")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.data: bytes | None = None


_encoded: OrderedDict[tuple[str, str, bool], bytes | _Encoding] = OrderedDict()
_encoded_lock = threading.Lock()


def prediction_json(result: SegResult, context: SinkContext, with_masks: bool = True) -> bytes:
    """The prediction object of ``result`` as compact JSON (no newline).

    Serialised once per result and shared by every sink that asks for the same form (JSONL,
    webhook, MQTT): on a small machine each extra serialisation is CPU taken from inference, and
    the outputs then also carry the same ``detection_id`` values. Sinks get a result at the same
    moment, so the first one encodes it and the others wait for that instead of racing it.
    """
    if not result.inference_id:
        return _encode(result, context, with_masks)
    key = (result.inference_id, context.model_id, with_masks)
    with _encoded_lock:
        entry = _encoded.get(key)
        if entry is None:
            entry = _encoded[key] = _Encoding()
            mine = True
        else:
            _encoded.move_to_end(key)
            mine = False
    if isinstance(entry, bytes):
        return entry
    if not mine:
        entry.done.wait()
        return entry.data if entry.data is not None else _encode(result, context, with_masks)
    try:
        entry.data = _encode(result, context, with_masks)
    finally:
        with _encoded_lock:
            if entry.data is None:
                _encoded.pop(key, None)
            else:
                _encoded[key] = entry.data
            while len(_encoded) > _ENCODED_KEEP:
                _encoded.popitem(last=False)
        entry.done.set()
    return entry.data


def _encode(result: SegResult, context: SinkContext, with_masks: bool) -> bytes:
    obj = prediction_dict(
        result, context.class_names, context.model_id, context.background_id, with_masks
    )
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def ensure_directory(directory: Path, purpose: str) -> None:
    """Create ``directory`` (and parents) if missing.

    Raises :class:`SinkError` ``cannot write <purpose>: <why>`` otherwise; ``purpose`` names the
    output (``"video file /data/rec.mp4"``), so the message says which output failed.
    """
    if directory.exists() and not directory.is_dir():
        raise SinkError(f"cannot write {purpose}: {directory} is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SinkError(
            f"cannot write {purpose}: cannot create directory {directory}: {one_line(exc)}"
        ) from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise SinkError(f"cannot write {purpose}: directory {directory} is not writable")


def prepare_output_file(path: Path, what: str) -> None:
    """Create ``path``'s parent directories and create (truncate) ``path`` to prove it writable.

    ``what`` says what the file is (``"video file"``); failures are :class:`SinkError` naming
    ``path``.
    """
    ensure_directory(path.parent, f"{what} {path}")
    try:
        with path.open("wb"):
            pass
    except OSError as exc:
        raise SinkError(f"cannot write {what} {path}: {one_line(exc)}") from None


class JsonlSink(Sink):
    """One ``semantic_segmentation_prediction`` JSON object per line (see docs/outputs.md).

    ``with_masks=False`` leaves out the ``rle_mask`` of each entry. ``record(prediction,
    result)``, when given, turns each frame's prediction object into the line written (a
    workflow run writes the record its ``outputs`` describe). ``raw=True`` adds the raw
    endpoint form (:func:`~stream_pipeline.model.serialize.raw_dict`: base64 PNG masks,
    ``class_map``, ``present_class_ids``) to the same object under the key ``"raw"``, so one line
    still describes one frame and readers of the block's format keep working.

    The file is opened for appending (a resumed job continues its file; nothing is ever
    overwritten). Each line goes to the kernel in one ``write`` of its complete bytes, unbuffered;
    if a write fails half-way (disk full) the partial line is cut off again, so the file only ever
    holds whole lines. ``close()`` fsyncs.

    Rotation: with ``rotate_bytes`` and/or ``rotate_seconds`` the file is closed and renamed to
    ``<stem>.<UTC time of the rotation>.jsonl`` (between two lines, so no line is ever torn) and a
    new file starts under ``path``. ``retention`` deletes the oldest rotated files first (room for
    the live file up to ``rotate_bytes`` is kept; it is never deleted); :attr:`removed` counts
    what it deleted.
    """

    name = "jsonl"
    delivery = Delivery.LOSSLESS

    def __init__(
        self,
        path: str | os.PathLike[str],
        with_masks: bool = True,
        raw: bool = False,
        source_id: str | None = None,
        rotate_bytes: int | None = None,
        rotate_seconds: float | None = None,
        retention: Retention | None = None,
        record: Callable[[dict[str, Any], SegResult], dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(source_id)
        self.record = record
        if rotate_bytes is not None and rotate_bytes <= 0:
            raise ConfigError(f"JSONL rotation size must be > 0 bytes, got {rotate_bytes!r}")
        if rotate_seconds is not None and not rotate_seconds > 0:
            raise ConfigError(f"JSONL rotation interval must be > 0 s, got {rotate_seconds!r}")
        self.path = Path(path)
        self.with_masks = with_masks
        self.raw = raw
        self.rotate_bytes = rotate_bytes
        self.rotate_seconds = rotate_seconds
        self.retention = retention or Retention()
        self.removed = 0
        self._started = 0.0
        self._context: SinkContext | None = None
        self._fd: int | None = None
        self._size = 0
        self._closed = False

    def open(self, context: SinkContext) -> None:
        """Create the parent directory if needed and open the file for appending."""
        if self._fd is not None or self._closed:
            raise SinkError(f"JSONL sink for {self.path} was already opened")
        if self.raw and len(context.class_names) > 256:
            raise SinkError(f"JSONL file {self.path}: the raw form holds at most 256 classes")
        ensure_directory(self.path.parent, f"JSONL file {self.path}")
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise SinkError(f"cannot open JSONL file {self.path}: {one_line(exc)}") from None
        st = os.fstat(fd)
        self._size = st.st_size
        self._fd = fd
        self._context = context
        self._started = time.time()
        if not stat.S_ISREG(st.st_mode):  # /dev/stdout, a pipe: nothing to rename
            self.rotate_bytes = self.rotate_seconds = None

    def write(self, result: SegResult) -> None:
        """Serialise ``result`` and append it as one line."""
        if self._fd is None or self._context is None:
            raise SinkError(f"JSONL sink for {self.path} is not open")
        ctx = self._context
        if self.record is not None:  # a workflow run: the record its `outputs` describe
            pred = prediction_dict(
                result, ctx.class_names, ctx.model_id, ctx.background_id, self.with_masks
            )
            obj = self.record(pred, result)
            line = (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        elif self.raw:
            obj = prediction_dict(
                result, ctx.class_names, ctx.model_id, ctx.background_id, self.with_masks
            )
            obj["raw"] = raw_dict(result, ctx.class_names)
            line = (json.dumps(obj, separators=(",", ":"), ensure_ascii=False) + "\n").encode()
        else:
            line = prediction_json(result, ctx, self.with_masks) + b"\n"
        if self._size and self._due(len(line)):
            self._rotate()
        try:
            written = os.write(self._fd, line)
            # Regular files take the whole buffer unless the disk fills or a signal lands.
            while written < len(line):
                written += os.write(self._fd, memoryview(line)[written:])
        except OSError as exc:
            self._cut_partial_line()
            self.stats.set_error(one_line(exc))
            raise SinkError(f"writing JSONL file {self.path} failed: {one_line(exc)}") from None
        self._size += len(line)
        self.stats.count_delivered()

    def _due(self, n: int) -> bool:
        if self.rotate_bytes is not None and self._size + n > self.rotate_bytes:
            return True
        return (
            self.rotate_seconds is not None and time.time() - self._started >= self.rotate_seconds
        )

    def _rotate(self) -> None:
        """Close the live file under a dated name and start a new one under :attr:`path`."""
        assert self._fd is not None
        now = time.time()
        done = self.path.with_name(f"{self.path.stem}.{utc_stamp(now)}{self.path.suffix}")
        try:
            os.fsync(self._fd)
            os.replace(self.path, done)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            self.stats.set_error(one_line(exc))
            raise SinkError(f"rotating JSONL file {self.path} failed: {one_line(exc)}") from None
        os.close(self._fd)
        self._fd, self._size, self._started = fd, 0, now
        rotated = sorted(self.path.parent.glob(f"{self.path.stem}.*Z{self.path.suffix}"))
        # Room for the live file as it will grow, so the total stays within the limit.
        self.removed += len(self.retention.apply(rotated, live_bytes=self.rotate_bytes or 0))

    def _cut_partial_line(self) -> None:
        assert self._fd is not None
        with contextlib.suppress(OSError):  # the original error is the one worth reporting
            os.ftruncate(self._fd, self._size)

    def close(self) -> None:
        """Fsync and close the file; idempotent."""
        if self._closed:
            return
        self._closed = True
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.fsync(fd)
        except OSError as exc:
            # EINVAL: the path is a pipe or device (e.g. /dev/stdout) that has nothing to sync.
            if exc.errno != errno.EINVAL:
                self.stats.set_error(one_line(exc))
                raise SinkError(f"syncing JSONL file {self.path} failed: {one_line(exc)}") from None
        finally:
            os.close(fd)


class MasksSink(Sink):
    """PNG masks per frame: ``<directory>/<source_id>/<frame_id:08d>_class.png`` and ``_conf.png``.

    The class map is saved as 8-bit greyscale (16-bit beyond 256 classes), the confidence as
    ``round(conf * 255)`` 8-bit. Each file is written under a temporary name and renamed, so a
    crash never leaves half a PNG under the final name.
    """

    name = "masks"
    delivery = Delivery.LOSSLESS

    def __init__(self, directory: str | os.PathLike[str], source_id: str | None = None) -> None:
        super().__init__(source_id)
        self.directory = Path(directory)
        self._made: set[str] = set()
        self._opened = False

    def open(self, context: SinkContext) -> None:
        """Create the output directory (and parents) if needed."""
        ensure_directory(self.directory, f"masks under {self.directory}")
        self._opened = True

    def write(self, result: SegResult) -> None:
        """Write the two PNGs of one result (its frame names the source and frame id)."""
        if not self._opened:
            raise SinkError(f"masks sink for {self.directory} is not open")
        frame = result.frame
        if frame is None:
            raise SinkError(f"masks sink for {self.directory} needs results that carry a frame")
        source = frame.meta.source_id
        if not source or source in (".", "..") or "/" in source or os.sep in source:
            raise SinkError(f"source id {source!r} cannot name a directory under {self.directory}")
        folder = self.directory / source
        if source not in self._made:
            ensure_directory(folder, f"masks under {folder}")
            self._made.add(source)
        stem = folder / f"{frame.meta.frame_id:08d}"
        class_map = result.class_map
        # Beyond 256 classes the map is uint16 and so is the PNG (Pillow's mode I;16).
        ids = class_map if class_map.dtype == np.uint8 else class_map.astype(np.uint16)
        self._save(ids, Path(f"{stem}_class.png"))
        self._save(confidence_u8(result.confidence), Path(f"{stem}_conf.png"))
        self.stats.count_delivered()

    def _save(self, image: npt.NDArray[np.integer[Any]], path: Path) -> None:
        tmp = path.with_name(path.name + ".tmp")
        try:
            Image.fromarray(image).save(tmp, format="PNG", compress_level=1)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            self.stats.set_error(one_line(exc))
            raise SinkError(f"writing mask {path} failed: {one_line(exc)}") from None

    def close(self) -> None:
        """Nothing is held open between frames; idempotent."""
        self._opened = False


class CallbackSink(Sink):
    """Calls ``fn(result)`` for each result, in order, from the sink's thread.

    ``delivery`` is ``lossless`` by default; ``lossless=False`` is shorthand for ``latest`` (a
    preview-style sink that gets only the newest result). An exception from ``fn`` propagates
    unchanged (it is the caller's code, not an output failure); with ``failure="best_effort"`` it
    stops only this sink.
    """

    name = "callback"

    def __init__(
        self,
        fn: Callable[[SegResult], None],
        lossless: bool = True,
        source_id: str | None = None,
        delivery: Delivery | str | None = None,
        failure: Failure | str = Failure.CRITICAL,
    ) -> None:
        super().__init__(source_id)
        self.fn = fn
        if delivery is None:
            delivery = Delivery.LOSSLESS if lossless else Delivery.LATEST
        self.delivery = Delivery.parse(delivery)
        self.failure = Failure(failure)

    def open(self, context: SinkContext) -> None:
        """Nothing to prepare."""

    def write(self, result: SegResult) -> None:
        """Hand ``result`` to the callable."""
        self.fn(result)
        self.stats.count_delivered()

    def close(self) -> None:
        """Nothing to release."""
