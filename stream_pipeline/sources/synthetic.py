"""A synthetic camera: the procedural street scene the default model was trained on.

``synthetic://street?seed=0&fps=30&frames=300&width=640&height=360&realtime=0``. Without
``realtime`` it is a finite, file-like source (every frame processed); with ``realtime=1`` it is
paced like a camera (live semantics: ``drop_oldest``), and ``frames=0`` makes it endless.
"""

from __future__ import annotations

import threading
import time
from urllib.parse import parse_qs, urlsplit

from stream_pipeline.buffer import RingBuffer, RingClosed
from stream_pipeline.errors import SourceOpenError
from stream_pipeline.frames import Frame
from stream_pipeline.sources.base import Source, SourceSpec, SourceState

__all__ = ["SyntheticSource", "parse_synthetic_url"]

_DEFAULTS = {"seed": 0, "fps": 30.0, "frames": 300, "width": 640, "height": 360, "realtime": 0}


def parse_synthetic_url(url: str) -> dict[str, float]:
    """The parameters of a ``synthetic://street?...`` URL, defaults filled in."""
    parts = urlsplit(url)
    if parts.scheme != "synthetic" or parts.netloc not in ("street", ""):
        raise SourceOpenError(f"unknown synthetic source {url!r} (use synthetic://street?...)")
    params: dict[str, float] = {k: float(v) for k, v in _DEFAULTS.items()}
    for key, values in parse_qs(parts.query).items():
        if key not in _DEFAULTS:
            raise SourceOpenError(
                f"synthetic source: unknown parameter {key!r} (known: {', '.join(_DEFAULTS)})"
            )
        try:
            params[key] = float(values[-1])
        except ValueError:
            raise SourceOpenError(f"synthetic source: {key} must be a number") from None
    if params["width"] < 16 or params["height"] < 16 or params["fps"] <= 0 or params["frames"] < 0:
        raise SourceOpenError("synthetic source: width/height ≥ 16, fps > 0, frames ≥ 0")
    return params


class SyntheticSource(Source):
    """Renders :class:`~stream_pipeline.scenes.StreetScene` frames into the ring."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self.params = parse_synthetic_url(spec.url)
        frames = int(self.params["frames"])
        limit = min(frames or (spec.max_frames or 0), spec.max_frames or frames)
        self.frame_limit: int | None = limit or None
        self.status.set_total(self.frame_limit)
        self.clock.fps = self.params["fps"]

    def open(self) -> None:
        """Build the scene (cheap; nothing can fail later)."""
        from stream_pipeline.scenes import StreetScene

        p = self.params
        self._scene = StreetScene(int(p["width"]), int(p["height"]), seed=int(p["seed"]))

    def run(self, ring: RingBuffer[Frame], stop: threading.Event) -> None:
        """Render frames at ``fps`` (paced when live) until ``frames`` or ``stop``."""
        fps = self.params["fps"]
        paced = self.spec.live
        start = time.monotonic()
        index = 0
        self.status.set_state(SourceState.STREAMING)
        try:
            while not stop.is_set() and (self.frame_limit is None or index < self.frame_limit):
                t = index / fps
                if paced:
                    delay = start + t - time.monotonic()
                    if delay > 0 and stop.wait(delay):
                        break
                rgb, _ = self._scene.render(t)
                h, w = rgb.shape[:2]
                frame = Frame(self.clock.stamp(t, w, h), rgb=rgb)
                if not self.put(ring, frame, stop):
                    return
                index += 1
        except RingClosed:
            pass
        finally:
            self.status.finish(stopped=stop.is_set())
