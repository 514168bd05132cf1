"""Segmented recording, its index and retention; JSONL rotation. Checked with ffprobe."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from stream_pipeline.consumers import JsonlSink
from stream_pipeline.consumers.rotation import Retention, parse_duration, parse_size
from stream_pipeline.consumers.segments import SegmentedVideoSink
from stream_pipeline.errors import ConfigError
from tests.consumers.synthetic import CONTEXT, make_result

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("ffprobe") is None, reason="ffprobe (Debian ffmpeg) missing"),
]


def probe_frames(path: Path) -> int:
    """Frames ffprobe decodes from ``path`` (it must open it without error)."""
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
            "-of",
            "csv=p=0",
            "-f",
            "mp4",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout.strip())


def index_lines(directory: Path) -> list[dict[str, object]]:
    text = (directory / "index.jsonl").read_text()
    assert text.endswith("\n") or not text
    return [json.loads(line) for line in text.splitlines()]


def test_segments_of_one_second_named_by_start_time_and_indexed(tmp_path: Path) -> None:
    sink = SegmentedVideoSink(tmp_path / "rec", segment_seconds=1.0, preset="ultrafast")
    sink.open(CONTEXT)
    for i in range(75):  # 2.5 s at 30 fps
        sink.write(make_result(i, height=96, width=160))
    sink.close()
    files = sorted(p.name for p in (tmp_path / "rec").iterdir())
    assert not [f for f in files if f.endswith(".part")]
    videos = [f for f in files if f.endswith(".mp4")]
    assert files == [*videos, "index.jsonl"] and len(videos) == 3
    index = index_lines(tmp_path / "rec")
    assert [e["file"] for e in index] == videos
    assert [e["frames"] for e in index] == [30, 30, 15]
    assert [probe_frames(tmp_path / "rec" / v) for v in videos] == [30, 30, 15]
    # Named by the UTC time of the first frame (captured_at of frames 0, 30, 60).
    assert index[0]["start"] == "2023-11-14T22:13:20.000Z"
    assert videos[1] == "20231114T221321.000Z.mp4"
    assert index[0]["end"] == index[1]["start"]
    assert sink.stats.delivered == 75


def test_size_retention_deletes_oldest_first_never_the_segment_being_written(
    tmp_path: Path,
) -> None:
    rec = tmp_path / "rec"
    sink = SegmentedVideoSink(
        rec, segment_seconds=0.2, preset="ultrafast", retention=Retention(max_bytes=60_000)
    )
    sink.open(CONTEXT)
    seen: list[str] = []
    for i in range(150):
        sink.write(make_result(i, height=96, width=160))
        parts = list(rec.glob("*.part"))
        assert len(parts) == 1  # the live segment is always there
        seen.append(parts[0].name.removesuffix(".part"))
    sink.close()
    kept = sorted(p.name for p in rec.glob("*.mp4"))
    started = sorted(set(seen))
    assert sink.removed > 0 and len(kept) + sink.removed == len(started)
    assert kept == started[-len(kept) :]  # the newest remain: the oldest went first
    assert started[-1] in kept  # the last one written survived its own retention
    assert sum((rec / k).stat().st_size for k in kept) <= 60_000
    assert [e["file"] for e in index_lines(rec)] == kept


def test_age_retention_and_a_segment_left_by_a_killed_run(tmp_path: Path) -> None:
    rec = tmp_path / "rec"
    first = SegmentedVideoSink(rec, segment_seconds=0.5, preset="ultrafast")
    first.open(CONTEXT)
    for i in range(45):
        first.write(make_result(i, height=96, width=160))
    first.close()
    old = sorted(rec.glob("*.mp4"))
    assert len(old) == 3
    week_ago = time.time() - 8 * 86400
    for p in old[:2]:
        os.utime(p, (week_ago, week_ago))
    # What a kill -9 leaves: a .part that plays up to its last fragment, and an empty one.
    shutil.copy(old[2], rec / "20991231T000000.000Z.mp4.part")
    (rec / "20991231T000001.000Z.mp4.part").write_bytes(b"")
    again = SegmentedVideoSink(
        rec, segment_seconds=0.5, preset="ultrafast", retention=Retention(max_age=7 * 86400)
    )
    again.open(CONTEXT)
    again.close()
    names = sorted(p.name for p in rec.iterdir())
    assert names == [old[2].name, "20991231T000000.000Z.mp4", "index.jsonl"]
    assert again.removed == 2
    index = index_lines(rec)
    assert [e["file"] for e in index] == names[:2]
    assert index[1]["frames"] == 15 == probe_frames(rec / names[1])
    assert index[1]["start"] == "2099-12-31T00:00:00.000Z"


def test_jsonl_rotates_by_size_between_whole_lines_and_keeps_what_retention_allows(
    tmp_path: Path,
) -> None:
    path = tmp_path / "out" / "pred.jsonl"
    sink = JsonlSink(path, rotate_bytes=20_000, retention=Retention(max_bytes=60_000))
    sink.open(CONTEXT)
    for i in range(200):
        sink.write(make_result(i, height=48, width=64))
        time.sleep(0.001)  # rotated names carry milliseconds
    sink.close()
    rotated = sorted(path.parent.glob("pred.*Z.jsonl"))
    assert rotated and sink.removed > 0
    frames = []
    for p in [*rotated, path]:
        text = p.read_text()
        assert text.endswith("\n") and p.stat().st_size <= 20_000
        frames += [json.loads(line)["frame_id"] for line in text.splitlines()]
    assert frames == list(range(200 - len(frames), 200))  # the newest, whole and in order
    assert sum(p.stat().st_size for p in [*rotated, path]) <= 60_000


def test_jsonl_rotates_by_time(tmp_path: Path) -> None:
    path = tmp_path / "pred.jsonl"
    sink = JsonlSink(path, with_masks=False, rotate_seconds=0.2)
    sink.open(CONTEXT)
    for i in range(12):
        sink.write(make_result(i, height=48, width=64))
        time.sleep(0.05)
    sink.close()
    rotated = sorted(tmp_path.glob("pred.*Z.jsonl"))
    assert 2 <= len(rotated) <= 4
    lines = sum(len(p.read_text().splitlines()) for p in [*rotated, path])
    assert lines == 12


def test_sizes_durations_and_bad_settings() -> None:
    assert parse_size("500M") == 500 << 20 and parse_size("2GiB") == 2 << 30
    assert parse_duration("7d") == 7 * 86400 and parse_duration("90") == 90
    for bad in ("", "-1", "10X", "0"):
        with pytest.raises(ConfigError):
            parse_size(bad)
        with pytest.raises(ConfigError):
            parse_duration(bad)
    with pytest.raises(ConfigError, match="segment length"):
        SegmentedVideoSink("x", segment_seconds=0)
    with pytest.raises(ConfigError, match="preset"):
        SegmentedVideoSink("x", preset="warp")
