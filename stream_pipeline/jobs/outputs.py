"""A job's sinks, built from its spec, and how a resumed file job avoids writing a frame twice.

Resume rule (the one place it lives): a file source decodes again from its first frame, and each
sink skips the frames of that source it already has. :class:`ResumeSink` wraps every sink of a
job and skips a file source's frames whose id is ≤ the last one the sink took (ids of a file
source only grow within a run). On a restart of the service the starting point is read back
from what is durable: for a JSONL sink its file's last complete line per source
(:func:`jsonl_checkpoints`, which also cuts a torn last line off); for the other sinks the
checkpoint the supervisor stored (at most about a second old: those sinks may repeat that much,
as at-least-once sinks may anyway). Live sources are never skipped: their ids start again at 0
when they reconnect after a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stream_pipeline.config import expand_env
from stream_pipeline.consumers.base import Sink, SinkContext
from stream_pipeline.frames import SegResult
from stream_pipeline.jobs.spec import (
    JsonlSinkSpec,
    MqttSinkSpec,
    SinkSpec,
    VideoSinkSpec,
    WebhookSinkSpec,
    resolve_output,
)

if TYPE_CHECKING:
    from stream_pipeline.workflow.definition import BoundWorkflow

__all__ = ["ResumeSink", "build_sink", "jsonl_checkpoints", "workflow_jsonl_record"]

_BLOCK = 1 << 20
DRAIN_TIMEOUT = 10.0  # a job's remote sinks drain this long on stop; the rest stays spooled


class ResumeSink(Sink):
    """Wraps a sink: limits it to ``only`` (one source id, or all) and skips what it has.

    The engine feeds it every result of the job (so it outlives a paused job's removed sources);
    ``skip`` is the last frame id per source the inner sink holds, from a checkpoint.
    """

    def __init__(self, inner: Sink, key: str, only: str | None, skip: dict[str, int]) -> None:
        super().__init__(None)
        self.inner = inner
        self.key = key
        self.only = only
        self.name = inner.name
        self.delivery = inner.delivery
        self.failure = inner.failure
        self.stats = inner.stats
        self.file_sources: frozenset[str] = frozenset()  # replaced whole, read by the sink thread
        self._last = dict(skip)
        self._lock = threading.Lock()

    def open(self, context: SinkContext) -> None:
        """Open the inner sink."""
        self.inner.open(context)

    def write(self, result: SegResult) -> None:
        """Pass ``result`` on unless it is another source's or a frame the sink already has."""
        frame = result.frame
        assert frame is not None
        sid, fid = frame.meta.source_id, frame.meta.frame_id
        if self.only is not None and sid != self.only:
            return
        if sid in self.file_sources:
            last = self._last.get(sid)
            if last is not None and fid <= last:
                return
        self.inner.write(result)
        with self._lock:
            self._last[sid] = fid

    def checkpoint(self) -> dict[str, int]:
        """The last frame id per source the inner sink took."""
        with self._lock:
            return dict(self._last)

    def close(self) -> None:
        """Close the inner sink."""
        self.inner.close()


def jsonl_checkpoints(path: Path, wanted: Iterable[str]) -> dict[str, int]:
    """The ``frame_id`` of the last complete line of each ``wanted`` source in a JSONL file.

    A last line without its newline (a torn write) is cut off first, so the sink appends after
    whole lines only. Reads backwards, stopping once every wanted source was seen.
    """
    want = set(wanted)
    found: dict[str, int] = {}
    if not path.is_file():
        return found
    with path.open("r+b") as f:
        size = f.seek(0, os.SEEK_END)
        end = _last_newline(f, size)
        if end < size:
            f.truncate(end)
        pos, tail = end, b""
        while pos > 0 and not want <= found.keys():
            n = min(_BLOCK, pos)
            pos -= n
            f.seek(pos)
            lines = (f.read(n) + tail).split(b"\n")
            tail = lines.pop(0) if pos > 0 else b""
            # ``tail`` (the part line before this block) is read with the next block, never
            # alone: once every source is found it is left, as it is only part of a line.
            for line in reversed(lines):
                _note(line, found)
    return {k: v for k, v in found.items() if k in want}


def _last_newline(f: object, size: int) -> int:
    """The offset just after the file's last newline (0 when there is none)."""
    import io

    assert isinstance(f, io.BufferedRandom)
    pos = size
    while pos > 0:
        n = min(_BLOCK, pos)
        pos -= n
        f.seek(pos)
        i = f.read(n).rfind(b"\n")
        if i >= 0:
            return pos + i + 1
    return 0


def _note(line: bytes, found: dict[str, int]) -> None:
    if not line.strip():
        return
    obj = json.loads(line)
    sid = obj.get("source_id")
    if isinstance(sid, str) and sid not in found:
        found[sid] = int(obj["frame_id"])


def workflow_jsonl_record(
    workflow: BoundWorkflow,
) -> Callable[[dict[str, Any], SegResult], dict[str, Any]]:
    """The JSONL record maker of a workflow job: the frame's origin, then the workflow's
    ``outputs`` by name, as ``stream-pipeline run --workflow`` writes them (image outputs are
    left out, as there without ``--workflow-images``)."""
    from stream_pipeline.workflow.outputs import workflow_record

    def record(prediction: dict[str, Any], result: SegResult) -> dict[str, Any]:
        return workflow_record(workflow, prediction)

    return record


def build_sink(
    index: int,
    spec: SinkSpec,
    output_dir: Path,
    spool_dir: Path,
    job_id: str,
    annotator: object | None,
    workflow: BoundWorkflow | None = None,
) -> tuple[Sink, Path | None]:
    """The sink of ``spec`` (and its JSONL path, for checkpoints); raises ``ConfigError``.

    With the job's ``workflow``, a JSONL sink writes the workflow's outputs by name.
    """
    field = f"sinks.{index}.path"
    if isinstance(spec, JsonlSinkSpec):
        from stream_pipeline.consumers.files import JsonlSink

        path = resolve_output(output_dir, spec.path, field)
        record = workflow_jsonl_record(workflow) if workflow is not None else None
        return JsonlSink(path, with_masks=spec.with_masks, record=record), path
    if isinstance(spec, VideoSinkSpec):
        from stream_pipeline.consumers.rotation import Retention
        from stream_pipeline.consumers.segments import SegmentedVideoSink
        from stream_pipeline.consumers.visualize import MaskAnnotator

        assert annotator is None or isinstance(annotator, MaskAnnotator)
        retention = Retention(spec.retention_max_age, spec.retention_max_bytes)
        path = resolve_output(output_dir, spec.path, field)
        return SegmentedVideoSink(path, spec.segment_seconds, annotator, retention), None
    # A remote sink's spool is per job and sink, so two jobs never share (or steal) a backlog.
    spool = spool_dir / f"{job_id}-{index}-{hashlib.sha256(spec.url.encode()).hexdigest()[:8]}"
    url = expand_env(spec.url)
    if isinstance(spec, WebhookSinkSpec):
        from stream_pipeline.consumers.webhook import WebhookSink

        secret = expand_env(spec.secret) if spec.secret else None
        return WebhookSink(
            url, spool, secret=secret, max_batch=spec.max_batch, timeout=spec.timeout,
            drain_timeout=DRAIN_TIMEOUT, payload=spec.payload, with_masks=spec.with_masks,
        ), None  # fmt: skip
    assert isinstance(spec, MqttSinkSpec)
    from stream_pipeline.consumers.mqtt import MqttSink

    return MqttSink(
        url, spool, qos=spec.qos, protocol=spec.protocol, drain_timeout=DRAIN_TIMEOUT,
        payload=spec.payload, with_masks=spec.with_masks,
    ), None  # fmt: skip
