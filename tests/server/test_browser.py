"""The page in a real headless Chromium: its fake camera in (WHIP), the overlay back (WHEP); and
an RTSP camera watched by Chromium and an aiortc peer at once."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from stream_pipeline.engine import Engine
from stream_pipeline.model import SegmentationModel
from stream_pipeline.server import ServerSettings
from stream_pipeline.sources import ReconnectPolicy, SourceSpec
from tests.support.browser import Browser, browser_unavailable
from tests.support.rtsp import ServerFactory
from tests.support.webrtc import WhepClient, serve_app, until

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


@pytest.fixture(autouse=True)
def _needs_chromium() -> None:
    why = browser_unavailable()
    if why is not None:
        pytest.skip(why)


async def _frames_decoded(browser: Browser) -> int:
    value = await browser.js("return window.spState ? window.spState.framesDecoded : 0;")
    return int(value or 0)


async def _wait_decoding(browser: Browser, at_least: int, within: float) -> int:
    deadline = time.monotonic() + within
    while True:
        n = await _frames_decoded(browser)
        if n >= at_least:
            return n
        error = await browser.js("return window.spState.error;")
        assert error is None, f"the page failed: {error}"
        assert time.monotonic() < deadline, f"Chromium decoded {n} frames, wanted {at_least}"
        await browser.call(lambda d: time.sleep(0.25))


def _element_pixels(png: bytes, rect: dict[str, float], ratio: float) -> np.ndarray:
    image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    x, y = int(rect["x"] * ratio), int(rect["y"] * ratio)
    w, h = int(rect["width"] * ratio), int(rect["height"] * ratio)
    return image[y + 2 : y + h - 2, x + 2 : x + w - 2]


def _share_near(pixels: np.ndarray, colours: list[tuple[int, ...]], tol: int = 40) -> float:
    flat = pixels.reshape(-1, 3).astype(np.int32)
    near = np.zeros(len(flat), bool)
    for c in colours:
        near |= np.abs(flat - np.asarray(c)).max(axis=1) <= tol
    return float(near.mean())


async def test_page_sends_the_camera_and_shows_the_overlay(
    engine: Engine, tiny_model: SegmentationModel
) -> None:
    # Opacity 1: an overlaid pixel is its class's colour exactly (then only the codec changes it).
    settings = ServerSettings(model=tiny_model, opacity=1.0)
    async with serve_app(engine, settings) as served, Browser.start() as browser:
        await browser.call(lambda d, url: d.get(url), served.url + "/")
        await browser.js("document.getElementById('camera').click(); return 0;")
        first = await _wait_decoding(browser, 5, 40)
        later = await _wait_decoding(browser, first + 20, 20)
        assert later > first
        streams = [s for s in served.server.stream_ids() if s.startswith("browser-")]
        assert len(streams) == 1, streams
        last = await browser.js("return window.spState.last;")
        assert last is not None and last["stream"] == streams[0]
        present = {c["id"] for c in last["classes"]}
        palette = served.server.annotator.palette
        colours = [tuple(int(v) for v in palette[cid]) for cid in present]
        assert colours, "the fake camera's picture was all background"
        png = await browser.call(lambda d: d.get_screenshot_as_png())
        ratio = float(await browser.js("return window.devicePixelRatio;"))
        remote = await browser.js(
            "return document.getElementById('remote').getBoundingClientRect().toJSON();"
        )
        local = await browser.js(
            "return document.getElementById('local').getBoundingClientRect().toJSON();"
        )
        shown = _element_pixels(png, remote, ratio)
        camera = _element_pixels(png, local, ratio)
        painted = sum(c["share"] for c in last["classes"])
        on_screen = _share_near(shown, colours)
        print(f"classes {present}, painted {painted:.2f}, on screen {on_screen:.2f}, "
              f"raw camera {_share_near(camera, colours):.2f}")  # fmt: skip
        # The annotated picture is painted in the class colours the summary reports, about as much
        # of it as the summary says; the raw camera next to it is not.
        assert on_screen >= 0.6 * painted
        assert on_screen > _share_near(camera, colours) + 0.2
        legend = await browser.js(
            "return [...document.querySelectorAll('#legend li')].map(li => li.textContent);"
        )
        assert any(name in " ".join(legend) for name in tiny_model.class_names[1:])
        await browser.js("document.getElementById('stop').click(); return 0;")
        await until(lambda: not served.server.stream_ids(), 10, "the camera's source to go")
        await until(lambda: len(served.server.sessions) == 0, 10, "sessions to end")


async def test_chromium_and_aiortc_watch_an_rtsp_camera(
    engine: Engine, tiny_model: SegmentationModel, rtsp_server_factory: ServerFactory
) -> None:
    camera = rtsp_server_factory()  # started here, inside the namespace
    spec = SourceSpec(
        camera.url(), id="gate", open_timeout=5, read_timeout=2,
        reconnect=ReconnectPolicy(initial_delay=0.2, max_delay=1.0),
    )  # fmt: skip
    await engine.add_source(spec, model=tiny_model)
    settings = ServerSettings(model=tiny_model, peer_timeout=4.0)
    async with serve_app(engine, settings) as served:
        viewer = WhepClient(served.http, served.url)
        try:
            async with Browser.start() as browser:
                await browser.call(lambda d, url: d.get(url), served.url + "/")
                await browser.js(
                    "const s = document.getElementById('streams');"
                    "return new Promise(r => { const t = setInterval(() => {"
                    " if ([...s.options].some(o => o.value === 'gate')) { clearInterval(t); r(0); }"
                    " else document.getElementById('refresh').click(); }, 200); });"
                )
                await browser.js(
                    "document.getElementById('streams').value = 'gate';"
                    "document.getElementById('watch').click(); return 0;"
                )
                await viewer.watch("gate")
                await viewer.connected()
                await _wait_decoding(browser, 15, 30)
                await until(lambda: viewer.frames >= 15, 20, "aiortc frames")
                preview = served.server.previews.get("gate")
                assert preview is not None and len(preview.viewers) == 2
                assert viewer.latest is not None and viewer.latest.shape == (360, 640, 3)
            # The tab is gone (the browser quit without DELETE): its session ends by itself.
            await until(lambda: len(served.server.sessions) == 1, 20, "the tab's session to end")
        finally:
            await viewer.close()
