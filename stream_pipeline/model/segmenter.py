"""The model as users call it: frames in, :class:`SegResult` out (CPU path)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from stream_pipeline.frames import SegResult, StageTimings
from stream_pipeline.model.package import ModelPackage
from stream_pipeline.model.postprocess import Head, postprocess_fast, postprocess_reference
from stream_pipeline.model.preprocess import Preprocessor
from stream_pipeline.model.session import OnnxSession
from stream_pipeline.model.thresholds import class_thresholds

__all__ = ["SegmentationModel"]


class SegmentationModel:
    """A loaded model package with its session, preprocessor and the block's postprocess.

    ``segment`` is for single images; the streaming worker calls ``infer`` and ``postprocess``
    separately to time and batch them.
    """

    def __init__(self, package: ModelPackage, device: str = "auto", threads: int | None = None):
        self.package = package
        self.session = OnnxSession(package, device=device, threads=threads)
        self.preprocessor = Preprocessor(package.input, package.image_steps)
        self._heads: dict[tuple[int, str, float | None], Head] = {}

    @property
    def class_names(self) -> tuple[str, ...]:
        """Class names, indexed by class id."""
        return self.package.class_names

    def head(self, channels: int, mode: str = "best", custom: float | None = None) -> Head:
        """The postprocess head for ``channels`` output channels and a confidence mode (cached)."""
        key = (channels, mode, custom)
        head = self._heads.get(key)
        if head is None:
            head = Head.for_package(
                self.package, channels, class_thresholds(self.package, mode, custom)
            )
            self._heads[key] = head
        return head

    def infer(
        self, images: Sequence[npt.NDArray[np.uint8]]
    ) -> tuple[npt.NDArray[np.float32], list[Any], float, float]:
        """Preprocess and run a batch: (logits, geometries, preprocess s, inference s)."""
        t0 = time.perf_counter()
        batch, geos = self.preprocessor(images)
        t1 = time.perf_counter()
        static = self.session.static_batch
        if static is None or static == len(images):
            logits = self.session.run(batch)
        else:  # a fixed-batch export: run in chunks, padding the last one
            parts = []
            for start in range(0, len(images), static):
                chunk = batch[start : start + static]
                n = len(chunk)
                if n < static:
                    chunk = np.concatenate(
                        [chunk, np.zeros((static - n, *chunk.shape[1:]), chunk.dtype)]
                    )
                parts.append(self.session.run(chunk)[:n])
            logits = np.concatenate(parts)
        return logits, geos, t1 - t0, time.perf_counter() - t1

    def segment_batch(
        self,
        images: Sequence[npt.NDArray[np.uint8]],
        confidence_mode: str = "best",
        custom_confidence: float | None = None,
        reference: bool = False,
    ) -> list[SegResult]:
        """Segment RGB uint8 images (H×W×3). ``reference`` uses the slow numpy postprocess."""
        head = None
        logits, geos, t_pre, t_inf = self.infer(images)
        head = self.head(logits.shape[1], confidence_mode, custom_confidence)
        post = postprocess_reference if reference else postprocess_fast
        results = []
        for lg, geo in zip(logits, geos, strict=True):
            t0 = time.perf_counter()
            class_map, conf = post(lg, geo, head)
            present = tuple(int(i) for i in np.flatnonzero(np.bincount(class_map.ravel())))
            timings = StageTimings(
                preprocess=t_pre / len(images),
                infer=t_inf / len(images),
                postprocess=time.perf_counter() - t0,
                batch_size=len(images),
            )
            results.append(
                SegResult(class_map, conf, present, inference_id=str(uuid.uuid4()), timings=timings)
            )
        return results

    def segment(
        self,
        image: npt.NDArray[np.uint8],
        confidence_mode: str = "best",
        custom_confidence: float | None = None,
    ) -> SegResult:
        """Segment one RGB uint8 image (H×W×3)."""
        return self.segment_batch([image], confidence_mode, custom_confidence)[0]
