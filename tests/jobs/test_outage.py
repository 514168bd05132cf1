"""A live job across a ``kill -9`` of the service: it resumes by itself, and the time the service
was down shows in its source's status as one outage of about that length."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.jobs.processes import poll

DOWN = 2.0  # seconds the service stays dead


def closed_outage(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """The job's source once its outage figures hold still for half a second."""
    deadline = time.monotonic() + 20
    last = client.get(f"/jobs/{job_id}").json()["sources"][0]
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now = client.get(f"/jobs/{job_id}").json()["sources"][0]
        if (now["outages"], now["outage_seconds"]) == (last["outages"], last["outage_seconds"]):
            return dict(now)
        last = now
    raise AssertionError(f"the outage did not close: {last}")


@pytest.mark.timeout(120)
def test_a_live_source_counts_the_outage_of_a_service_restart(
    serve_group: Any, tmp_path: Path, tiny_package: Path
) -> None:
    live = "synthetic://street?frames=0&realtime=1&fps=15&width=64&height=48"
    spec = {
        "name": "cam",
        "model": str(tiny_package),
        "sources": [{"id": "cam", "url": live}],
        "sinks": [{"type": "jsonl", "path": "cam/predictions.jsonl"}],
    }
    first = serve_group()
    with httpx.Client(base_url=first.url, timeout=20) as client:
        job_id = client.post("/jobs", json=spec).json()["id"]
        running = poll(client, job_id, lambda s: s["sources"][0]["frames"] >= 5, 30)
        assert running["sources"][0]["outages"] == 0, running
    first.kill()
    killed_at = time.time()
    time.sleep(DOWN)

    second = serve_group()
    with httpx.Client(base_url=second.url, timeout=20) as client:
        back = poll(
            client,
            job_id,
            lambda s: s["state"] == "running" and s["sources"][0]["frames"] >= 5,
            30,
        )
        assert back["state"] == "running", back
        # The job's next look (every 0.2 s) sees the frames and closes the outage; until then it
        # shows as open, its seconds growing. Closed, it stays as it was while the source streams.
        source = closed_outage(client, job_id)
        assert source["outages"] == 1, source
        # From the last heartbeat (≤ 1 s before the kill) to the first frame after the restart.
        assert DOWN <= source["outage_seconds"] <= time.time() - killed_at + 1.5, source
        seconds = source["outage_seconds"]
        client.delete(f"/jobs/{job_id}")
    second.kill()

    # Stored: a third start shows the same totals for the stopped job, with no new outage.
    third = serve_group()
    with httpx.Client(base_url=third.url, timeout=20) as client:
        stopped = client.get(f"/jobs/{job_id}").json()
        assert stopped["state"] == "stopped"
        assert (stopped["sources"][0]["outages"], stopped["sources"][0]["outage_seconds"]) == (
            1,
            seconds,
        )
