"""The jobs API of ``serve --ray``: the same routes and bodies as the jobs service, plus
``GET /cluster`` (the actors and where each source runs) and the assignment an actor fetches
when it starts. Server-sent results are not relayed (frames never travel through Ray): a job's
results are in its sinks. ``/metrics`` gives the per-source and per-actor counters.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from stream_pipeline.cluster.config import RayConfig
from stream_pipeline.cluster.controller import Controller
from stream_pipeline.cluster.jobs import ENDED, ClusterJob
from stream_pipeline.cluster.worker import WorkerSettings
from stream_pipeline.errors import ConfigError
from stream_pipeline.jobs.routes import control_routes, error_response, run_control
from stream_pipeline.jobs.settings import JobConflict, JobsConfig, UnknownJob
from stream_pipeline.jobs.spec import JobSpec, JobStatus
from stream_pipeline.jobs.store import JobStore
from stream_pipeline.server.auth import check_token

__all__ = ["cluster_router"]


def cluster_router(config: JobsConfig, ray: RayConfig, token: str | None) -> APIRouter:
    """The routes around a :class:`Controller` that lives as long as the app serves."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        store = await asyncio.to_thread(JobStore, config.state_dir)
        settings = WorkerSettings(
            output_dir=str(config.output_dir),
            controller_url=ray.fetch_url,
            token=ray.token,
            isolate_decoders=config.isolate_decoders,
            watch_parent=True,  # an actor whose raylet died stops its parts at once
        )
        controller = Controller(store, config, ray, settings)
        holder.append(controller)
        try:
            await controller.start()
            yield {}
        finally:
            await controller.aclose()

    holder: list[Controller] = []
    router = APIRouter(lifespan=lifespan)

    def ctl(request: Request) -> Controller:
        check_token(request, token)
        if not holder or not holder[0].ready:
            raise HTTPException(503, "the jobs service is starting")
        return holder[0]

    def job(request: Request, job_id: str) -> ClusterJob:
        try:
            return ctl(request).get(job_id)
        except UnknownJob as exc:
            raise HTTPException(404, exc.args[0]) from None

    @router.post("/jobs", status_code=201, response_model=JobStatus)
    async def create(spec: JobSpec, request: Request, response: Response) -> JobStatus:
        """Create a job; its sources are placed on the cluster's actors (201)."""
        try:
            created = await ctl(request).create(spec)
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except ConfigError as exc:
            return error_response(422, str(exc))  # type: ignore[return-value]
        response.headers["Location"] = f"/jobs/{created.id}"
        return created.status()

    @router.get("/jobs", response_model=list[JobStatus])
    async def list_jobs(request: Request) -> list[JobStatus]:
        """Every job, oldest first."""
        return [j.status() for j in ctl(request).jobs.values()]

    @router.get("/jobs/{job_id}", response_model=JobStatus)
    async def show(job_id: str, request: Request) -> JobStatus:
        """One job: each source with the actor and node that run it."""
        return job(request, job_id).status()

    async def control(
        job_id: str, request: Request, action: Callable[[ClusterJob], Any]
    ) -> JobStatus:
        target = job(request, job_id)
        await run_control(action(target), target.message)
        return target.status()

    control_routes(router, control)

    @router.get("/jobs/{job_id}/results")
    async def results(job_id: str, request: Request) -> Response:
        """Not with ``--ray``: frames and results stay on the nodes; read the job's sinks."""
        job(request, job_id)
        raise HTTPException(
            501, "results over server-sent events are not relayed with serve --ray: "
            "read the job's sinks (JSONL, MQTT, webhook)",
        )  # fmt: skip

    @router.get("/cluster")
    async def cluster(request: Request) -> dict[str, Any]:
        """The actors (alive, node, pid, parts) and the cluster's slots."""
        return ctl(request).cluster()

    @router.get("/cluster/actors/{name}/assignment")
    async def assignment(name: str, request: Request) -> dict[str, Any]:
        """What actor ``name`` should run (it fetches this when it starts)."""
        version, parts = ctl(request).assignment(name)
        return {"version": version, "parts": parts}

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text format: per job and source, and per actor."""
        registry = CollectorRegistry()
        registry.register(_ClusterCollector(ctl(request)))
        body = generate_latest(registry)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once the stored jobs are loaded and the cluster answers; else 503 and why."""
        controller = holder[0] if holder else None
        reason = None
        if controller is None or not controller.ready:
            reason = "the jobs service is starting: connecting to the Ray cluster"
        elif controller.error is not None:
            reason = f"the Ray cluster: {controller.error}"
        elif controller.closing:
            reason = "the service is shutting down"
        if reason is None:
            return JSONResponse({"status": "ready", "reason": None})
        return JSONResponse({"status": "not ready", "reason": reason}, 503)

    return router


class _ClusterCollector(Collector):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    def collect(self) -> Iterator[Metric]:
        p = "stream_pipeline_"
        frames = CounterMetricFamily(
            p + "source_frames", "Frames decoded per source", labels=["job", "source"]
        )
        dropped = CounterMetricFamily(
            p + "source_dropped_frames", "Frames dropped per source", labels=["job", "source"]
        )
        moved = CounterMetricFamily(
            p + "source_moves", "Times a source was moved off a lost actor",
            labels=["job", "source"],
        )  # fmt: skip
        placed = GaugeMetricFamily(
            p + "actor_sources", "Sources placed on each actor", labels=["actor"]
        )
        alive = GaugeMetricFamily(p + "actor_alive", "1 while the actor answers", labels=["actor"])
        for job in self.controller.jobs.values():
            if job.state in ENDED:
                continue
            for s in job.status().sources:
                frames.add_metric([job.id, s.id], s.frames)
                dropped.add_metric([job.id, s.id], s.dropped)
                moved.add_metric([job.id, s.id], s.outages)
        view = self.controller.cluster()
        for actor in view["actors"]:
            placed.add_metric([actor["name"]], len(actor["parts"]))
            alive.add_metric([actor["name"]], 1.0 if actor["alive"] else 0.0)
        yield from (frames, dropped, moved, placed, alive)
