"""WHEP preview of an engine source, watched by real aiortc peers over loopback."""

from __future__ import annotations

import pytest

from stream_pipeline.engine import Engine
from stream_pipeline.model import SegmentationModel
from stream_pipeline.server import ServerSettings
from stream_pipeline.sources import SourceSpec
from tests.support.webrtc import WhepClient, serve_app, until

pytestmark = pytest.mark.timeout(60)

LIVE = "synthetic://street?seed=1&fps=30&frames=0&width=640&height=360&realtime=1"


async def test_two_viewers_of_a_synthetic_source(
    engine: Engine, tiny_model: SegmentationModel
) -> None:
    await engine.add_source(SourceSpec(LIVE, id="street"), model=tiny_model)
    async with serve_app(engine, ServerSettings(model=tiny_model)) as served:
        viewers = [WhepClient(served.http, served.url) for _ in range(2)]
        try:
            for v in viewers:
                await v.watch("street")
            for v in viewers:
                await v.connected()
            await until(lambda: all(v.frames >= 10 for v in viewers), 20, "10 frames each")
            preview = served.server.previews.get("street")
            assert preview is not None and len(preview.viewers) == 2
            await until(lambda: all(len(v.messages) >= 5 for v in viewers), 10, "summaries")
            legend, first = viewers[0].messages[0], viewers[0].messages[1]
            assert legend["type"] == "classes"
            assert [c["name"] for c in legend["classes"]] == list(tiny_model.class_names[1:])
            assert first["type"] == "frame" and first["stream"] == "street"
            assert viewers[0].latest is not None and viewers[0].latest.shape == (360, 640, 3)
        finally:
            for v in viewers:
                await v.close()
        await until(lambda: served.server.previews.get("street") is None, 5, "preview to stop")
        assert len(served.server.sessions) == 0
