"""WHIP ingest from an aiortc peer, watched back through WHEP by another aiortc peer."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from stream_pipeline.consumers import CallbackSink
from stream_pipeline.consumers.visualize import MaskAnnotator
from stream_pipeline.engine import Engine
from stream_pipeline.frames import SegResult
from stream_pipeline.model import SegmentationModel
from stream_pipeline.model.serialize import prediction_dict
from stream_pipeline.server import ServerSettings
from tests.support.webrtc import StillTrack, WhepClient, WhipClient, serve_app, until

pytestmark = pytest.mark.timeout(60)

CANDIDATES = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 40), (200, 60, 200),
              (60, 210, 210), (250, 250, 250), (20, 20, 20), (140, 90, 30)]  # fmt: skip


def two_class_scene(model: SegmentationModel) -> tuple[np.ndarray, tuple[int, int]]:
    """A 640×360 picture of two flat halves the model puts in two different foreground
    classes (the tiny network is a 1×1 conv: a flat colour is one class)."""
    found: dict[int, tuple[int, int, int]] = {}
    bg = model.package.background_id
    for colour in CANDIDATES:
        result = model.segment(np.full((48, 64, 3), colour, np.uint8))
        ids = set(np.unique(result.class_map).tolist())
        if len(ids) == 1 and (cid := ids.pop()) != bg and cid not in found:
            found[cid] = colour
    assert len(found) >= 2, f"the tiny model classes too few colours apart: {found}"
    (a, ca), (b, cb) = list(found.items())[:2]
    rgb = np.empty((360, 640, 3), np.uint8)
    rgb[:, :320], rgb[:, 320:] = ca, cb
    return rgb, (a, b)


async def test_whip_in_whep_out_colours_and_summaries(
    engine: Engine, tiny_model: SegmentationModel
) -> None:
    scene, (left, right) = two_class_scene(tiny_model)
    results: dict[int, SegResult] = {}

    def keep(r: SegResult) -> None:
        assert r.frame is not None
        if len(results) < 2000:
            results[r.frame.meta.frame_id] = r

    async with serve_app(engine, ServerSettings(model=tiny_model)) as served:
        whip = WhipClient(served.http, served.url)
        whep = WhepClient(served.http, served.url)
        try:
            await whip.publish("cam", StillTrack(scene))
            await whip.connected()
            assert whip.location is not None and whip.location.startswith("/whip/cam/")
            await until(lambda: "cam" in served.server.stream_ids(), 10, "the WHIP source")
            await engine.attach_sink(CallbackSink(keep), job="whip", sources="cam")
            await whep.watch("cam")
            await whep.connected()
            await until(lambda: whep.frames >= 15 and len(whep.messages) >= 10, 20, "frames back")

            # The picture that came back is the overlay of the expected classes' colours.
            assert whep.latest is not None and whep.latest.shape == (360, 640, 3)
            annotator = MaskAnnotator.for_classes(tiny_model.class_names)
            expected_map = np.zeros((360, 640), np.uint8)
            expected_map[:, :320], expected_map[:, 320:] = left, right
            expected = annotator.annotate(scene, expected_map).astype(np.int32)
            got = whep.latest.astype(np.int32)
            for cols in (slice(40, 280), slice(360, 600)):
                diff = np.abs(got[60:300, cols].mean((0, 1)) - expected[60:300, cols].mean((0, 1)))
                assert diff.max() < 12, f"overlay colour off by {diff} in columns {cols}"
                raw = np.abs(got[60:300, cols].mean((0, 1)) - scene[60:300, cols].mean((0, 1)))
                assert raw.max() > 20, "the picture came back without an overlay"

            # Each summary on the data channel says what the predictions of that frame say.
            frames = [m for m in whep.messages if m["type"] == "frame"]
            checked = 0
            for m in frames:
                r = results.get(m["frame_id"])
                if r is None:
                    continue
                pred = prediction_dict(r, tiny_model.class_names, "tiny/1", 0, with_masks=False)
                want = {p["class"]: p["confidence"] for p in pred["predictions"]["predictions"]}
                got_classes = {c["class"]: c["confidence"] for c in m["classes"]}
                assert got_classes.keys() == want.keys()
                for name, conf in want.items():
                    assert got_classes[name] == pytest.approx(conf, abs=1e-5)
                share = {c["class"]: c["share"] for c in m["classes"]}
                for cid in r.present_class_ids:
                    if cid:
                        name = tiny_model.class_names[cid]
                        assert share[name] == pytest.approx(np.mean(r.class_map == cid), abs=1e-5)
                assert m["pts"] == pytest.approx(r.frame.meta.pts_seconds, abs=1e-5)  # type: ignore[union-attr]
                assert m["latency_ms"] >= 0
                checked += 1
            assert checked >= 5, f"only {checked} summaries matched recorded frames"
            assert {tiny_model.class_names[left], tiny_model.class_names[right]} <= {
                c["class"] for c in frames[-1]["classes"]
            }

            # DELETE of the WHIP session removes the source; its viewer's session ends with it.
            assert await whip.delete() == 200
            whip.location = None
            await until(lambda: "cam" not in served.server.stream_ids(), 10, "source removed")
            await until(lambda: len(served.server.sessions) == 0, 10, "viewer ended")
            assert served.server.previews.get("cam") is None
        finally:
            await whep.close()
            await whip.close()
        await asyncio.sleep(0)
