"""``/metrics`` and ``/readyz`` of the real jobs service: the Prometheus text parsed by
``prometheus_client``'s own parser, counts compared with what the jobs did, readiness that
follows the jobs resumed at start."""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from stream_pipeline.jobs.spec import JobSpec
from tests.jobs.conftest import Service, serve_jobs
from tests.jobs.test_api import LIVE, frames, wait_for
from tests.sources.procs import decoder_pids

pytestmark = pytest.mark.timeout(120)

STAGES = {"queue", "preprocess", "infer", "postprocess", "total"}
FILE = "synthetic://street?frames=30&width=64&height=48"


async def scrape(svc: Service) -> dict[str, list[Sample]]:
    """``/metrics`` as ``{family name: samples}``, parsed by prometheus_client."""
    resp = await svc.client.get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = text_string_to_metric_families(resp.text)
    return {f.name: list(f.samples) for f in families}


def value(families: dict[str, list[Sample]], name: str, **labels: str) -> float:
    """The one sample called ``name`` whose labels include ``labels``."""
    found = [
        s.value
        for samples in families.values()
        for s in samples
        if s.name == name and labels.items() <= s.labels.items()
    ]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def histogram(samples: list[Sample], **labels: str) -> tuple[list[tuple[float, float]], float]:
    """The cumulative ``(le, count)`` buckets and ``_count`` of one histogram series, after
    checking that the buckets rise monotonically up to ``+Inf`` and ``+Inf`` is ``_count``."""
    mine = [s for s in samples if labels.items() <= s.labels.items()]
    buckets = sorted((float(s.labels["le"]), s.value) for s in mine if s.name.endswith("_bucket"))
    count = next(s.value for s in mine if s.name.endswith("_count"))
    assert buckets and math.isinf(buckets[-1][0]), buckets
    assert all(a[1] <= b[1] for a, b in itertools.pairwise(buckets)), buckets
    assert buckets[-1][1] == count
    return buckets, count


def spec(name: str, package: Path, source: dict[str, str]) -> dict[str, Any]:
    """A job of one source and a JSONL sink named after the job."""
    sinks = [{"type": "jsonl", "path": f"{name}.jsonl"}]
    return {"name": name, "model": str(package), "sources": [source], "sinks": sinks}


async def test_metrics_count_what_the_jobs_did(service: Service, tiny_package: Path) -> None:
    c = service.client
    async with asyncio.timeout(90):
        clip = spec("clip", tiny_package, {"id": "clip", "url": FILE})
        clip_id = (await c.post("/jobs", json=clip)).json()["id"]
        await wait_for(service, clip_id, lambda s: s["state"] == "completed")
        m = await scrape(service)
        assert "stream_pipeline_latency_ms" not in m  # the percentile gauges gave way
        model = next(s.labels["model"] for s in m["stream_pipeline_batch_size"])
        # The model served this job only: 30 frames went through every stage once.
        lat = m["stream_pipeline_stage_latency_seconds"]
        assert {s.labels["stage"] for s in lat} == STAGES
        for stage in STAGES:
            _, count = histogram(lat, model=model, stage=stage)
            assert count == 30, stage
        total_sum = value(m, "stream_pipeline_stage_latency_seconds_sum", stage="total")
        assert total_sum > 0
        _, batches = histogram(m["stream_pipeline_batch_size"], model=model)
        assert value(m, "stream_pipeline_batch_size_sum", model=model) == 30
        assert 30 / 4 <= batches <= 30  # the service's max batch is 4
        src = {"job": clip_id, "source": "clip"}
        assert value(m, "stream_pipeline_source_frames_total", **src) == 30
        assert value(m, "stream_pipeline_source_results_total", **src) == 30
        assert value(m, "stream_pipeline_job_state", job=clip_id, state="completed") == 1
        assert value(m, "stream_pipeline_sink_delivered_total", job=clip_id) == 30

        cam = {"id": "cam-1", "url": LIVE, "buffer_policy": "drop_oldest"}
        live = spec("gate", tiny_package, cam)
        live_id = (await c.post("/jobs", json=live)).json()["id"]
        await wait_for(service, live_id, lambda s: frames(s, "cam-1") >= 10)
        m = await scrape(service)
        ids = {"job": live_id, "source": "cam-1"}
        depth = value(m, "stream_pipeline_source_ring_depth", **ids)
        assert 0 <= depth <= 8  # bounded by the ring
        assert value(m, "stream_pipeline_source_decoder_restarts_total", **ids) == 0
        assert value(m, "stream_pipeline_source_reconnects_total", **ids) == 0
        assert value(m, "stream_pipeline_source_outages_total", **ids) == 0
        for family in ("stream_pipeline_source_frames", "stream_pipeline_source_ring_depth"):
            assert {s.labels["job"] for s in m[family]} == {clip_id, live_id}
        pending = m["stream_pipeline_sink_pending"]
        assert {s.labels["type"] for s in pending} == {"jsonl"}
        assert value(m, "stream_pipeline_worker_sources") == 1

        # Its decoder child killed: restarted, and counted in the metric as in the status.
        (child,) = decoder_pids()
        os.kill(child, signal.SIGKILL)
        status = await wait_for(
            service, live_id, lambda s: s["sources"][0]["decoder_restarts"] >= 1
        )
        m = await scrape(service)
        restarts = value(m, "stream_pipeline_source_decoder_restarts_total", **ids)
        assert restarts == status["sources"][0]["decoder_restarts"]

        # Stopped: every frame it segmented is in the histograms, beside the file job's 30.
        stopped = (await c.delete(f"/jobs/{live_id}")).json()
        m = await scrape(service)
        results = value(m, "stream_pipeline_source_results_total", **ids)
        assert results == stopped["sinks"][0]["delivered"] > 0
        for stage in STAGES:
            _, count = histogram(m["stream_pipeline_stage_latency_seconds"], stage=stage)
            assert count == 30 + results, stage
        assert value(m, "stream_pipeline_batch_size_sum") == 30 + results
        # Labels are ids: no URL (and so no credential) can reach one.
        for samples in m.values():
            for s in samples:
                assert not any("://" in v for v in s.labels.values()), s


