"""Roboflow's geometry: truncated letterbox sizes, pads rounded into logit cells, AA resize."""

from __future__ import annotations

import numpy as np
import pytest

from stream_pipeline.model.geometry import axis_taps, geometry_for, logit_window
from stream_pipeline.model.package import InputSpec
from stream_pipeline.model.preprocess import Preprocessor


def test_letterbox_sizes_and_offsets_truncate() -> None:
    spec = InputSpec(width=512, height=512, resize="letterbox")
    # 1280x719: scale 0.4, 719 * 0.4 = 287.6 -> 287 (round would give 288), pad (512-287)/2 = 112.5
    geo = geometry_for(1280, 719, spec)
    assert (geo.content_width, geo.content_height) == (512, 287)
    assert (geo.content_x, geo.content_y) == (0, 112)


def test_letterbox_pads_with_padding_value() -> None:
    spec = InputSpec(width=8, height=8, resize="letterbox", padding_value=0)
    img, geo = Preprocessor(spec).resized(np.full((2, 8, 3), 200, np.uint8))
    assert geo.content_height == 2 and img[0, 0, 0] == 0 and img[geo.content_y, 0, 0] == 200
    spec127 = InputSpec(width=8, height=8, resize="letterbox", padding_value=127)
    img, _ = Preprocessor(spec127).resized(np.full((2, 8, 3), 200, np.uint8))
    assert img[0, 0, 0] == 127


def test_pads_round_into_logit_cells_each_on_its_own() -> None:
    # input 512, logits 128 (stride 4): a pad of 112 px is 28 cells, of 113 px 28.25 -> 28.
    assert logit_window(128, 512, 112, 287) == (28, 128 - 28 - 28)
    # Python rounds halves to even: 2.5 cells -> 2, 3.5 -> 4.
    assert logit_window(128, 512, 10, 512 - 10 - 14) == (2, 128 - 2 - 4)


def test_upsampling_is_plain_bilinear_with_clamped_edges() -> None:
    index, weight = axis_taps(8, 2)
    dense = np.zeros((8, 2))
    np.add.at(dense, (np.arange(8)[:, None], index), weight)
    expected = np.clip((np.arange(8) + 0.5) / 4 - 0.5, 0, 1)
    np.testing.assert_allclose(dense[:, 1], expected, atol=1e-7)
    np.testing.assert_allclose(dense.sum(axis=1), 1.0, atol=1e-6)


def test_halving_is_the_antialiased_triangle_filter() -> None:
    # torch's antialiased bilinear at scale 2 weighs four cells 1/8, 3/8, 3/8, 1/8.
    index, weight = axis_taps(4, 8)
    dense = np.zeros((4, 8))
    np.add.at(dense, (np.arange(4)[:, None], index), weight)
    np.testing.assert_allclose(dense[1, 1:5], [1 / 8, 3 / 8, 3 / 8, 1 / 8], atol=1e-7)
    # at the border the filter is cut and renormalised
    np.testing.assert_allclose(dense[0, :3], [3 / 7, 3 / 7, 1 / 7], atol=1e-7)


@pytest.mark.parametrize("n", [1, 7, 64])
def test_same_size_is_identity(n: int) -> None:
    index, weight = axis_taps(n, n)
    dense = np.zeros((n, n))
    np.add.at(dense, (np.arange(n)[:, None], index), weight)
    np.testing.assert_allclose(dense, np.eye(n), atol=1e-7)


def test_input_resize_does_not_antialias() -> None:
    # Stripes lit at x % 4 in (1, 2), shrunk 4x: INTER_LINEAR samples between pixels 4i+1 and
    # 4i+2 (both lit) and gives 255; an antialiasing filter would average them to grey.
    lit = np.isin(np.arange(64) % 4, (1, 2))
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, lit] = 255
    img, _ = Preprocessor(InputSpec(width=16, height=16)).resized(rgb)
    assert img.shape == (16, 16, 3) and np.all(img == 255)
