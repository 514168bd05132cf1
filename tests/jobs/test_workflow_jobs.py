"""A job created with a workflow JSON writes the workflow's outputs by name into its JSONL, line
for line what ``stream-pipeline run --workflow`` writes for the same workflow and file."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.conftest import serve_jobs
from tests.jobs.test_api import wait_for
from tests.support.media import write_video

pytestmark = pytest.mark.timeout(120)

FRAMES = 12
# Differ between two runs of the same frames by design: a fresh id per inference, the wall clock.
PER_RUN = ("inference_id", "captured_at", "detection_id")


def _workflow(model: Path) -> dict[str, Any]:
    """Segmentation + visualization, outputs under names of their own (one image output, which
    both sides leave out of the JSONL unless images are asked for)."""
    seg = {
        "type": "roboflow_core/roboflow_semantic_segmentation_model@v2",
        "name": "seg", "images": "$inputs.image", "model_id": "$inputs.model",
        "confidence_mode": "custom", "custom_confidence": "$inputs.conf",
    }  # fmt: skip
    viz = {
        "type": "roboflow_core/mask_visualization@v1",
        "name": "viz", "image": "$inputs.image", "predictions": "$steps.seg.predictions",
    }  # fmt: skip
    outputs = {
        "segmentation": "$steps.seg.predictions",
        "seg_all": "$steps.seg.*",
        "which_model": "$steps.seg.model_id",
        "overlay": "$steps.viz.image",
    }
    return {
        "version": "1.0",
        "inputs": [
            {"type": "WorkflowImage", "name": "image"},
            {"type": "WorkflowParameter", "name": "model", "default_value": str(model)},
            {"type": "WorkflowParameter", "name": "conf", "default_value": 0.3},
        ],
        "steps": [seg, viz],
        "outputs": [
            {"type": "JsonField", "name": name, "selector": selector}
            for name, selector in outputs.items()
        ],
    }


def _stable(value: Any) -> Any:
    """``value`` without the fields that differ between two runs of the same frames."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in PER_RUN}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


async def test_workflow_job_writes_the_outputs_run_writes(
    tmp_path: Path, tiny_package: Path
) -> None:
    workflow = _workflow(tiny_package)
    (tmp_path / "wf.json").write_text(json.dumps(workflow))
    video = write_video(tmp_path / "clip.mp4", frames=FRAMES)
    done = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable, "-m", "stream_pipeline.cli", "run", "--workflow", "wf.json",
            "--param", "conf=0.2", "--source", f"clip={video}", "--device", "cpu",
            "--threads", "1", "--predictions-out", "run.jsonl",
        ],
        cwd=tmp_path, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    expected = _records(tmp_path / "run.jsonl")
    assert len(expected) == FRAMES

    spec = {
        "name": "wf",
        "workflow": workflow,
        "parameters": {"conf": 0.2},
        "sources": [{"id": "clip", "url": str(video)}],
        "sinks": [{"type": "jsonl", "path": "wf/job.jsonl"}],
    }
    async with asyncio.timeout(90), serve_jobs(tmp_path / "state", tmp_path / "out") as svc:
        created = await svc.client.post("/jobs", json=spec)
        assert created.status_code == 201, created.text
        status = await wait_for(
            svc, created.json()["id"], lambda s: s["state"] in ("completed", "failed")
        )
        assert status["state"] == "completed", status
    got = _records(tmp_path / "out" / "wf" / "job.jsonl")

    keys = {"source_id", "frame_id", "pts_seconds", "captured_at"}
    keys |= {"segmentation", "seg_all", "which_model"}
    assert [set(r) for r in got] == [set(r) for r in expected] == [keys] * FRAMES
    assert [r["frame_id"] for r in got] == list(range(FRAMES))
    assert all(r["which_model"] == expected[0]["which_model"] for r in got)
    # Per frame, the same values (classes, confidences, masks) under the same names.
    assert [_stable(r) for r in got] == [_stable(r) for r in expected]
    # The ids a run mints are there on both sides, shaped alike.
    assert all(isinstance(r["seg_all"]["inference_id"], str) for r in got)
    assert got[0]["seg_all"]["inference_id"] != expected[0]["seg_all"]["inference_id"]
