"""What an actor runs (no Ray): :class:`StreamWorker` applies assignments idempotently."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from stream_pipeline.cluster.parts import assignment_version, parts_of
from stream_pipeline.cluster.worker import StreamWorker, WorkerSettings
from stream_pipeline.jobs.spec import JobSpec

pytestmark = pytest.mark.timeout(120)


def _parts(tiny_package: Path, frames: int, path: str = "w.jsonl") -> dict[str, str]:
    spec = JobSpec.model_validate(
        {
            "name": "w",
            "model": str(tiny_package),
            "sources": [
                {"id": "a", "url": f"synthetic://street?frames={frames}&width=64&height=48"},
                {
                    "id": "b",
                    "url": "synthetic://street?frames=0&realtime=1&fps=20&width=64&height=48",
                },
            ],
            "sinks": [{"type": "jsonl", "path": path, "with_masks": False}],
        }
    )
    return {p.id: p.wire for p in parts_of("job1", spec)}


async def _until(worker: StreamWorker, check: object, within: float = 30.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        status = worker.status()
        if check(status):  # type: ignore[operator]
            return status
        assert asyncio.get_running_loop().time() < deadline, status
        await asyncio.sleep(0.1)


async def test_apply_runs_exactly_the_assigned_parts(tmp_path: Path, tiny_package: Path) -> None:
    worker = StreamWorker("worker-0", WorkerSettings(str(tmp_path), isolate_decoders=False))
    await worker.start()
    try:
        parts = _parts(tiny_package, 40)
        version = assignment_version(parts)
        status = await worker.apply(version, parts)
        assert status["version"] == version and set(status["parts"]) == set(parts)
        again = await worker.apply(version, parts)  # idempotent: nothing restarts
        assert again["parts"].keys() == status["parts"].keys()
        done = await _until(worker, lambda s: s["parts"]["job1.a"]["state"] == "completed")
        assert done["parts"]["job1.b"]["state"] == "running"
        lines = (tmp_path / "w.a.jsonl").read_text().splitlines()
        assert [json.loads(x)["frame_id"] for x in lines] == list(range(40))
        # The measured cost the controller places by: frames and the worker's time on them.
        cost = done["cost"]
        assert cost["frames"] >= 40 and 0 < cost["seconds"] < 40 * 1.0, cost
        # Only the live part stays: the file part is forgotten, the live one left running.
        only_b = {"job1.b": parts["job1.b"]}
        status = await worker.apply(assignment_version(only_b), only_b)
        assert set(status["parts"]) == {"job1.b"}
        # Nothing assigned: the live part stops, its sink flushed (every line whole).
        status = await worker.apply(assignment_version({}), {})
        assert status["parts"] == {}
        text = (tmp_path / "w.b.jsonl").read_text()
        assert text.endswith("\n") and all(json.loads(x) for x in text.splitlines())
    finally:
        await worker.aclose()


async def test_a_file_part_assigned_again_continues_after_its_last_line(
    tmp_path: Path, tiny_package: Path
) -> None:
    first = _parts(tiny_package, 30)
    (tmp_path / "w.a.jsonl").write_text(
        "".join(json.dumps({"source_id": "a", "frame_id": i}) + "\n" for i in range(12))
        + '{"source_id": "a", "fra'  # a torn last line, as a killed actor leaves it
    )
    worker = StreamWorker("worker-1", WorkerSettings(str(tmp_path), isolate_decoders=False))
    await worker.start()
    try:
        only_a = {"job1.a": first["job1.a"]}
        await worker.apply(assignment_version(only_a), only_a)
        await _until(worker, lambda s: s["parts"]["job1.a"]["state"] == "completed")
    finally:
        await worker.aclose()
    ids = [json.loads(x)["frame_id"] for x in (tmp_path / "w.a.jsonl").read_text().splitlines()]
    assert ids == list(range(30))  # every frame once: the torn line cut, 12..29 appended


async def test_a_bad_assignment_is_refused_and_named(tmp_path: Path, tiny_package: Path) -> None:
    worker = StreamWorker("worker-2", WorkerSettings(str(tmp_path / "out"), isolate_decoders=False))
    await worker.start()
    try:
        parts = _parts(tiny_package, 5)
        with pytest.raises(ValueError, match="does not match"):
            await worker.apply("0" * 16, parts)
        # A path that leaves this node's output dir (through a symlink) is refused, named.
        (tmp_path / "out").mkdir(exist_ok=True)
        (tmp_path / "out" / "link").symlink_to(tmp_path)
        bad = _parts(tiny_package, 5, path="link/x.jsonl")
        status = await worker.apply(assignment_version(bad), bad)
        assert "leaves --output-dir" in status["refused"]["job1.a"]
        assert status["parts"] == {}
    finally:
        await worker.aclose()
