"""Real results for sink tests: synthetic frames segmented by a real (tiny) network."""

from __future__ import annotations

import dataclasses

from stream_pipeline.consumers.base import SinkContext
from stream_pipeline.frames import Frame, FrameMeta, SegResult
from stream_pipeline.model import SegmentationModel
from tests.consumers.synthetic import gradient


def context_for(model: SegmentationModel, job_id: str = "job") -> SinkContext:
    """The context the runtime would give sinks of ``model``."""
    return SinkContext(
        model_id=model.package.model_id,
        class_names=model.class_names,
        background_id=model.package.background_id,
        colors=model.package.colors,
        source_fps={"cam-1": 30.0},
        job_id=job_id,
    )


def real_results(
    model: SegmentationModel,
    frames: range,
    source_id: str = "cam-1",
    height: int = 48,
    width: int = 64,
    fps: float = 30.0,
) -> list[SegResult]:
    """One result per frame id, each carrying its host frame and a fresh inference id."""
    images = [gradient(height, width, i) for i in frames]
    out = []
    for i, image, result in zip(frames, images, model.segment_batch(images), strict=True):
        meta = FrameMeta(source_id, i, i / fps, 1_700_000_000.0 + i / fps, float(i), width, height)
        out.append(dataclasses.replace(result, frame=Frame(meta, rgb=image)))
    return out
