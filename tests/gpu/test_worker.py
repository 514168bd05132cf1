"""The device worker's code (numpy backend) end to end against the CPU worker.

The same video goes through the engine twice, once per worker; the JSONL lines must agree: same
frames, and per frame the class maps decoded from the RLE masks equal except where the top two
probabilities are within 1e-4, each class's confidence within 1/255 and its box equal when its
mask is. NV12 frames (what NVDEC hands over) go through the worker directly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import av
import numpy as np
import numpy.typing as npt
import pytest
from pycocotools import mask as coco_mask

import stream_pipeline.engine  # noqa: F401  (its modules import make_worker by name)
from stream_pipeline import worker as worker_module
from stream_pipeline.consumers import JsonlSink
from stream_pipeline.frames import Frame, FrameMeta
from stream_pipeline.gpu.decode import planes_of_av_frame
from stream_pipeline.gpu.xp import backend
from stream_pipeline.model import SegmentationModel, load_model
from stream_pipeline.pipeline import Pipeline, PipelineConfig
from stream_pipeline.sources import SourceSpec
from stream_pipeline.worker import CpuWorker, HostNeeds, Thresholds, WorkItem, make_worker
from tests.conftest import STREET_CLASSES
from tests.gpu.bounds import ambiguous
from tests.support.media import write_video
from tests.support.onnx_models import write_package

pytestmark = pytest.mark.timeout(120)


def _decoded(video: Path) -> list[Any]:
    with av.open(str(video)) as container:
        return list(container.decode(video=0))


def _class_map(record: dict[str, Any], background: int) -> npt.NDArray[np.int64]:
    image = record["predictions"]["image"]
    out = np.full((image["height"], image["width"]), background, np.int64)
    for entry in record["predictions"]["predictions"]:
        rle = {"size": entry["rle_mask"]["size"], "counts": entry["rle_mask"]["counts"].encode()}
        out[coco_mask.decode(rle).astype(bool)] = entry["class_id"]
    return out


def _assert_same_jsonl(
    got: list[dict[str, Any]], want: list[dict[str, Any]], model: SegmentationModel,
    frames: list[Any], mode: str, custom: float | None,
) -> None:  # fmt: skip
    assert [r["frame_id"] for r in got] == [r["frame_id"] for r in want] == list(range(len(frames)))
    bg = model.package.background_id
    for g, w, frame in zip(got, want, frames, strict=True):
        assert (g["pts_seconds"], g["source_id"], g["predictions"]["image"]) == (
            w["pts_seconds"], w["source_id"], w["predictions"]["image"],
        )  # fmt: skip
        logits, geos, _, _ = model.infer([frame.to_ndarray(format="rgb24")])
        head = model.head(logits.shape[1], mode, custom)
        loose = ambiguous(logits[0], geos[0], head)
        differ = _class_map(g, bg) != _class_map(w, bg)
        assert not np.any(differ & ~loose), f"frame {g['frame_id']}: {int(differ.sum())} differ"
        ge = {e["class_id"]: e for e in g["predictions"]["predictions"]}
        we = {e["class_id"]: e for e in w["predictions"]["predictions"]}
        if not differ.any():
            assert ge.keys() == we.keys()
        for cid in ge.keys() & we.keys():
            assert abs(ge[cid]["confidence"] - we[cid]["confidence"]) <= 1 / 255
            if not differ.any():
                box = ("x", "y", "width", "height")
                assert [ge[cid][k] for k in box] == [we[cid][k] for k in box]


async def _jsonl(
    video: Path,
    model: SegmentationModel,
    out: Path,
    mode: str,
    custom: float | None,
    worker: str = "auto",
) -> tuple[list[dict[str, Any]], list[str]]:
    cfg = PipelineConfig(
        sources=(SourceSpec(str(video), id="cam"),),
        device="cpu",
        confidence_mode=mode,
        custom_confidence=custom,
        max_batch=3,  # partial batches at the end of the file, padded in the bound buffers
        worker=worker,
    )
    async with Pipeline(cfg, [JsonlSink(out)], model=model) as p:
        await p.run()
    return _records(out), [w.device for w in p.status().workers]


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize(
    "kind,mode,custom",
    [("xp-cpu", "best", None), ("xp-cpu", "custom", 0.6), ("xp-host-kernels", "default", None)],
)
async def test_same_jsonl_as_the_cpu_worker(
    tmp_path: Path,
    tiny_model: SegmentationModel,
    kind: str,
    mode: str,
    custom: float | None,
) -> None:
    video = write_video(tmp_path / "in.mp4", frames=10, width=160, height=96)
    want, cpu = await _jsonl(video, tiny_model, tmp_path / "cpu.jsonl", mode, custom, "cpu")
    got, chosen = await _jsonl(video, tiny_model, tmp_path / "xp.jsonl", mode, custom, kind)
    assert cpu == ["cpu"] and chosen == ["xp-cpu"]
    _assert_same_jsonl(got, want, tiny_model, _decoded(video), mode, custom)


def _items(frames: list[Any], nv12: bool, thresholds: Thresholds) -> list[WorkItem]:
    items = []
    for i, vf in enumerate(frames):
        meta = FrameMeta("cam", i, float(vf.time or 0.0), 0.0, 0.0, vf.width, vf.height)
        frame = (
            Frame(meta, device=planes_of_av_frame(vf, backend("numpy")))
            if nv12
            else Frame(meta, rgb=vf.to_ndarray(format="rgb24"))
        )
        items.append(WorkItem(frame, thresholds, HostNeeds(pixels=True)))
    return items


@pytest.mark.parametrize(
    "meta,net",
    [
        ({"input": {"width": 64, "height": 64, "resize": "letterbox", "padding_value": 114,
                    "color": "bgr", "scale": 255.0, "mean": [0.5] * 3, "std": [0.25] * 3}}, {}),
        ({}, {"batch": 2}),  # a static-batch export: the bound batch is the network's
        ({}, {"channels": 6}),  # no background channel
    ],
    ids=["letterbox-bgr", "static-batch", "no-background-channel"],
)  # fmt: skip
def test_worker_matches_cpu_worker_on_rgb_frames(
    tmp_path: Path, meta: dict[str, Any], net: dict[str, Any]
) -> None:
    pkg = write_package(tmp_path / "pkg", STREET_CLASSES, meta=meta, **net)
    device = _compare_with_cpu_worker(load_model(str(pkg), device="cpu", threads=1), tmp_path)
    device.close()
    device.close()  # idempotent


def _compare_with_cpu_worker(model: SegmentationModel, tmp_path: Path) -> Any:
    """RGB frames of a video through both workers: within the bounds. Returns the device one."""
    frames = _decoded(write_video(tmp_path / "v.mp4", frames=5, width=150, height=90))
    items = _items(frames, nv12=False, thresholds=Thresholds("best"))
    want = CpuWorker(model).finish(CpuWorker(model).start(items, 0.0))
    device = make_worker(model, kind="xp-host-kernels")
    got = device.finish(device.start(items, 0.0))
    for g, w, item in zip(got, want, items, strict=True):
        assert item.frame.rgb is not None
        logits, geos, _, _ = model.infer([item.frame.rgb])
        loose = ambiguous(logits[0], geos[0], model.head(logits.shape[1]))
        assert not np.any((g.class_map != w.class_map) & ~loose)
        same = g.class_map == w.class_map
        gap = np.abs(g.confidence - w.confidence)[same]
        assert gap.max() <= 1 / 255 + 1e-7
        assert g.present_class_ids == tuple(int(k) for k in np.unique(g.class_map))
    return device


def test_nv12_frames_through_the_worker(tmp_path: Path, tiny_model: SegmentationModel) -> None:
    """NV12 planes (a decoder's own output) give what PyAV's RGB frames give, up to the
    colour conversion's ≤ 2 levels: nearly every pixel, and the host pixels when asked."""
    frames = _decoded(write_video(tmp_path / "v.mp4", frames=4, width=160, height=96))
    th = Thresholds("best")
    for kind in ("xp-cpu", "xp-host-kernels"):
        device = make_worker(tiny_model, kind=kind)
        got = device.finish(device.start(_items(frames, nv12=True, thresholds=th), 0.0))
        want = device.finish(device.start(_items(frames, nv12=False, thresholds=th), 0.0))
        for g, w, vf in zip(got, want, frames, strict=True):
            assert np.mean(g.class_map != w.class_map) < 0.02
            assert g.frame is not None and g.frame.rgb is not None  # pixels came to the host
            ref = vf.to_ndarray(format="rgb24").astype(np.int32)
            assert np.abs(g.frame.rgb.astype(np.int32) - ref).max() <= 2


def test_make_worker_choices(tiny_model: SegmentationModel) -> None:
    assert make_worker(tiny_model).device == "cpu"  # a CPU session: the CPU worker
    assert make_worker(tiny_model, kind="xp-cpu").device == "xp-cpu"
    # the bound batch follows the engine's max_batch when given
    assert make_worker(tiny_model, kind="xp-cpu", batch=2).session.batch == 2  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="worker kind must be one of"):
        make_worker(tiny_model, kind="tpu")
    assert worker_module.make_worker is make_worker


