"""The fused postprocess kernel (host-compiled CUDA C) and the array path against the CPU path."""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from stream_pipeline.gpu.postprocess import (
    DeviceHead,
    DeviceTaps,
    postprocess_fused,
    postprocess_xp,
)
from stream_pipeline.gpu.xp import backend
from stream_pipeline.model.geometry import geometry_for
from stream_pipeline.model.package import ModelPackage
from stream_pipeline.model.postprocess import Head
from stream_pipeline.model.thresholds import class_thresholds
from tests.gpu.bounds import assert_within_bounds

# The CPU path's own test packages (96×64 input, best mode: 0.3, the last class 0.7).
from tests.model.test_postprocess import _package

HOST = backend("numpy", kernels="host")


def _check(
    pkg: ModelPackage,
    channels: int,
    frame: tuple[int, int],
    mode: str = "best",
    custom: float | None = None,
    logit_hw: tuple[int, int] = (16, 24),
    scale: float = 3.0,
) -> None:
    seed = zlib.crc32(repr((pkg.class_names[:3], channels, frame, mode, custom)).encode())
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(channels, *logit_hw)) * scale).astype(np.float32)
    geo = geometry_for(frame[0], frame[1], pkg.input)
    head = Head.for_package(pkg, channels, class_thresholds(pkg, mode, custom))
    taps = DeviceTaps.build(HOST, geo, *logit_hw)
    dhead = DeviceHead.build(HOST, head)
    xp_cls, xp_conf8 = postprocess_xp(HOST, logits, taps, dhead)
    assert_within_bounds(xp_cls, xp_conf8, logits, geo, head)
    cls = np.empty((frame[1], frame[0]), head.class_dtype)
    conf8 = np.empty((frame[1], frame[0]), np.uint8)
    postprocess_fused(HOST, logits, taps, dhead, cls, conf8)
    assert_within_bounds(cls, conf8, logits, geo, head)


NAMES = ["background", "road", "vehicle", "person"]


@pytest.mark.parametrize(
    "mode,custom",
    [("best", None), ("default", None), ("custom", 0.4), ("custom", 0.0), ("custom", 1.0)],
)
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_confidence_modes_and_resize(mode: str, custom: float | None, resize: str) -> None:
    _check(_package(NAMES, resize=resize), len(NAMES), (101, 77), mode, custom)


@pytest.mark.parametrize("frame", [(1, 1), (7, 5), (48, 200), (320, 240), (13, 97)])
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_odd_sizes_up_and_down(frame: tuple[int, int], resize: str) -> None:
    # (7, 5) and (13, 97) are smaller than the logit grid along an axis: antialiased downscale
    _check(_package(NAMES, resize=resize), len(NAMES), frame)


def test_no_background_channel() -> None:
    _check(_package(NAMES), len(NAMES) - 1, (90, 70))


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_binary_head(activation: str) -> None:
    # One channel: sigmoid whatever the package says (a softmax over one channel is always 1).
    _check(_package(["background", "crack"], activation=activation), 1, (70, 50))


def test_activation_none() -> None:
    _check(_package(NAMES, activation="none"), len(NAMES), (64, 48), "custom", 0.5, scale=0.4)


def test_one_class() -> None:
    # Only background: every pixel is background whatever the logits.
    _check(_package(["background"]), 1, (33, 21), "custom", 0.2)


def test_256_classes() -> None:
    names = ["background"] + [f"c{i}" for i in range(255)]
    _check(_package(names), 256, (40, 30), "custom", 0.0, logit_hw=(8, 12), scale=8.0)


def test_257_classes_widen_the_map() -> None:
    names = ["background"] + [f"c{i}" for i in range(256)]
    _check(_package(names), 257, (20, 14), "custom", 0.0, logit_hw=(6, 8), scale=8.0)
