"""The worker protocol and the CPU worker.

A :class:`BatchWorker` turns a batch of frames into :class:`SegResult`\\ s in two steps, each run
by one thread of the engine's batcher so that consecutive batches overlap:

- :meth:`BatchWorker.start` (thread 1): preprocess and run the network on a batch of
  :class:`WorkItem`\\ s (frames of any sources and jobs that use this worker's model);
- :meth:`BatchWorker.finish` (thread 2): postprocess each frame with its own source's thresholds.

Where results come to the host: every :class:`SegResult` that ``finish`` returns carries its
``class_map`` and ``confidence`` as host (numpy) arrays, and its frame's pixels on the host when
the item's :class:`HostNeeds` asks for them (an overlay or an encoder is attached). A worker
chosen by device (:func:`make_worker`) keeps everything else where it is: the CPU worker is on the
host already; the CUDA worker brings down only what was asked for. Sinks never see device memory.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from stream_pipeline.frames import Frame, SegResult, StageTimings
from stream_pipeline.model.segmenter import SegmentationModel

__all__ = ["BatchWorker", "CpuWorker", "HostNeeds", "Thresholds", "WorkItem", "make_worker"]


@dataclass(frozen=True, slots=True)
class Thresholds:
    """The block's thresholds of one source's attachment: a confidence mode and its value."""

    mode: str = "best"
    custom: float | None = None


@dataclass(frozen=True, slots=True)
class HostNeeds:
    """What the consumers of a source need on the host besides the class map and confidence."""

    pixels: bool = True


@dataclass(frozen=True, slots=True)
class WorkItem:
    """One frame to segment, with its attachment's thresholds and host needs."""

    frame: Frame
    thresholds: Thresholds
    needs: HostNeeds = HostNeeds()


class BatchWorker(Protocol):
    """Frames in, results out (see module docstring). Each method is called from one thread."""

    device: str
    model: SegmentationModel

    def start(self, items: Sequence[WorkItem], picked: float) -> Any:
        """Preprocess and infer ``items`` (picked from the rings at ``picked``, monotonic)."""

    def finish(self, pending: Any) -> list[SegResult]:
        """Postprocess what :meth:`start` returned: one result per item, in order."""

    def close(self) -> None:
        """Release device resources (idempotent)."""


@dataclass(slots=True)
class _Pending:
    items: Sequence[WorkItem]
    logits: Any
    geos: list[Any]
    picked: float
    preprocess: float
    infer: float


class CpuWorker:
    """The CPU worker: onnxruntime on host arrays and the fused numba postprocess."""

    device = "cpu"

    def __init__(self, model: SegmentationModel) -> None:
        self.model = model

    def start(self, items: Sequence[WorkItem], picked: float) -> _Pending:
        """Preprocess and run the network on the batch."""
        images = [item.frame.rgb for item in items]
        if any(image is None for image in images):
            # A device frame must never reach a host-only step: say so instead of crashing in it.
            from stream_pipeline.errors import EngineError

            raise EngineError("a frame with device pixels reached the CPU worker")
        logits, geos, t_pre, t_inf = self.model.infer(images)  # type: ignore[arg-type]
        return _Pending(items, logits, geos, picked, t_pre, t_inf)

    def finish(self, pending: _Pending) -> list[SegResult]:
        """Postprocess each frame with its own thresholds."""
        from stream_pipeline.model.postprocess import postprocess_fast

        model = self.model
        channels = pending.logits.shape[1]
        n_classes = len(model.class_names)
        size = len(pending.items)
        results = []
        for item, logits, geo in zip(pending.items, pending.logits, pending.geos, strict=True):
            t0 = time.perf_counter()
            head = model.head(channels, item.thresholds.mode, item.thresholds.custom)
            class_map, conf = postprocess_fast(logits, geo, head)
            counts = np.bincount(class_map.ravel(), minlength=n_classes)
            present = tuple(int(i) for i in np.flatnonzero(counts))
            frame = item.frame
            timings = StageTimings(
                queue=pending.picked - frame.meta.arrival_monotonic,
                preprocess=pending.preprocess,
                infer=pending.infer,
                postprocess=time.perf_counter() - t0,
                batch_size=size,
            )
            results.append(SegResult(class_map, conf, present, frame, str(uuid.uuid4()), timings))
        return results

    def close(self) -> None:
        """Nothing held beyond the model (the engine releases it)."""


def make_worker(
    model: SegmentationModel, kind: str = "auto", batch: int | None = None
) -> BatchWorker:
    """The worker for the device ``model``'s session runs on.

    ``auto``: the CUDA worker (:class:`stream_pipeline.gpu.worker.CudaWorker` on CuPy) when the
    session runs on CUDA, CuPy sees a device and the package has no ``image_pre_processing``
    steps (those run on the host, in the CPU worker); else the CPU worker. ``cpu`` and ``cuda``
    force one. ``xp-cpu`` and ``xp-host-kernels`` run the CUDA worker's code with numpy on the
    host (array path, or its kernels compiled for the host): the explicit hooks that let CI
    check the device path against the CPU worker. ``batch``: the CUDA worker's bound batch (the
    engine's ``max_batch``; default 4).
    """
    from stream_pipeline.errors import ConfigError

    kinds = ("auto", "cpu", "cuda", "xp-cpu", "xp-host-kernels")
    if kind not in kinds:
        raise ConfigError(f"worker kind must be one of {', '.join(kinds)}, got {kind!r}")
    if kind == "cpu" or (kind == "auto" and model.session.device != "cuda"):
        return CpuWorker(model)
    # Imported here: a CPU session never loads the device path.
    from stream_pipeline.gpu.worker import DEFAULT_BATCH, CudaWorker
    from stream_pipeline.gpu.xp import backend, cupy_available
    from stream_pipeline.model.package import ImageSteps

    size = batch or DEFAULT_BATCH
    if kind == "xp-cpu":
        return CudaWorker(model, backend("numpy"), batch=size)
    if kind == "xp-host-kernels":
        return CudaWorker(model, backend("numpy", kernels="host"), batch=size)
    plain = model.package.image_steps == ImageSteps()
    if kind == "cuda":
        if not cupy_available():
            raise ConfigError(
                "worker 'cuda' needs CuPy and a CUDA device (pip install 'stream_pipeline[gpu]')"
            )
        if not plain:
            raise ConfigError("the CUDA worker does not run image_pre_processing steps")
        return CudaWorker(model, backend("cupy"), batch=size)
    if plain and cupy_available():
        return CudaWorker(model, backend("cupy"), batch=size)
    return CpuWorker(model)