def test_a_dropped_batch_gives_its_slot_back(tmp_path: Path, tiny_model: SegmentationModel) -> None:
    """Batches started but never finished (an engine's hard stop drops them) free their slots:
    a later batch still runs instead of waiting forever."""
    frames = _decoded(write_video(tmp_path / "v.mp4", frames=1, width=64, height=48))
    items = _items(frames, nv12=False, thresholds=Thresholds("best"))
    device = make_worker(tiny_model, kind="xp-cpu")
    for _ in range(5):  # more than the worker's slots
        device.start(items, 0.0)
    results = device.finish(device.start(items, 0.0))
    assert [r.frame.meta.frame_id for r in results if r.frame] == [0]


def _fp16_package(directory: Path) -> Path:
    """The tiny package with an fp16 network (fp16 in, fp16 logits out; fp32 inside, so the CPU
    execution provider runs it)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    write_package(directory, STREET_CLASSES)
    net = onnx.load(str(directory / "model.onnx"))
    g = net.graph
    nodes = [
        helper.make_node("Cast", ["images16"], ["images"], to=TensorProto.FLOAT),
        *g.node,
        helper.make_node("Cast", [g.node[-1].output[0]], ["logits16"], to=TensorProto.FLOAT16),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny16",
        [helper.make_tensor_value_info("images16", TensorProto.FLOAT16, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits16", TensorProto.FLOAT16, None)],
        initializer=[
            numpy_helper.from_array(numpy_helper.to_array(t), t.name) for t in g.initializer
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(directory / "model.onnx"))
    return directory


def test_fp16_network(tmp_path: Path) -> None:
    """An fp16 network gets its bound input in fp16 and its fp16 logits are read back: the
    results are the CPU worker's, within the bounds."""
    model = load_model(str(_fp16_package(tmp_path / "pkg")), device="cpu", threads=1)
    assert model.session.input_dtype == np.float16
    device = _compare_with_cpu_worker(model, tmp_path)
    assert device.session.input.dtype == np.float16


def test_unknown_device_pixels_are_a_worded_error_and_free_the_slot(
    tmp_path: Path, tiny_model: SegmentationModel
) -> None:
    frames = _decoded(write_video(tmp_path / "v.mp4", frames=1, width=64, height=48))
    items = _items(frames, nv12=False, thresholds=Thresholds("best"))
    bad = WorkItem(Frame(items[0].frame.meta, device=object()), Thresholds("best"))
    device = make_worker(tiny_model, kind="xp-cpu")
    for _ in range(4):  # more than the worker's slots: each failure gave its slot back
        with pytest.raises(TypeError, match=r"device pixels must be gpu\.preprocess\.Planes"):
            device.start([bad], 0.0)
    assert len(device.finish(device.start(items, 0.0))) == 1
