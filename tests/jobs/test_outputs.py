"""Where a resumed file job's JSONL sink continues: :func:`jsonl_checkpoints` on real files,
larger than the blocks it reads backwards in."""

from __future__ import annotations

import json
from pathlib import Path

from stream_pipeline.jobs.outputs import jsonl_checkpoints

PAD = "x" * 3000  # lines of a few KiB, as with RLE masks: 1 MiB blocks end mid-line


def _write(path: Path, rows: list[tuple[str, int]], torn: bytes = b"") -> None:
    with path.open("wb") as f:
        for sid, fid in rows:
            f.write(json.dumps({"source_id": sid, "frame_id": fid, "pad": PAD}).encode() + b"\n")
        f.write(torn)


def test_last_frame_of_each_source_in_a_file_of_many_blocks(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    # "early" appears only in the first lines: finding it reads back across every block.
    rows = [("early", i) for i in range(5)] + [(s, i) for i in range(700) for s in ("a", "b")]
    _write(path, rows)
    assert path.stat().st_size > 4 * (1 << 20)
    assert jsonl_checkpoints(path, ["a"]) == {"a": 699}
    assert jsonl_checkpoints(path, ["a", "b", "early"]) == {"a": 699, "b": 699, "early": 4}
    assert jsonl_checkpoints(path, ["a", "absent"]) == {"a": 699}


def test_a_torn_last_line_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    _write(path, [("a", i) for i in range(400)], torn=b'{"source_id": "a", "frame_id": 400, "pa')
    whole = path.stat().st_size - len(b'{"source_id": "a", "frame_id": 400, "pa')
    assert jsonl_checkpoints(path, ["a"]) == {"a": 399}
    assert path.stat().st_size == whole and path.read_bytes().endswith(b"\n")
    assert jsonl_checkpoints(tmp_path / "missing.jsonl", ["a"]) == {}
