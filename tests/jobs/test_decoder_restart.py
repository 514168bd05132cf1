"""In the jobs service each source decodes in a child process: a decoder killed with SIGKILL
mid file job is restarted and counted, and the job still writes every frame exactly once."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path

import pytest

from tests.jobs.conftest import Service
from tests.jobs.test_api import wait_for
from tests.sources.procs import alive, decoder_pids
from tests.support.media import write_video

FRAMES = 300

pytestmark = pytest.mark.timeout(60)


async def test_sigkill_of_a_decoder_child_mid_file_job(
    service: Service, tiny_package: Path, tmp_path: Path
) -> None:
    video = write_video(tmp_path / "clip.mp4", frames=FRAMES)
    spec = {
        "name": "clip",
        "model": str(tiny_package),
        "sources": [{"id": "clip", "url": str(video)}],
        "sinks": [{"type": "jsonl", "path": "clip/predictions.jsonl", "with_masks": False}],
    }
    async with asyncio.timeout(50):
        created = await service.client.post("/jobs", json=spec)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        await wait_for(service, job_id, lambda s: s["sources"][0]["frames"] >= 30)
        (child,) = decoder_pids()  # the job's one source: the one decoder
        os.kill(child, signal.SIGKILL)
        status = await wait_for(service, job_id, lambda s: s["state"] in ("completed", "failed"))
    assert status["state"] == "completed", status
    assert not alive(child)
    source = status["sources"][0]
    assert source["decoder_restarts"] >= 1, source
    assert "SIGKILL" in (source["last_error"] or ""), source
    lines = (service.output_dir / "clip" / "predictions.jsonl").read_text().splitlines()
    assert [json.loads(line)["frame_id"] for line in lines] == list(range(FRAMES))
    assert not decoder_pids()  # the job ended: its decoder with it
