"""mp4 recording: ffprobe sees H.264 with the right frames, size and duration; PyAV decodes it."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from stream_pipeline.consumers.video import VideoFileSink
from stream_pipeline.consumers.visualize import MaskAnnotator
from stream_pipeline.errors import ConfigError, SinkError
from tests.consumers.synthetic import CONTEXT, NAMES, make_result

needs_ffprobe = pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe not on PATH")


def _probe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    )
    streams = json.loads(out.stdout)["streams"]
    assert len(streams) == 1
    stream: dict[str, Any] = streams[0]
    return stream


def _decode(path: Path) -> tuple[list[np.ndarray], list[float]]:
    with av.open(str(path)) as container:
        frames = list(container.decode(video=0))
    return [f.to_ndarray(format="rgb24") for f in frames], [float(f.time) for f in frames]


def _record(path: Path, results: list[Any], **kwargs: Any) -> VideoFileSink:
    sink = VideoFileSink(path, **kwargs)
    sink.open(CONTEXT)
    for result in results:
        sink.write(result)
    sink.close()
    return sink


@needs_ffprobe
def test_annotated_recording_probes_and_decodes(tmp_path: Path) -> None:
    path = tmp_path / "rec" / "out.mp4"  # the missing directory is created
    annotator = MaskAnnotator.for_classes(NAMES, opacity=0.6)
    results = [make_result(i) for i in range(30)]
    sink = _record(path, results, annotator=annotator, fps=30)
    assert sink.stats.delivered == 30
    stream = _probe(path)
    assert stream["codec_name"] == "h264"
    assert int(stream["nb_read_frames"]) == 30
    assert (stream["width"], stream["height"]) == (640, 360)
    assert float(stream["duration"]) == pytest.approx(1.0, abs=1 / 30 + 1e-3)
    assert stream["pix_fmt"] == "yuv420p"
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # +faststart: the index comes first
    images, times = _decode(path)
    assert len(images) == 30
    np.testing.assert_allclose(times, [i / 30 for i in range(30)], atol=1e-3)
    # The encoded picture is the annotated frame (colours in RGB order), up to H.264 loss.
    frame = results[15].frame
    assert frame is not None and frame.rgb is not None
    expected = annotator.annotate(frame.rgb, results[15].class_map)
    error = np.abs(images[15].astype(np.int16) - expected).mean()
    assert error < 4, error
    assert np.abs(images[15].astype(np.int16) - frame.rgb).mean() > 4 * error


@needs_ffprobe
def test_odd_sizes_are_cropped_to_even(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    _record(path, [make_result(i, height=181, width=321) for i in range(5)])
    stream = _probe(path)
    assert (stream["width"], stream["height"], int(stream["nb_read_frames"])) == (320, 180, 5)
    images, _ = _decode(path)
    frame = make_result(2, height=181, width=321).frame
    assert frame is not None and frame.rgb is not None
    assert np.abs(images[2].astype(np.int16) - frame.rgb[:180, :320]).mean() < 4


def test_source_timing_is_kept_and_pts_strictly_increase(tmp_path: Path) -> None:
    path = tmp_path / "vfr.mp4"
    # A 10 fps source starting at t=100 s, one duplicate and one backwards timestamp.
    pts = [100.0 + i / 10 for i in range(12)]
    pts[5] = pts[4]
    pts[8] = pts[6]
    _record(path, [make_result(i, pts_seconds=t) for i, t in enumerate(pts)], fps=10)
    images, times = _decode(path)
    assert len(images) == 12
    assert all(b > a for a, b in itertools.pairwise(times))
    assert times[0] == pytest.approx(0.0, abs=1e-3)
    assert times[-1] == pytest.approx(1.1, abs=1e-3)
    assert times[5] == pytest.approx(0.4, abs=1e-3)


def test_a_restarted_source_clock_continues_the_timeline(tmp_path: Path) -> None:
    path = tmp_path / "restart.mp4"
    pts = [50.0 + i / 25 for i in range(5)] + [i / 25 for i in range(5)]
    _record(path, [make_result(i, pts_seconds=t) for i, t in enumerate(pts)], fps=25)
    _, times = _decode(path)
    np.testing.assert_allclose(times, [i / 25 for i in range(10)], atol=1e-3)


def test_zero_frames_leave_no_file_and_close_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "empty.mp4"
    sink = VideoFileSink(path)
    sink.open(CONTEXT)
    assert path.exists()  # open() proves the path writable
    sink.close()
    sink.close()
    assert not path.exists()
    with pytest.raises(SinkError, match="not open"):
        sink.write(make_result(0))


@pytest.mark.parametrize("where", ["proc", "under_file"])
def test_unwritable_path_is_a_one_line_sink_error_naming_it(tmp_path: Path, where: str) -> None:
    if where == "proc":
        path = Path("/proc/x/out.mp4")
    else:
        (tmp_path / "file.txt").write_text("x")
        path = tmp_path / "file.txt" / "out.mp4"
    sink = VideoFileSink(path)
    with pytest.raises(SinkError) as info:
        sink.open(CONTEXT)
    message = str(info.value)
    assert str(path) in message and "\n" not in message and "Traceback" not in message
    sink.close()  # closing a sink that never opened is fine


def test_close_after_a_failed_write_leaves_a_playable_file(tmp_path: Path) -> None:
    path = tmp_path / "partial.mp4"
    sink = VideoFileSink(path, fps=30)
    sink.open(CONTEXT)
    for i in range(6):
        sink.write(make_result(i))
    # A frame of another size is scaled to the recording's size.
    sink.write(make_result(6, height=120, width=200))
    frameless = make_result(7)
    with pytest.raises(SinkError, match="host"):
        sink.write(type(frameless)(frameless.class_map, frameless.confidence, ()))
    with pytest.raises(SinkError, match="records source"):
        sink.write(make_result(8, source_id="cam-2"))
    sink.close()
    images, _ = _decode(path)
    assert len(images) == 7 and images[6].shape == (360, 640, 3)


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="fps"):
        VideoFileSink("x.mp4", fps=0)
    with pytest.raises(ConfigError, match="crf"):
        VideoFileSink("x.mp4", crf=99)
    with pytest.raises(ConfigError, match="preset"):
        VideoFileSink("x.mp4", preset="quick")


def test_codec_must_be_a_known_video_encoder() -> None:
    with pytest.raises(ConfigError, match="nosuchcodec"):
        VideoFileSink("x.mp4", codec="nosuchcodec")
    with pytest.raises(ConfigError, match="not a video encoder"):
        VideoFileSink("x.mp4", codec="aac")
