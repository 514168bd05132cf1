"""The pipeline end to end with real decoding, a real (tiny) network and real sinks."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from stream_pipeline.consumers import CallbackSink, JsonlSink, VideoFileSink
from stream_pipeline.frames import SegResult
from stream_pipeline.model import SegmentationModel
from stream_pipeline.pipeline import Pipeline, PipelineConfig
from stream_pipeline.sources import SourceSpec
from tests.support.media import write_video

pytestmark = pytest.mark.timeout(60)


def _config(*sources: SourceSpec, **kw: object) -> PipelineConfig:
    return PipelineConfig(sources=sources, device="cpu", **kw)  # type: ignore[arg-type]


async def test_block_policy_loses_nothing(tmp_path: Path, tiny_model: SegmentationModel) -> None:
    video = write_video(tmp_path / "in.mp4", frames=45)
    out = tmp_path / "pred.jsonl"
    seen: list[int] = []

    def slow_sink(r: SegResult) -> None:
        assert r.frame is not None
        seen.append(r.frame.meta.frame_id)
        time.sleep(0.005)

    slow = CallbackSink(slow_sink)
    cfg = _config(SourceSpec(str(video), id="file", buffer_size=2))
    async with Pipeline(cfg, [JsonlSink(out), slow], model=tiny_model) as p:
        await p.run()
    lines = out.read_text().splitlines()
    assert len(lines) == 45  # frames in = result lines out
    records = [json.loads(line) for line in lines]
    assert [r["frame_id"] for r in records] == list(range(45)) == seen
    assert all(r["source_id"] == "file" and r["model_id"] == "tiny/1" for r in records)
    pts = [r["pts_seconds"] for r in records]
    assert pts == sorted(pts) and pts[1] == pytest.approx(1 / 15, abs=1e-3)
    status = p.status()
    assert status.sources[0].dropped == 0 and status.sources[0].state == "finished"


async def test_drop_oldest_bounds_depth_and_counts_drops(tiny_model: SegmentationModel) -> None:
    # A live-paced source much faster than a slow lossless sink: the ring drops, never grows.
    spec = SourceSpec(
        "synthetic://street?fps=200&frames=0&realtime=1&width=64&height=48",
        id="live",
        buffer_size=3,
    )
    depths: list[int] = []
    results: list[SegResult] = []

    def slow(result: SegResult) -> None:
        results.append(result)
        time.sleep(0.03)

    async with Pipeline(_config(spec, duration=1.5), [CallbackSink(slow)], model=tiny_model) as p:
        run = asyncio.ensure_future(p.run())
        while not run.done():
            depths.append(p.status().sources[0].buffered)
            await asyncio.sleep(0.05)
        await run
    src = p.status().sources[0]
    assert max(depths) <= 3
    assert src.dropped > 50
    assert src.frames == src.results + src.dropped + src.buffered
    assert len(results) == src.results
    # Latency stays bounded: a frame never waits behind more than the ring's few slots.
    assert max(r.timings.queue for r in results[5:]) < 0.5


async def test_batches_across_sources(tiny_model: SegmentationModel) -> None:
    specs = [
        SourceSpec(f"synthetic://street?seed={i}&frames=40&width=96&height=64", id=f"s{i}")
        for i in range(3)
    ]
    counts: dict[str, list[int]] = {}
    sizes: list[int] = []

    def record(r: SegResult) -> None:
        assert r.frame is not None
        counts.setdefault(r.frame.meta.source_id, []).append(r.frame.meta.frame_id)
        sizes.append(r.timings.batch_size)

    async with Pipeline(
        _config(*specs, max_batch=6, max_wait_ms=20), [CallbackSink(record)], model=tiny_model
    ) as p:
        await p.run()
    assert {k: v for k, v in counts.items()} == {f"s{i}": list(range(40)) for i in range(3)}
    assert max(sizes) == 6 and np.mean(sizes) > 3


async def test_results_iterator_and_max_frames(
    tmp_path: Path, tiny_model: SegmentationModel
) -> None:
    video = write_video(tmp_path / "in.mp4", frames=30)
    cfg = _config(SourceSpec(str(video), id="a", max_frames=12))
    async with Pipeline(cfg, model=tiny_model) as p:
        got = [r async for r in p.results()]
    assert [r.frame.meta.frame_id for r in got] == list(range(12))  # type: ignore[union-attr]
    assert all(r.class_map.shape == (96, 160) for r in got)


async def test_cancellation_stops_every_thread_and_finalises_video(
    tmp_path: Path, tiny_model: SegmentationModel
) -> None:
    spec = SourceSpec("synthetic://street?fps=30&frames=0&realtime=1&width=128&height=96", id="cam")
    video = tmp_path / "rec.mp4"
    pipeline = Pipeline(_config(spec), [VideoFileSink(video, source_id="cam")], model=tiny_model)

    async def job() -> None:
        async with pipeline:
            await pipeline.run()

    task = asyncio.ensure_future(job())
    await asyncio.sleep(1.5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0)
    for t in threading.enumerate():
        if t.name.startswith("sp-"):
            t.join(5)
    assert not [t for t in threading.enumerate() if t.name.startswith("sp-") and t.is_alive()]
    with av.open(str(video)) as c:  # the mp4 was finalised: it opens and decodes
        assert sum(1 for _ in c.decode(video=0)) > 10


async def test_sink_failure_is_raised_not_logged(
    tmp_path: Path, tiny_model: SegmentationModel
) -> None:
    def explode(r: SegResult) -> None:
        assert r.frame is not None
        if r.frame.meta.frame_id == 5:
            raise ValueError("sink exploded at frame 5")

    spec = SourceSpec("synthetic://street?frames=0&width=64&height=48", id="x")
    with pytest.raises(ValueError, match="sink exploded at frame 5"):
        async with Pipeline(_config(spec), [CallbackSink(explode)], model=tiny_model) as p:
            await p.run()


async def test_graceful_stop_processes_what_was_decoded(tiny_model: SegmentationModel) -> None:
    got: list[int] = []
    spec = SourceSpec("synthetic://street?frames=0&width=64&height=48", id="x")
    async with Pipeline(
        _config(spec),
        [CallbackSink(lambda r: got.append(r.frame.meta.frame_id))],  # type: ignore[union-attr]
        model=tiny_model,
    ) as p:
        run = asyncio.ensure_future(p.run())
        await asyncio.sleep(0.5)
        p.stop()
        await asyncio.wait_for(run, 10)
    assert got == list(range(len(got))) and len(got) > 5
    assert p.status().sources[0].state == "stopped"


async def test_pipeline_from_workflow(tiny_package: Path) -> None:
    from stream_pipeline.workflow import load_workflow

    workflow = load_workflow(
        {
            "version": "1.0",
            "inputs": [{"type": "WorkflowImage", "name": "image"}],
            "steps": [
                {
                    "type": "roboflow_core/roboflow_semantic_segmentation_model@v1",
                    "name": "seg",
                    "images": "$inputs.image",
                    "model_id": str(tiny_package),
                }
            ],
            "outputs": [
                {"type": "JsonField", "name": "predictions", "selector": "$steps.seg.predictions"}
            ],
        }
    )
    cfg = PipelineConfig.from_workflow(
        workflow.bind(),
        sources=(SourceSpec("synthetic://street?frames=5&width=64&height=48", id="w"),),
        device="cpu",
    )
    # A v1 step sends no confidence: Roboflow's request default 0.4 applies to every class.
    assert (cfg.confidence_mode, cfg.custom_confidence) == ("custom", 0.4)
    async with Pipeline(cfg) as p:
        got = [r async for r in p.results()]
    assert len(got) == 5 and all(r.class_map.shape == (48, 64) for r in got)


async def test_sinks_attached_after_prepare_are_fed(
    tmp_path: Path, tiny_model: SegmentationModel
) -> None:
    from stream_pipeline.errors import ConfigError

    cfg = _config(SourceSpec("synthetic://street?frames=20&width=64&height=48", id="s"))
    late = tmp_path / "late.jsonl"
    async with Pipeline(cfg, model=tiny_model) as p:
        with pytest.raises(ConfigError, match="attach_sink"):
            p.add_sink(JsonlSink(late))  # would never be opened: refused, not ignored
        await p.attach_sink(JsonlSink(late))
        await p.run()
    assert len(late.read_text().splitlines()) == 20
    sink = p.status().sinks[0]
    assert (sink.type, sink.delivered, sink.state) == ("jsonl", 20, "closed")


async def test_pipelines_share_an_engine(tiny_model: SegmentationModel) -> None:
    from stream_pipeline.engine import Engine

    async with Engine(device="cpu", max_batch=8, max_wait_ms=20) as engine:
        specs = [
            SourceSpec(f"synthetic://street?seed={i}&frames=30&width=64&height=48", id=f"p{i}")
            for i in range(2)
        ]
        jobs = [
            Pipeline(
                _config(spec, confidence_mode=mode, custom_confidence=c),
                model=tiny_model,
                engine=engine,
            )
            for spec, (mode, c) in zip(specs, (("custom", 0.9), ("default", None)), strict=True)
        ]
        async with jobs[0] as a, jobs[1] as b:
            got = await asyncio.gather(_all(a), _all(b))
        assert [len(g) for g in got] == [30, 30]
        assert max(r.timings.batch_size for g in got for r in g) > 1
        assert engine.error is None


async def _all(p: Pipeline) -> list[SegResult]:
    return [r async for r in p.results()]
