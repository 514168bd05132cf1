"""The engine's models: loaded once per (reference, device), each with its batching worker.

A model is reference counted by the sources that use it; the last one to leave stops its
worker's threads and releases it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from stream_pipeline.engine.batcher import Attachment, Batcher
from stream_pipeline.engine.status import WorkerStatus
from stream_pipeline.engine.threads import ManagedThread
from stream_pipeline.frames import SegResult
from stream_pipeline.stats import WorkerMeters
from stream_pipeline.worker import Thresholds, make_worker

if TYPE_CHECKING:  # importing the model loads onnxruntime: only where it is needed
    from stream_pipeline.model.segmenter import SegmentationModel

__all__ = ["ModelEntry", "ModelPool", "check_thresholds"]


@dataclass(eq=False, slots=True)
class ModelEntry:
    """A loaded model, its batcher and the batcher's two threads."""

    key: tuple[str, str]
    model: SegmentationModel
    batcher: Batcher
    threads: list[ManagedThread] = field(default_factory=list)
    users: int = 0

    def status(self) -> WorkerStatus:
        """A snapshot of the worker."""
        b = self.batcher
        return WorkerStatus(
            model_id=self.model.package.model_id,
            device=b.worker.device,
            sources=b.attached,
            frames=b.frames,
            batches=b.batches,
            mean_batch=round(b.frames / b.batches, 2) if b.batches else 0.0,
            max_batch_seen=b.max_batch_seen,
        )


class ModelPool:
    """Models by (reference, device); see the module docstring. Used on the loop only."""

    def __init__(
        self,
        loop: Callable[[], asyncio.AbstractEventLoop],
        device: str,
        default: str,
        threads: int | None,
        registry: Any,
        max_batch: int,
        max_wait_ms: float,
        dispatch: Callable[[SegResult, Attachment], None],
        ended: Callable[[Attachment], None],
        failed: Callable[[BaseException], None],
        worker: str = "auto",
    ) -> None:
        self._loop = loop
        self.worker = worker
        self.device = device
        self.default = default
        self.threads = threads
        self.registry = registry
        self.max_batch = max_batch
        self.max_wait_ms = max_wait_ms
        self._dispatch, self._ended, self._failed = dispatch, ended, failed
        self._entries: dict[tuple[str, str], ModelEntry] = {}
        # Kept when a model is released, so a scrape's counters never go back when a job ends;
        # one per (model id, device) ever loaded.
        self._meters: dict[tuple[str, str], WorkerMeters] = {}
        self._lock = asyncio.Lock()

    def entries(self) -> list[ModelEntry]:
        """The models loaded now."""
        return list(self._entries.values())

    def meters(self) -> dict[tuple[str, str], WorkerMeters]:
        """The histograms of every (model id, device) loaded since the engine started."""
        return dict(self._meters)

    async def acquire(self, model: str | SegmentationModel | None) -> ModelEntry:
        """The entry for ``model`` (default: the engine's), loading it (off the loop) if needed."""
        from stream_pipeline.model import load_model

        ref: Any = model if model is not None else self.default
        key = (ref if isinstance(ref, str) else f"object:{id(ref)}", self.device)
        async with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                loaded = ref
                if isinstance(ref, str):
                    loaded = await asyncio.to_thread(
                        load_model,
                        ref,
                        device=self.device,
                        threads=self.threads,
                        registry=self.registry,
                    )
                # One blank frame through the whole model now, off the loop: onnxruntime's first
                # run and the postprocess kernel's load (or compile) happen here, not while the
                # first frames of a live source wait and overflow its ring.
                await asyncio.to_thread(_warm, loaded)
                entry = self._start(key, loaded)
                self._entries[key] = entry
            entry.users += 1
            return entry

    def _start(self, key: tuple[str, str], model: SegmentationModel) -> ModelEntry:
        worker = make_worker(model, self.worker, batch=self.max_batch)
        meters = self._meters.setdefault((model.package.model_id, worker.device), WorkerMeters())
        batcher = Batcher(
            worker, self.max_batch, self.max_wait_ms, self._dispatch, self._ended, meters
        )
        entry = ModelEntry(key, model, batcher)
        for name, target in (("infer", batcher.run_infer), ("post", batcher.run_post)):
            thread = ManagedThread(
                f"worker-{name}-{model.package.model_id}", target, self._loop(), self._failed
            )
            entry.threads.append(thread)
            thread.start()
        return entry

    async def release(self, entry: ModelEntry) -> None:
        """One user fewer; the last one stops the worker and drops the model."""
        async with self._lock:
            entry.users -= 1
            if entry.users > 0 or self._entries.get(entry.key) is not entry:
                return
            del self._entries[entry.key]
        await self.stop(entry)

    async def stop(self, entry: ModelEntry) -> None:
        """Stop ``entry``'s threads and release its worker."""
        for thread in entry.threads:
            thread.stop.set()
        entry.batcher.doorbell.set()
        for thread in entry.threads:
            await thread.join()
        entry.batcher.worker.close()
        self._entries.pop(entry.key, None)

    async def close(self) -> None:
        """Stop every model's worker (engine shutdown)."""
        for entry in self.entries():
            await self.stop(entry)


def _warm(model: SegmentationModel) -> None:
    import numpy as np

    spec = model.package.input
    model.segment(np.zeros((spec.height, spec.width, 3), np.uint8))


def check_thresholds(model: SegmentationModel, thresholds: Thresholds) -> None:
    """Resolve the thresholds against the package now, not on the first frame (in a thread)."""
    channels = model.session.channels
    if channels is None:  # a dynamic channel axis: ask the network once with a blank frame
        import numpy as np

        spec = model.package.input
        logits, *_ = model.infer([np.zeros((spec.height, spec.width, 3), np.uint8)])
        channels = int(logits.shape[1])
    model.head(channels, thresholds.mode, thresholds.custom)
