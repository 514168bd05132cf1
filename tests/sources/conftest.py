"""Helpers of the source tests: run a thread source as the engine does and keep copies."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from stream_pipeline.buffer import DropPolicy, RingBuffer, RingClosed
from stream_pipeline.frames import Frame
from stream_pipeline.sources import Source


@dataclass
class Got:
    """What a consumer took from a source's ring: ids, timestamps and copies of the pixels."""

    ids: list[int]
    pts: list[float]
    pixels: list[np.ndarray]


def drain(
    source: Source,
    on_frame: Callable[[int, Frame], bool | None] | None = None,
    policy: DropPolicy = DropPolicy.BLOCK,
    limit: int | None = None,
    timeout: float = 20.0,
) -> Got:
    """Open and run ``source`` into a ring of 8, as the engine does, until the ring closes (or
    ``limit`` frames, or ``on_frame`` returns True); ``on_frame(n, frame)`` is called with the
    n-th frame taken. The frames are copied and let go at once (unless ``on_frame`` keeps them),
    as a consumer would, so their slots come back. What ``run`` raised is raised here."""
    ring: RingBuffer[Frame] = RingBuffer(8, policy)
    stop = threading.Event()
    source.open()

    raised: list[BaseException] = []

    def target() -> None:
        try:
            source.run(ring, stop)
        except BaseException as exc:
            raised.append(exc)
        finally:
            ring.close()
            source.close()

    thread = threading.Thread(target=target, name="sp-test-source")
    thread.start()
    got = Got([], [], [])
    try:
        while limit is None or len(got.ids) < limit:
            try:
                frame = ring.get(timeout)
            except RingClosed:
                break
            assert frame is not None, f"no frame within {timeout} s"
            assert frame.rgb is not None
            got.ids.append(frame.meta.frame_id)
            got.pts.append(frame.meta.pts_seconds)
            got.pixels.append(frame.rgb.copy())
            if on_frame is not None and on_frame(len(got.ids), frame):
                break
            del frame
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()
    if raised:
        raise raised[0]
    return got
