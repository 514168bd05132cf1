"""The fused postprocess agrees with the numpy reference on random logits."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

from stream_pipeline.model import postprocess
from stream_pipeline.model.geometry import geometry_for
from stream_pipeline.model.package import InputSpec, ModelPackage, Recommended
from stream_pipeline.model.postprocess import Head, postprocess_fast, postprocess_reference
from stream_pipeline.model.thresholds import class_thresholds


def _package(
    names: list[str], activation: str = "softmax", resize: str = "stretch"
) -> ModelPackage:
    return ModelPackage(
        model_id="t/1",
        onnx_path=Path("unused.onnx"),
        class_names=tuple(names),
        input=InputSpec(width=96, height=64, resize=resize),  # type: ignore[arg-type]
        activation=activation,  # type: ignore[arg-type]
        default_confidence=0.5,
        recommended=Recommended(0.3, {names[-1]: 0.7}),
    )


def _compare(
    pkg: ModelPackage,
    channels: int,
    mode: str,
    frame: tuple[int, int],
    seed: int,
    custom: float | None = None,
    scale: float = 3.0,
) -> None:
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(channels, 16, 24)) * scale).astype(np.float32)
    geo = geometry_for(frame[0], frame[1], pkg.input)
    head = Head.for_package(pkg, channels, class_thresholds(pkg, mode, custom))
    ref_cls, ref_conf = postprocess_reference(logits, geo, head)
    fast_cls, fast_conf = postprocess_fast(logits, geo, head)
    assert fast_cls.shape == (frame[1], frame[0]) and fast_cls.dtype == head.class_dtype
    # Class maps equal except where float32 vs float64 rounding flips a near-tie or a threshold.
    mismatch = fast_cls != ref_cls
    assert mismatch.mean() < 1e-3, f"{mismatch.sum()} pixels differ"
    agree = ~mismatch
    assert np.abs(fast_conf[agree] - ref_conf[agree]).max() < 1e-5
    # Sub-threshold pixels are background with confidence 0, in both.
    assert np.all(ref_conf[ref_cls == pkg.background_id] >= 0)
    assert np.all((ref_conf == 0) | (ref_conf >= head.thresholds[ref_cls] - 1e-12))


NAMES = ["background", "road", "vehicle", "person"]


@pytest.mark.parametrize(
    "mode,custom",
    [("best", None), ("default", None), ("custom", 0.4), ("custom", 0.0), ("custom", 1.0)],
)
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
@pytest.mark.parametrize("frame", [(320, 240), (101, 77), (48, 200)])
def test_fast_matches_reference_softmax(
    mode: str, custom: float | None, resize: str, frame: tuple[int, int]
) -> None:
    _compare(
        _package(NAMES, resize=resize),
        len(NAMES),
        mode,
        frame,
        seed=zlib.crc32(repr((mode, custom, resize, frame)).encode()),
        custom=custom,
    )


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_no_background_channel_skips_background_slot(resize: str) -> None:
    names = ["road", "background", "car"]
    pkg = _package(names, resize=resize)
    _compare(pkg, 2, "best", (150, 90), seed=3)
    head = Head.for_package(pkg, 2, class_thresholds(pkg, "custom", 0.0))
    logits = np.zeros((2, 4, 4), np.float32)
    logits[1] = 5.0  # channel 1 wins everywhere -> class id 2 ("car"), never background
    cls, _ = postprocess_reference(logits, geometry_for(8, 8, pkg.input), head)
    assert np.all(cls == 2)


@pytest.mark.parametrize("mode,custom", [("best", None), ("custom", 0.5), ("custom", 0.9)])
def test_binary_head_sigmoid(mode: str, custom: float | None) -> None:
    pkg = _package(["background", "crack"])
    _compare(pkg, 1, mode, (130, 70), seed=5, custom=custom)
    head = Head.for_package(pkg, 1, class_thresholds(pkg, "custom", 0.5))
    assert head.activation == "sigmoid"
    logits = np.array([[[-2.0, 2.0]]], np.float32)  # (1, 1, 2)
    cls, conf = postprocess_reference(logits, geometry_for(2, 1, pkg.input), head)
    assert cls.tolist() == [[0, 1]]
    assert conf[0, 0] == 0.0 and conf[0, 1] == pytest.approx(1 / (1 + np.exp(-2.0)), rel=1e-6)


def test_sigmoid_multiclass_and_none_activation() -> None:
    _compare(_package(NAMES, activation="sigmoid"), 4, "best", (77, 55), seed=7)
    _compare(
        _package(NAMES, activation="none"), 4, "custom", (77, 55), seed=8, custom=0.2, scale=0.5
    )


def test_256_classes_fit_uint8_and_257_do_not() -> None:
    names = ["background"] + [f"c{i}" for i in range(255)]
    pkg = _package(names)
    _compare(pkg, 256, "custom", (60, 40), seed=10, custom=0.01, scale=8.0)
    head = Head.for_package(pkg, 256, class_thresholds(pkg, "custom", 0.0))
    assert head.class_dtype == np.uint8
    names257 = [*names, "extra"]
    assert (
        Head.for_package(
            _package(names257), 257, class_thresholds(_package(names257), "default")
        ).class_dtype
        == np.uint16
    )


def test_bilinear_matches_half_pixel_convention() -> None:
    # A 2-pixel ramp upsampled ×4 with half-pixel centres: edges clamp, the middle interpolates.
    pkg = _package(["background", "a"], activation="none")
    pkg = ModelPackage(
        **{
            **{f: getattr(pkg, f) for f in pkg.__dataclass_fields__},
            "input": InputSpec(width=2, height=1),
        }
    )
    head = Head.for_package(pkg, 2, class_thresholds(pkg, "custom", 0.0))
    logits = np.zeros((2, 1, 2), np.float32)
    logits[1] = [[0.0, 1.0]]  # channel "a" ramps 0 → 1 and always beats background's -1
    logits[0] = -1.0
    _, conf = postprocess_reference(logits, geometry_for(8, 1, pkg.input), head)
    expected = np.clip((np.arange(8) + 0.5) / 4 - 0.5, 0, 1)
    np.testing.assert_allclose(conf[0], expected, atol=1e-7)


def test_nan_logits_stay_in_bounds() -> None:
    # A broken network must not make the kernel read outside its tables.
    pkg = _package(NAMES)
    head = Head.for_package(pkg, 4, class_thresholds(pkg, "custom", 0.0))
    logits = np.full((4, 6, 8), np.nan, np.float32)
    logits[1, :3] = 1.0
    cls, conf = postprocess_fast(logits, geometry_for(32, 24, pkg.input), head)
    assert cls.shape == (24, 32) and conf.shape == (24, 32)


@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_banded_kernel_matches_reference(resize: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Many classes × fine logits × a wide frame are processed in bands of frame rows, so the
    # kernel's row buffer stays bounded; the bands must meet without a seam.
    monkeypatch.setattr(postprocess, "_HOR_BYTES", 4 * 4 * 300 * 3)  # 3 logit rows per band
    _compare(_package(NAMES, resize=resize), 4, "best", (300, 170), seed=11)
    _compare(_package(NAMES, resize=resize), 4, "custom", (300, 31), seed=12, custom=0.4)
