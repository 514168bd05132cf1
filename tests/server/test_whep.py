"""WHEP preview of an engine source, watched by real aiortc peers over loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream_pipeline.engine import Engine
from stream_pipeline.model import SegmentationModel
from stream_pipeline.server import ServerSettings
from stream_pipeline.sources import SourceSpec
from tests.support.media import write_video
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


async def test_a_file_is_watched_and_its_removal_ends_the_viewer(
    engine: Engine, tiny_model: SegmentationModel, tmp_path: Path
) -> None:
    video = write_video(tmp_path / "clip.mp4", frames=45, width=320, height=192, fps=15)
    spec = SourceSpec(str(video), id="clip", realtime=True)  # paced like a camera
    await engine.add_source(spec, model=tiny_model, start=False)
    async with serve_app(engine, ServerSettings(model=tiny_model)) as served:
        viewer = WhepClient(served.http, served.url)
        try:
            await viewer.watch("clip")
            engine.start_source("clip")
            await viewer.connected()
            await until(lambda: viewer.frames >= 5, 15, "frames of the file")
            assert viewer.latest is not None and viewer.latest.shape == (192, 320, 3)
            # The stream goes (a paced file is live: it would reopen at its end, so remove it):
            # its preview stops and the viewer's session ends with it.
            await engine.remove_source("clip")
            await until(lambda: len(served.server.sessions) == 0, 10, "the viewer to be ended")
            assert served.server.previews.get("clip") is None
        finally:
            await viewer.close()
