"""NV12 / RGB preprocess on the array and in the host-compiled kernel, against PyAV and OpenCV."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest

from stream_pipeline.gpu.preprocess import (
    ColorSpec,
    Planes,
    ResizeTables,
    preprocess_fused,
    preprocess_xp,
)
from stream_pipeline.gpu.xp import backend
from stream_pipeline.model.geometry import geometry_for
from stream_pipeline.model.package import InputSpec
from stream_pipeline.model.preprocess import Preprocessor
from tests.support.media import write_video

HOST = backend("numpy", kernels="host")
RAW = {"scale": 1.0, "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0)}  # out == RGB levels


def _nv12_planes(frame: Any) -> Planes:
    nv12 = frame.to_ndarray(format="nv12")
    h = frame.height
    return Planes(nv12[:h], frame.width, h, nv12[h:], ColorSpec.of_av_frame(frame))


def _run(planes: Planes, spec: InputSpec, fused: bool) -> npt.NDArray[np.float32]:
    geo = geometry_for(planes.width, planes.height, spec)
    tables = ResizeTables.build(HOST, geo, spec)
    out = np.empty((3, spec.height, spec.width), np.float32)
    (preprocess_fused if fused else preprocess_xp)(HOST, planes, tables, spec, out)
    return out


def _random_yuv_frame(w: int, h: int, colorspace: int, color_range: int, seed: int) -> Any:
    frame = av.VideoFrame(w, h, "yuv420p")
    rng = np.random.default_rng(seed)
    for plane in frame.planes:
        plane.update(rng.integers(0, 256, plane.line_size * plane.height, np.uint8).tobytes())
    frame.colorspace, frame.color_range = colorspace, color_range
    return frame


@pytest.mark.parametrize(
    "colorspace,color_range",
    [(2, 0), (1, 0), (5, 0), (1, 2), (2, 2)],
    ids=["unspecified", "bt709", "bt601", "bt709-full", "full"],
)
@pytest.mark.parametrize("fused", [False, True], ids=["xp", "kernel"])
def test_nv12_matches_pyav_rgb(colorspace: int, color_range: int, fused: bool) -> None:
    frame = _random_yuv_frame(66, 38, colorspace, color_range, seed=colorspace * 7 + color_range)
    want = frame.to_ndarray(format="rgb24").astype(np.int32)
    spec = InputSpec(width=66, height=38, **RAW)  # type: ignore[arg-type]
    got = _run(_nv12_planes(frame), spec, fused).transpose(1, 2, 0)
    assert np.abs(got - want).max() <= 2


def test_nv12_of_a_decoded_video_matches_pyav(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", frames=4, width=160, height=96)
    spec = InputSpec(width=160, height=96, **RAW)  # type: ignore[arg-type]
    with av.open(str(video)) as container:
        for frame in container.decode(video=0):
            want = frame.to_ndarray(format="rgb24").astype(np.int32)
            for fused in (False, True):
                got = _run(_nv12_planes(frame), spec, fused).transpose(1, 2, 0)
                assert np.abs(got - want).max() <= 2


SPECS = [
    {"width": 64, "height": 48},
    {"width": 64, "height": 48, "resize": "letterbox", "padding_value": 114},
    {"width": 96, "height": 96, "resize": "letterbox", "color": "bgr"},
    {"width": 33, "height": 17, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)},
]


@pytest.mark.parametrize("frame_wh", [(160, 96), (101, 77), (64, 48), (17, 9), (200, 31)])
@pytest.mark.parametrize("spec_kw", SPECS, ids=["stretch", "letterbox", "bgr", "odd"])
def test_rgb_resize_matches_cpu_preprocessor(
    frame_wh: tuple[int, int], spec_kw: dict[str, Any]
) -> None:
    spec = InputSpec(**spec_kw)
    rng = np.random.default_rng(frame_wh[0] * 1000 + frame_wh[1])
    rgb = rng.integers(0, 256, (frame_wh[1], frame_wh[0], 3), np.uint8)
    want, _ = Preprocessor(spec)([rgb])
    planes = Planes(rgb, frame_wh[0], frame_wh[1])
    xp_out = _run(planes, spec, fused=False)
    kernel_out = _run(planes, spec, fused=True)
    # The kernel and the array path are the same arithmetic: equal to the bit.
    np.testing.assert_array_equal(kernel_out, xp_out)
    # OpenCV: exact when shrinking; a few upscaled pixels differ by one level (its SIMD tails).
    level = float(np.max(1.0 / (spec.scale * np.asarray(spec.std))))
    gap = np.abs(xp_out - want[0])
    assert gap.max() <= level * 1.0001
    if frame_wh[0] >= spec.width and frame_wh[1] >= spec.height:
        assert gap.max() < 1e-5
    else:
        assert np.mean(gap > 1e-5) < 0.05


def test_nv12_resized_is_pyav_rgb_resized_by_opencv(tmp_path: Path) -> None:
    """The NV12 path is PyAV's RGB frame pushed through the CPU preprocess: within the colour
    conversion's 2 levels plus the resize's rounding of them (1)."""
    video = write_video(tmp_path / "v.mp4", frames=2, width=160, height=96)
    spec = InputSpec(
        width=64, height=48, resize="letterbox", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)
    )
    with av.open(str(video)) as container:
        frame = next(iter(container.decode(video=0)))
        rgb = np.asarray(frame.to_ndarray(format="rgb24"), np.uint8)
        want, _ = Preprocessor(spec)([rgb])
        got = _run(_nv12_planes(frame), spec, fused=True)
    assert np.abs(got - want[0]).max() <= 3 / (255 * 0.25) + 1e-5
