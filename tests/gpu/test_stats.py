"""Per-class statistics and the overlay on the array equal the CPU serialiser's and annotator's."""

from __future__ import annotations

import numpy as np
import pytest

from stream_pipeline.consumers.visualize import MaskAnnotator, build_palette
from stream_pipeline.gpu.stats import class_statistics_xp, overlay_xp
from stream_pipeline.gpu.xp import backend
from stream_pipeline.model.serialize import class_statistics

HOST = backend("numpy")


@pytest.mark.parametrize("n_classes,shape", [(7, (48, 64)), (256, (31, 17)), (1, (5, 3))])
def test_statistics_match_the_serialiser(n_classes: int, shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(n_classes)
    # Blocks of classes with some absent ones, as a segmentation looks.
    present = rng.choice(n_classes, size=min(n_classes, 4), replace=False)
    class_map = present[rng.integers(0, len(present), shape)].astype(np.uint8)
    conf8 = rng.integers(0, 256, shape, dtype=np.uint8)
    want = class_statistics(class_map, conf8, n_classes)
    got = class_statistics_xp(HOST, class_map, conf8, n_classes)
    for w, g in zip(want, got, strict=True):
        np.testing.assert_array_equal(g, w)


def test_overlay_matches_the_annotator() -> None:
    names = ["background", "road", "vehicle", "person"]
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (40, 70, 3), dtype=np.uint8)
    class_map = rng.integers(0, 5, (40, 70)).astype(np.uint8)  # 4: not a class of the palette
    palette = build_palette(names)
    want = MaskAnnotator(palette, opacity=0.4, background_id=0).annotate(rgb, class_map)
    alpha = np.full(len(names), round(0.4 * 256), np.int32)
    alpha[0] = 0
    got = overlay_xp(HOST, rgb, class_map, palette, alpha)
    np.testing.assert_array_equal(got, want)
