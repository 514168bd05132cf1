"""The device path on a real GPU: CuPy kernels vs the host path, NVDEC, IO binding on CUDA.

Marked ``gpu``; each skips with the reason where there is no CUDA device, no CuPy or no CUDA
build of onnxruntime. ``scripts/bench_gpu.py`` runs them first on a lent machine.
"""

from __future__ import annotations

import zlib
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from stream_pipeline.gpu.binding import BindOptions
from stream_pipeline.gpu.decode import open_nvdec, planes_of_av_frame
from stream_pipeline.gpu.postprocess import DeviceHead, DeviceTaps, postprocess_fused
from stream_pipeline.gpu.preprocess import Planes, ResizeTables, preprocess_fused
from stream_pipeline.gpu.worker import CudaWorker
from stream_pipeline.gpu.xp import backend, cupy_available
from stream_pipeline.model import SegmentationModel
from stream_pipeline.model.geometry import geometry_for
from stream_pipeline.model.package import InputSpec
from stream_pipeline.model.postprocess import Head
from stream_pipeline.model.thresholds import class_thresholds
from stream_pipeline.worker import CpuWorker, HostNeeds, Thresholds, WorkItem
from tests.gpu.bounds import ambiguous, assert_within_bounds
from tests.model.test_postprocess import _package
from tests.support.media import write_video

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not cupy_available(), reason="needs CuPy and a CUDA device"),
]

HOST = backend("numpy", kernels="host")


def _cuda_ort() -> None:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (the CUDA execution provider)")


@pytest.mark.parametrize("channels,frame", [(19, (640, 360)), (4, (101, 77)), (1, (64, 48))])
@pytest.mark.parametrize("resize", ["stretch", "letterbox"])
def test_cuda_postprocess_equals_the_host_kernel(
    channels: int, frame: tuple[int, int], resize: str
) -> None:
    names = ["background", *[f"c{i}" for i in range(max(channels, 2) - 1)]]
    pkg = _package(names, resize=resize)
    cuda = backend("cupy")
    rng = np.random.default_rng(zlib.crc32(repr((channels, frame, resize)).encode()))
    logits = (rng.normal(size=(channels, 16, 24)) * 3).astype(np.float32)
    geo = geometry_for(*frame, pkg.input)
    head = Head.for_package(pkg, channels, class_thresholds(pkg, "best", None))
    shape = (frame[1], frame[0])
    maps = []
    for be in (HOST, cuda):
        cls = be.xp.empty(shape, head.class_dtype)
        conf8 = be.xp.empty(shape, np.uint8)
        postprocess_fused(
            be, be.to_device(logits), DeviceTaps.build(be, geo, 16, 24),
            DeviceHead.build(be, head), cls, conf8,
        )  # fmt: skip
        maps.append((be.to_host(cls), be.to_host(conf8)))
    assert_within_bounds(*maps[1], logits, geo, head)
    # Same source, two compilers: FMA contraction on the GPU is the only difference.
    loose = ambiguous(logits, geo, head)
    assert not np.any((maps[0][0] != maps[1][0]) & ~loose)


