"""The device worker: the :class:`~stream_pipeline.worker.BatchWorker` of the GPU path.

``start`` (gather thread, its own stream): each frame — NV12 planes on the device, or host RGB
uploaded once through a pinned slot — is preprocessed by one kernel straight into the bound input
of the network; ONNX Runtime runs on that stream through IO binding; the logits are copied into
the batch's slot and an event is recorded. ``finish`` (postprocess thread, a second stream) waits
for that event, runs the fused postprocess per frame with its source's thresholds into device
maps, and brings down only the class map, the confidence and the class counts (and the pixels
when the consumers asked), queued into page-locked memory and waited for once per batch. Slots
(three: one being filled, one in the batcher's hand-off ring, one being finished) let
consecutive batches overlap without sharing a buffer.

With ``Backend("numpy")`` the same code runs on the host — the array path by default, or the
host-compiled kernels — which is how CI checks it against the CPU worker.
"""

from __future__ import annotations

import threading
import time
import uuid
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from stream_pipeline.frames import Frame, SegResult, StageTimings
from stream_pipeline.gpu.binding import BindOptions, BoundSession
from stream_pipeline.gpu.postprocess import (
    DeviceHead,
    DeviceTaps,
    postprocess_fused,
    postprocess_xp,
)
from stream_pipeline.gpu.preprocess import (
    Planes,
    ResizeTables,
    nv12_to_rgb_xp,
    preprocess_fused,
    preprocess_xp,
)
from stream_pipeline.gpu.xp import Backend
from stream_pipeline.model.geometry import Geometry, geometry_for
from stream_pipeline.model.segmenter import SegmentationModel

__all__ = ["DEFAULT_BATCH", "CudaWorker"]

_SLOTS = 3
DEFAULT_BATCH = 4  # the engine's default max_batch


@dataclass(slots=True)
class _Slot:
    logits: Any  # (B, C, h, w) float32, this batch's copy of the bound output
    event: Any = None


@dataclass(slots=True, weakref_slot=True)
class _Pending:
    items: Sequence[Any]
    slot: _Slot
    planes: list[Planes]
    geos: list[Geometry]
    picked: float
    preprocess: float
    infer: float
    release: Any = None  # returns the slot: when finished, or when the batch is dropped unseen


