"""The decoder child's direct YUV→RGB conversion into slots: bit-identical to ``to_ndarray``."""

from __future__ import annotations

import mmap
import os
import threading
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from av.video.stream import VideoStream

from stream_pipeline.buffer import DropPolicy
from stream_pipeline.sources import SourceSpec
from stream_pipeline.sources.av_source import AvSource
from stream_pipeline.sources.isolated.child import SlotWriter
from stream_pipeline.sources.isolated.convert import available, rgb24_into
from stream_pipeline.sources.isolated.protocol import ChildMessage, FrameReady, Grant, NewPool
from stream_pipeline.sources.isolated.slots import frame_bytes, slot_view

pytestmark = pytest.mark.skipif(not available(), reason="PyAV's libswscale not found")


def _clip(path: Path, codec: str, pix_fmt: str, width: int, height: int, frames: int = 6) -> Path:
    """A moving gradient encoded with ``codec`` in ``pix_fmt`` (what the decoder gives back)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(30, 1))
        assert isinstance(stream, VideoStream)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        ys, xs = np.mgrid[0:height, 0:width]
        for i in range(frames):
            rgb = np.stack([(xs * 3 + i * 7) % 256, (ys * 2 + i) % 256, (xs + ys) % 256], -1)
            frame = av.VideoFrame.from_ndarray(rgb.astype(np.uint8), format="rgb24")
            for packet in stream.encode(frame.reformat(format=pix_fmt)):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


CASES = [
    ("libx264", "yuv420p", 320, 240, "mp4"),  # limited range, the usual camera / file case
    ("libx264", "yuvj420p", 320, 240, "mp4"),  # full range (JPEG-style, e.g. some IP cameras)
    ("ffv1", "yuv420p", 321, 241, "mkv"),  # odd width and height: chroma rounds up
    ("libx264", "yuv444p", 333, 201, "mp4"),
    ("ffv1", "yuv422p", 319, 240, "mkv"),
    ("rawvideo", "nv12", 321, 241, "mkv"),  # semi-planar, as hardware-friendly decoders give
    ("rawvideo", "gray", 64, 48, "mkv"),
    ("rawvideo", "yuv411p", 320, 240, "mkv"),
    ("ffv1", "yuv420p10le", 321, 241, "mkv"),  # 10-bit (HEVC Main 10 cameras)
    ("ffv1", "bgr0", 64, 48, "mkv"),  # an RGB-family decode
]


@pytest.mark.parametrize(("codec", "pix_fmt", "width", "height", "ext"), CASES)
def test_direct_conversion_is_bit_identical_to_to_ndarray(
    tmp_path: Path, codec: str, pix_fmt: str, width: int, height: int, ext: str
) -> None:
    clip = _clip(tmp_path / f"c.{ext}", codec, pix_fmt, width, height)
    n = 0
    with av.open(str(clip)) as container:
        for vf in container.decode(video=0):
            assert vf.format.name == pix_fmt
            out = np.full((height, width, 3), 7, np.uint8)
            assert rgb24_into(vf, out)
            np.testing.assert_array_equal(out, vf.to_ndarray(format="rgb24"))
            n += 1
    assert n == 6


def test_formats_it_does_not_take_are_left_to_to_ndarray() -> None:
    rgb = np.zeros((4, 6, 3), np.uint8)
    out = np.full_like(rgb, 9)
    assert not rgb24_into(av.VideoFrame.from_ndarray(rgb, format="rgb24"), out)
    assert (out == 9).all()  # untouched: the caller converts as before


def test_bad_destination_is_a_one_line_error(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "c.mp4", "libx264", "yuv420p", 64, 48, frames=1)
    with av.open(str(clip)) as container:
        vf = next(container.decode(video=0))
    with pytest.raises(ValueError, match="C-contiguous"):
        rgb24_into(vf, np.zeros((48, 65, 3), np.uint8))


def _run_writer(clip: Path, slots: int = 3) -> tuple[SlotWriter, list[np.ndarray]]:
    """Run an AvSource into a real SlotWriter over a memfd pool, as the child does; each slot's
    pixels are copied out when its FrameReady is sent, then the slot is granted again."""
    width, height = 0, 0
    with av.open(str(clip)) as container:
        stream = container.streams.video[0]
        width, height = stream.codec_context.width, stream.codec_context.height
    nbytes = frame_bytes(height, width)
    fd = os.memfd_create("test-slots")
    os.ftruncate(fd, nbytes * slots)
    mm = mmap.mmap(fd, nbytes * slots)
    os.close(fd)
    got: list[np.ndarray] = []
    writer: SlotWriter

    def send(message: ChildMessage) -> None:
        if isinstance(message, FrameReady):
            view = slot_view(mm, message.slot * nbytes, message.height, message.width)
            got.append(view.copy())
            writer.grant(Grant(message.generation, (message.slot,)))

    writer = SlotWriter(send, DropPolicy.BLOCK, 0, False)
    writer.use_pool(NewPool(1, nbytes, slots), mm)
    writer.grant(Grant(1, tuple(range(slots))))
    source = AvSource(SourceSpec(str(clip), id="clip"))
    source.open()
    source.rgb_of = writer.rgb_of
    try:
        source.run(writer, threading.Event())
    finally:
        source.close()
    return writer, got


def test_child_writer_converts_straight_into_slots(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "c.mkv", "ffv1", "yuv420p", 321, 241)
    writer, got = _run_writer(clip)
    assert (writer.direct, writer.copied) == (6, 0)  # no frame took the copying path
    with av.open(str(clip)) as container:
        expected = [vf.to_ndarray(format="rgb24") for vf in container.decode(video=0)]
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)


def test_child_writer_copies_frames_it_cannot_convert(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "c.mkv", "ffv1", "gray16le", 64, 48)  # not converted directly
    writer, got = _run_writer(clip)
    assert (writer.direct, writer.copied) == (0, 6)
    with av.open(str(clip)) as container:
        expected = [vf.to_ndarray(format="rgb24") for vf in container.decode(video=0)]
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_array_equal(a, b)