def test_cuda_preprocess_equals_the_host_kernel(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", frames=2, width=320, height=180)
    spec = InputSpec(width=128, height=96, resize="letterbox", padding_value=114)
    cuda = backend("cupy")
    with av.open(str(video)) as container:
        vf = next(iter(container.decode(video=0)))
    outs = []
    for be in (HOST, cuda):
        planes = planes_of_av_frame(vf, be)
        tables = ResizeTables.build(be, geometry_for(320, 180, spec), spec)
        out = be.xp.empty((3, 96, 128), np.float32)
        preprocess_fused(be, planes, tables, spec, out)
        outs.append(be.to_host(out))
    # FMA may move the float colour conversion across a truncation: at most one level.
    level = float(np.max(1.0 / (spec.scale * np.asarray(spec.std))))
    assert np.abs(outs[0] - outs[1]).max() <= level * 1.0001


def _items(model: SegmentationModel, frames: list[Any], nv12: bool) -> list[WorkItem]:
    from stream_pipeline.frames import Frame, FrameMeta

    items = []
    for i, vf in enumerate(frames):
        meta = FrameMeta("cam", i, 0.0, 0.0, 0.0, vf.width, vf.height)
        frame = (
            Frame(meta, device=planes_of_av_frame(vf, backend("cupy")))
            if nv12
            else Frame(meta, rgb=vf.to_ndarray(format="rgb24"))
        )
        items.append(WorkItem(frame, Thresholds("best"), HostNeeds(pixels=False)))
    return items


def test_cuda_worker_matches_the_cpu_worker(tmp_path: Path, tiny_package: Path) -> None:
    _cuda_ort()
    from stream_pipeline.model import load_model

    model = load_model(str(tiny_package), device="cuda", threads=1)
    frames = []
    with av.open(str(write_video(tmp_path / "v.mp4", frames=6, width=160, height=96))) as c:
        frames = list(c.decode(video=0))
    items = _items(model, frames, nv12=False)
    want = CpuWorker(model).finish(CpuWorker(model).start(items, 0.0))
    worker = CudaWorker(model, backend("cupy"), batch=4)
    got = worker.finish(worker.start(items, 0.0))
    for g, w in zip(got, want, strict=True):
        # GPU convolutions round differently from MLAS: near-ties only.
        assert np.mean(g.class_map != w.class_map) < 0.01
    nv12 = worker.finish(worker.start(_items(model, frames, nv12=True), 0.0))
    for g, w in zip(nv12, want, strict=True):
        assert np.mean(g.class_map != w.class_map) < 0.02
    worker.close()


def test_cuda_graph_replays_on_a_static_export(tmp_path: Path) -> None:
    _cuda_ort()
    from stream_pipeline.model import load_model
    from tests.conftest import STREET_CLASSES
    from tests.support.onnx_models import write_package

    pkg = write_package(tmp_path / "pkg", STREET_CLASSES, batch=2, in_hw=(48, 64))
    model = load_model(str(pkg), device="cuda", threads=1)
    worker = CudaWorker(model, backend("cupy"), options=BindOptions(cuda_graph=True))
    frames = [np.full((96, 160, 3), v, np.uint8) for v in (10, 200, 90)]
    from stream_pipeline.frames import Frame, FrameMeta

    items = [
        WorkItem(Frame(FrameMeta("c", i, 0, 0, 0, 160, 96), rgb=f), Thresholds("best"))
        for i, f in enumerate(frames)
    ]
    first = worker.finish(worker.start(items, 0.0))
    again = worker.finish(worker.start(items, 0.0))  # replayed graph: the same answer
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a.class_map, b.class_map)
    worker.close()


def test_nvdec_frames_stay_on_the_device(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.mp4", frames=3, width=320, height=180)
    with av.open(str(video)) as c:
        soft = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    cuda = backend("cupy")
    seen = 0
    for vf, rgb in zip(open_nvdec(str(video)), soft, strict=False):
        if vf.format.name != "cuda":
            pytest.skip(f"NVDEC gave {vf.format.name} frames (no hardware decoder here)")
        planes = planes_of_av_frame(vf, cuda)
        assert isinstance(planes, Planes) and planes.nv12
        spec = InputSpec(width=320, height=180, scale=1.0, mean=(0, 0, 0), std=(1, 1, 1))
        tables = ResizeTables.build(cuda, geometry_for(320, 180, spec), spec)
        out = cuda.xp.empty((3, 180, 320), np.float32)
        preprocess_fused(cuda, planes, tables, spec, out)
        got = cuda.to_host(out).transpose(1, 2, 0)
        assert np.abs(got - rgb).max() <= 3  # NVDEC's NV12 vs libavcodec's: the same bits + 1
        seen += 1
    assert seen == 3