class CudaWorker:
    """Frames → results on an array backend (CuPy on CUDA; numpy on the host for checks).

    ``batch`` is the bound batch (a static-batch export fixes it): bigger batches from the
    engine run in chunks, smaller ones are padded — so it should be the engine's ``max_batch``
    (:data:`DEFAULT_BATCH` matches its default).
    """

    def __init__(
        self,
        model: SegmentationModel,
        be: Backend,
        batch: int = DEFAULT_BATCH,
        options: BindOptions | None = None,
    ) -> None:
        self.model = model
        self.be = be
        self.device = "cuda" if be.on_device else "xp-cpu"
        self._infer_stream = be.stream()
        self._post_stream = be.stream()
        self.session = BoundSession(
            be, model.package, batch, options or BindOptions(), self._infer_stream
        )
        xp = be.xp
        s = self.session
        # The kernels write float32; an fp16 network gets a converting copy into its input.
        self._stage = (
            s.input if s.input_dtype == np.float32 else xp.empty(s.input.shape, np.float32)
        )
        self._slots = [_Slot(xp.empty(s.output.shape, np.float32)) for _ in range(_SLOTS)]
        self._free = list(self._slots)
        self._slot_ready = threading.Condition()
        self._tables: dict[tuple[int, int], ResizeTables] = {}
        self._taps: dict[tuple[int, int, int, int], DeviceTaps] = {}
        self._heads: dict[tuple[int, str, float | None], DeviceHead] = {}
        self._pinned: dict[tuple[int, ...], Any] = {}
        self._out: dict[tuple[int, int, int, str], tuple[Any, Any]] = {}
        self._closed = False

    # -- gather thread ------------------------------------------------------------------------

    def _planes(self, frame: Frame, index: int) -> Planes:
        if isinstance(frame.device, Planes):
            return frame.device
        rgb = frame.rgb
        if rgb is None:
            raise TypeError(
                f"source {frame.meta.source_id}: device pixels must be gpu.preprocess.Planes "
                f"(NV12 planes), got {type(frame.device).__name__}"
            )
        if not self.be.on_device:
            return Planes(rgb, rgb.shape[1], rgb.shape[0])
        # Host pixels cross PCIe once, uint8, from a page-locked slot (an async copy). One slot
        # per batch position: the network's run on this stream ends after every upload is done.
        key = (index, *rgb.shape[:2])
        pinned = self._pinned.get(key)
        if pinned is None:
            pinned = self._pinned[key] = self.be.pinned(rgb.shape, np.uint8)
        np.copyto(pinned, rgb)
        return Planes(self.be.xp.asarray(pinned), rgb.shape[1], rgb.shape[0])

    def _table(self, width: int, height: int) -> ResizeTables:
        tables = self._tables.get((width, height))
        if tables is None:
            geo = geometry_for(width, height, self.model.package.input)
            tables = ResizeTables.build(self.be, geo, self.model.package.input)
            self._tables[(width, height)] = tables
        return tables

    def _take_slot(self) -> _Slot:
        with self._slot_ready:
            while not self._free:
                self._slot_ready.wait()
            return self._free.pop()

    def start(self, items: Sequence[Any], picked: float) -> list[_Pending]:
        """Preprocess and infer ``items``, in chunks of the bound batch size."""
        b = self.session.batch
        return [self._start(items[i : i + b], picked) for i in range(0, len(items), b)]

    def _start(self, items: Sequence[Any], picked: float) -> _Pending:
        slot = self._take_slot()
        try:
            return self._run(items, picked, slot)
        except BaseException:
            self._give_back(slot)  # a failed batch (the engine stops) must not keep its slot
            raise

    def _run(self, items: Sequence[Any], picked: float, slot: _Slot) -> _Pending:
        be, s = self.be, self.session
        spec = self.model.package.input
        t0 = time.perf_counter()
        planes, geos = [], []
        with be.on(self._infer_stream):
            for i, item in enumerate(items):
                p = self._planes(item.frame, i)
                tables = self._table(p.width, p.height)
                run = preprocess_fused if be.kernels else preprocess_xp
                run(be, p, tables, spec, self._stage[i])
                planes.append(p)
                geos.append(tables.geo)
            if len(items) < s.batch:
                self._stage[len(items) :] = 0  # padding rows of a partial batch
            if self._stage is not s.input:
                s.input[...] = self._stage
            t1 = time.perf_counter()
            s.run()
            slot.logits[...] = s.output
            slot.event = be.record(self._infer_stream)
            # Uploads from the pinned slots are asynchronous: they must be done before the next
            # batch refills those slots (ONNX Runtime has waited for its own work already).
            be.synchronize(self._infer_stream)
        pending = _Pending(items, slot, planes, geos, picked, t1 - t0, time.perf_counter() - t1)
        # A batch the engine drops without finishing it (a hard stop) still gives its slot back
        # when it is collected, so the next start never waits for a slot nobody will free.
        pending.release = weakref.finalize(pending, self._give_back, slot)
        return pending

    def _give_back(self, slot: _Slot) -> None:
        with self._slot_ready:
            self._free.append(slot)
            self._slot_ready.notify()

    # -- postprocess thread -------------------------------------------------------------------

    def _head(self, channels: int, mode: str, custom: float | None) -> tuple[Any, DeviceHead]:
        head = self.model.head(channels, mode, custom)
        key = (channels, mode, custom)
        dev = self._heads.get(key)
        if dev is None:
            dev = self._heads[key] = DeviceHead.build(self.be, head)
        return head, dev

    def _taps_for(self, geo: Geometry, lh: int, lw: int) -> DeviceTaps:
        key = (geo.frame_width, geo.frame_height, lh, lw)
        taps = self._taps.get(key)
        if taps is None:
            taps = self._taps[key] = DeviceTaps.build(self.be, geo, lh, lw)
        return taps

    def finish(self, pending: list[_Pending]) -> list[SegResult]:
        """Postprocess each frame with its own thresholds; one result per item, in order."""
        out: list[SegResult] = []
        for part in pending:
            try:
                out.extend(self._finish(part))
            finally:
                part.release()
        return out

    def _maps(self, index: int, height: int, width: int, dtype: Any) -> tuple[Any, Any]:
        """Preallocated device maps for batch position ``index`` (reused: the downloads of a
        batch end before the next batch is postprocessed)."""
        key = (index, height, width, np.dtype(dtype).str)
        maps = self._out.get(key)
        if maps is None:
            xp = self.be.xp
            maps = xp.empty((height, width), dtype), xp.empty((height, width), xp.uint8)
            self._out[key] = maps
        return maps

    def _finish(self, pending: _Pending) -> list[SegResult]:
        be = self.be
        xp = be.xp
        n_classes = len(self.model.class_names)
        _, channels, lh, lw = pending.slot.logits.shape
        t0 = time.perf_counter()
        host: list[tuple[Any, Any, Any, Any]] = []
        with be.on(self._post_stream):
            be.wait(self._post_stream, pending.slot.event)
            for i, item in enumerate(pending.items):
                geo = pending.geos[i]
                head, dhead = self._head(channels, item.thresholds.mode, item.thresholds.custom)
                taps = self._taps_for(geo, lh, lw)
                logits = pending.slot.logits[i]
                if be.kernels:
                    cls, conf8 = self._maps(i, geo.frame_height, geo.frame_width, head.class_dtype)
                    postprocess_fused(be, logits, taps, dhead, cls, conf8)
                else:
                    cls, conf8 = postprocess_xp(be, logits, taps, dhead)
                # uint8(conf × 255) / 255 serialises back to the same uint8 (all 256 values);
                # made on the device so the host thread converts nothing.
                conf = conf8.astype(xp.float32) / xp.float32(255.0)
                counts = xp.bincount(cls.ravel().astype(xp.int64), minlength=n_classes)
                rgb = None
                if item.needs.pixels and not item.frame.on_host:
                    rgb = be.download(nv12_to_rgb_xp(be, pending.planes[i]))
                host.append((be.download(cls), be.download(conf), be.download(counts), rgb))
            be.synchronize(self._post_stream)  # every download of the batch, once
        per_frame = (time.perf_counter() - t0) / max(1, len(pending.items))
        results = []
        for item, (class_map, conf, counts, rgb) in zip(pending.items, host, strict=True):
            frame = item.frame if rgb is None else Frame(item.frame.meta, rgb=rgb)
            timings = StageTimings(
                queue=pending.picked - frame.meta.arrival_monotonic,
                preprocess=pending.preprocess,
                infer=pending.infer,
                postprocess=per_frame,
                batch_size=len(pending.items),
            )
            present = tuple(int(k) for k in np.flatnonzero(counts))
            results.append(SegResult(class_map, conf, present, frame, str(uuid.uuid4()), timings))
        return results

    def close(self) -> None:
        """Drop the device buffers and the session (idempotent)."""
        if self._closed:
            return
        self._closed = True
        self._slots.clear()
        self._tables.clear()
        self._taps.clear()
        self._pinned.clear()
        self._out.clear()
