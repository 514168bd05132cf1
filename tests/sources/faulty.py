"""A test-only source that misbehaves on purpose, registered for the ``faulty`` scheme.

``faulty://KIND?frames=N&at=K&once=PATH``: frames of 32×24 pixels, each filled with its index
(mod 256). At frame ``K`` it segfaults (``segv``), hangs in a way ``stop`` cannot end (``hang``),
raises (``raise``) or, ``grow``, goes on with frames twice as wide and high. With ``once``, only
while the file ``PATH`` exists (it is removed first), so a restarted decoder goes on.
"""

from __future__ import annotations

import ctypes
import threading
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from stream_pipeline.buffer import RingBuffer
from stream_pipeline.frames import Frame
from stream_pipeline.sources import AnySource, Source, SourceSpec, SourceState, register_source

WIDTH, HEIGHT = 32, 24


class FaultySource(Source):
    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        parts = urlsplit(spec.url)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        self.kind_of_fault = parts.netloc
        self.frames = int(query.get("frames", "30"))
        self.at = int(query.get("at", "10"))
        self.once = Path(query["once"]) if "once" in query else None
        self.width, self.height = WIDTH, HEIGHT
        self.status.set_total(self.frames)

    def open(self) -> None:
        self.status.set_state(SourceState.STREAMING)

    def _fault(self) -> None:
        if self.kind_of_fault == "grow":
            self.width, self.height = 2 * WIDTH, 2 * HEIGHT
            return
        if self.once is not None:
            if not self.once.exists():
                return
            self.once.unlink()
        if self.kind_of_fault == "segv":
            ctypes.string_at(0)
        elif self.kind_of_fault == "hang":
            while True:
                time.sleep(1)
        else:
            raise RuntimeError("faulty source raised on purpose")

    def run(self, ring: RingBuffer[Frame], stop: threading.Event) -> None:
        try:
            for i in range(self.frames):
                if i == self.at:
                    self._fault()
                rgb = np.full((self.height, self.width, 3), i % 256, np.uint8)
                meta = self.clock.stamp(i / 30, self.width, self.height)
                if not self.put(ring, Frame(meta, rgb), stop):
                    return
        finally:
            self.status.finish(stopped=stop.is_set())


def _factory(spec: SourceSpec) -> AnySource:
    return FaultySource(spec)


register_source("faulty", _factory)
