"""Mask overlay: exact integer blend per class, background untouched, input unchanged, legend."""

from __future__ import annotations

import numpy as np
import pytest

from stream_pipeline.consumers.visualize import DEFAULT_COLORS, MaskAnnotator, build_palette
from stream_pipeline.errors import ConfigError
from tests.consumers.synthetic import NAMES, class_map, gradient


def _expected(rgb: np.ndarray, ids: np.ndarray, palette: np.ndarray, opacity: float) -> np.ndarray:
    a = round(opacity * 256)
    blend = (rgb.astype(np.int32) * (256 - a) + palette[ids].astype(np.int32) * a) >> 8
    return np.where((ids == 0)[..., None], rgb, blend).astype(np.uint8)


@pytest.mark.parametrize("opacity", [0.0, 0.35, 0.5, 1.0])
def test_overlay_is_the_integer_blend_and_leaves_background_and_input_alone(opacity: float) -> None:
    rgb = gradient(97, 131, 3)
    ids = class_map(97, 131, 3)
    before = rgb.copy()
    annotator = MaskAnnotator.for_classes(NAMES, opacity=opacity)
    out = annotator.annotate(rgb, ids)
    np.testing.assert_array_equal(rgb, before)
    assert out is not rgb and out.dtype == np.uint8 and out.shape == rgb.shape
    np.testing.assert_array_equal(out, _expected(rgb, ids, annotator.palette, opacity))
    np.testing.assert_array_equal(out[ids == 0], rgb[ids == 0])
    if opacity == 1.0:
        np.testing.assert_array_equal(
            out[ids == 2], np.broadcast_to(annotator.palette[2], (int((ids == 2).sum()), 3))
        )


def test_uint16_maps_non_contiguous_frames_and_ids_beyond_the_palette() -> None:
    rgb = np.asfortranarray(gradient(40, 50))
    ids = class_map(40, 50).astype(np.uint16)
    ids[0, :10] = 700  # not a class of this palette: left as it is
    annotator = MaskAnnotator(build_palette(NAMES), opacity=0.5)
    out = annotator.annotate(rgb, ids)
    np.testing.assert_array_equal(out[0, :10], rgb[0, :10])
    inside = ids < 4
    np.testing.assert_array_equal(
        out[inside], _expected(rgb, np.where(inside, ids, 0), annotator.palette, 0.5)[inside]
    )


def test_background_none_colours_every_class() -> None:
    rgb = gradient(20, 30)
    ids = class_map(20, 30)
    palette = build_palette(NAMES, {"background": "#102030"}, background_id=None)
    out = MaskAnnotator(palette, opacity=1.0, background_id=None).annotate(rgb, ids)
    assert (out[ids == 0] == [0x10, 0x20, 0x30]).all()


def test_legend_draws_in_the_corner_only_when_enabled() -> None:
    rgb = gradient(360, 640)
    ids = class_map(360, 640)
    plain = MaskAnnotator.for_classes(NAMES).annotate(rgb, ids)
    legend = MaskAnnotator.for_classes(NAMES, legend=True)
    with_legend = legend.annotate(rgb, ids)
    changed = np.argwhere((with_legend != plain).any(axis=2))
    assert len(changed) > 100
    assert changed[:, 0].max() < 120 and changed[:, 1].max() < 200  # top-left corner
    # The swatch of each present class shows its palette colour.
    for cid in (1, 2, 3):
        assert (with_legend == legend.palette[cid]).all(axis=2).sum() >= 25
    # Same result when the present ids come from the SegResult instead of a pass over the map.
    np.testing.assert_array_equal(legend.annotate(rgb, ids, (0, 1, 2, 3)), with_legend)
    # Only background present: nothing to list, nothing drawn.
    empty = np.zeros_like(ids)
    np.testing.assert_array_equal(legend.annotate(rgb, empty), rgb)


def test_palette_uses_model_colors_then_a_fixed_default() -> None:
    names = ["background", *(f"c{i}" for i in range(30))]
    palette = build_palette(names, {"c3": "#808080", "unknown": "#ffffff"}, background_id=0)
    assert palette.shape == (31, 3) and palette.dtype == np.uint8
    assert palette[0].tolist() == [0, 0, 0]
    assert palette[4].tolist() == [128, 128, 128]
    np.testing.assert_array_equal(palette, build_palette(names, {"c3": "#808080"}, 0))
    assert palette[1].tolist() == [int(DEFAULT_COLORS[0][i : i + 2], 16) for i in (1, 3, 5)]
    defaults = [tuple(p) for i, p in enumerate(palette[1:21].tolist()) if i != 3]
    assert len(set(defaults)) == len(defaults)  # the first 20 classes are all distinct
    assert palette[1 + len(DEFAULT_COLORS)].tolist() == palette[1].tolist()  # cycles
    with pytest.raises(ConfigError, match="c1"):
        build_palette(names, {"c1": "red"})


@pytest.mark.parametrize("opacity", [-0.1, 1.5, float("nan")])
def test_opacity_is_validated(opacity: float) -> None:
    with pytest.raises(ConfigError, match="opacity"):
        MaskAnnotator(build_palette(NAMES), opacity=opacity)


def test_shape_mismatch_is_a_value_error() -> None:
    annotator = MaskAnnotator(build_palette(NAMES))
    with pytest.raises(ValueError, match="class_map"):
        annotator.annotate(gradient(10, 10), np.zeros((10, 11), np.uint8))
