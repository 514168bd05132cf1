"""A source that fails while its job runs fails the job (with restart "never"), with the source's
error, instead of the job being recorded as completed."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.jobs.conftest import Service
from tests.jobs.test_api import wait_for
from tests.sources.procs import decoder_pids
from tests.support.media import write_video

pytestmark = pytest.mark.timeout(60)


async def test_a_file_that_goes_away_mid_job_fails_the_job(
    service: Service, tiny_package: Path, tmp_path: Path
) -> None:
    video = write_video(tmp_path / "clip.mp4", frames=1500)
    spec = {
        "name": "clip",
        "model": str(tiny_package),
        # Long enough to be still running when its file goes (a paced file would be live, and
        # reconnect).
        "sources": [{"id": "clip", "url": str(video)}],
        "sinks": [{"type": "jsonl", "path": "clip/predictions.jsonl"}],
        "restart": "never",
    }
    async with asyncio.timeout(50):
        created = await service.client.post("/jobs", json=spec)
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]
        await wait_for(service, job_id, lambda s: s["sources"][0]["frames"] >= 5)
        video.rename(tmp_path / "gone.mp4")
        # The decoder dies; its restart finds no file: the source fails for good.
        (child,) = decoder_pids()
        os.kill(child, signal.SIGKILL)
        status = await wait_for(service, job_id, lambda s: s["state"] in ("completed", "failed"))
    assert status["state"] == "failed", status
    assert "clip" in (status["error"] or ""), status
    assert status["sources"][0]["state"] == "failed", status
    assert status["sources"][0]["frames"] < 1500, "the file must go mid-job"
