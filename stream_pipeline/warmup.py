"""Compile the numba kernels ahead, so that the first run after an install starts at once.

    python -m stream_pipeline.warmup

numba caches compiled kernels (``cache=True``) next to their modules, or under the user's cache
directory (``~/.cache/numba``, or ``$NUMBA_CACHE_DIR``) when the package directory is read-only.
Without this step the first ``stream-pipeline run`` spends about five seconds compiling before
its first result. It runs the shipped model once through every kernel with the types the
runtime uses: the fused postprocess, the per-class statistics of the prediction JSON, the
overlay.
"""

from __future__ import annotations

import time

__all__ = ["warm_up"]


def warm_up() -> float:
    """Run every kernel once; returns the seconds it took (≈ 0 when already cached)."""
    import numpy as np

    from stream_pipeline.consumers.visualize import MaskAnnotator
    from stream_pipeline.model import load_model
    from stream_pipeline.model.serialize import prediction_dict

    started = time.perf_counter()
    model = load_model("default", device="cpu", threads=1)
    spec = model.package.input
    rgb = np.zeros((spec.height, spec.width, 3), np.uint8)
    result = model.segment(rgb)
    package = model.package
    prediction_dict(result, model.class_names, package.model_id, package.background_id)
    annotator = MaskAnnotator.for_classes(model.class_names, package.colors, package.background_id)
    annotator.annotate(rgb, result.class_map, result.present_class_ids)
    return time.perf_counter() - started


if __name__ == "__main__":
    print(f"numba kernels ready ({warm_up():.1f} s)")