def blackhole() -> socket.socket:
    """A listening socket that never accepts: an RTSP open to it waits (a camera that hangs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    return sock


async def ready(svc: Service) -> tuple[int, dict[str, Any]]:
    resp = await svc.client.get("/readyz")
    return resp.status_code, resp.json()


async def test_readyz_waits_for_the_jobs_resumed_at_start(
    tmp_path: Path, tiny_package: Path
) -> None:
    hole = blackhole()
    port = hole.getsockname()[1]
    url = f"rtsp://viewer:hunter2@127.0.0.1:{port}/x"
    hanging = JobSpec.model_validate(spec("hangs", tiny_package, {"id": "door", "url": url}))
    running = spec("runs", tiny_package, {"id": "cam-1", "url": LIVE})
    try:
        async with asyncio.timeout(90):
            declared = (hanging,)
            async with serve_jobs(tmp_path / "s", tmp_path / "o", declared=declared) as svc:
                (hangs,) = [j["id"] for j in (await svc.client.get("/jobs")).json()]
                # Its camera neither answers nor refuses (for a few seconds, until the socket
                # timeout): its first start goes on, and the service says so.
                status, body = await ready(svc)
                assert status == 503, body
                assert body["status"] == "not ready"
                assert f"job {hangs} is " in body["reason"], body
                assert "hunter2" not in str(body)
                # The camera refuses now: "hangs" failed its first start (it will retry), and
                # the service is ready.
                hole.close()
                await wait_for(svc, hangs, lambda s: s["error"] is not None)
                async with asyncio.timeout(20):
                    while True:
                        status, body = await ready(svc)
                        if status == 200:
                            break
                        await asyncio.sleep(0.1)
                assert body == {"status": "ready", "reason": None}
                # A running job's model is loaded and its worker runs; a job waiting for its
                # camera does not make the service unready again.
                runs = (await svc.client.post("/jobs", json=running)).json()["id"]
                await wait_for(svc, runs, lambda s: s["state"] == "running")
                for _ in range(10):
                    assert await ready(svc) == (200, {"status": "ready", "reason": None})
                    await asyncio.sleep(0.1)
    finally:
        hole.close()


async def test_the_outage_of_a_restart_is_counted(tmp_path: Path, tiny_package: Path) -> None:
    job = spec("cam", tiny_package, {"id": "cam", "url": LIVE})
    state, out = tmp_path / "s", tmp_path / "o"
    async with asyncio.timeout(90):
        async with serve_jobs(state, out) as svc:
            job_id = (await svc.client.post("/jobs", json=job)).json()["id"]
            await wait_for(svc, job_id, lambda s: frames(s, "cam") >= 3)
        async with serve_jobs(state, out) as svc:  # resumed: out until its first frame
            closed: list[float] = []  # an outage still open grows: wait until it closed

            def outage_closed(status: dict[str, Any]) -> bool:
                closed.append(status["sources"][0]["outage_seconds"])
                return frames(status, "cam") >= 3 and len(closed) > 3 and closed[-4] == closed[-1]

            back = await wait_for(svc, job_id, outage_closed)
            m = await scrape(svc)
            ids = {"job": job_id, "source": "cam"}
            assert value(m, "stream_pipeline_source_outages_total", **ids) == 1
            seconds = value(m, "stream_pipeline_source_outage_seconds_total", **ids)
            assert seconds == back["sources"][0]["outage_seconds"] > 0
