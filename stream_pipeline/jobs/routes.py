"""The jobs API (DESIGN "Long-running jobs"; docs/jobs.md), ``/metrics`` and ``/readyz``.

:func:`jobs_router` is an ``APIRouter`` with a lifespan of its own (it opens the store, resumes
the jobs, and leaves them resumable on shutdown), so the server app includes it with one line.
:func:`create_jobs_app` is a FastAPI app of just these routes, around a running engine.
Every 4xx is ``{"error": "<field>: <what is wrong>", "errors": [{"field", "message"}]}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from stream_pipeline.consumers.base import SinkContext
from stream_pipeline.engine import Engine
from stream_pipeline.errors import ConfigError, SourceError
from stream_pipeline.jobs.metrics import render_metrics
from stream_pipeline.jobs.spec import JobSpec, JobStatus, SourceSpecModel
from stream_pipeline.jobs.store import JobStore
from stream_pipeline.jobs.supervisor import (
    JobConflict,
    JobRunner,
    JobsConfig,
    Supervisor,
    UnknownJob,
)
from stream_pipeline.logs import redact_credentials, set_ids
from stream_pipeline.server.auth import check_token

__all__ = [
    "control_routes",
    "create_jobs_app",
    "error_response",
    "install_jobs",
    "jobs_router",
    "not_ready",
    "run_control",
    "validation_error",
]


def jobs_router(engine: Engine, config: JobsConfig, token: str | None) -> APIRouter:
    """The jobs routes around ``engine``; the supervisor lives as long as the app serves."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        store = await asyncio.to_thread(JobStore, config.state_dir)
        supervisor = Supervisor(engine, store, config)
        holder.append(supervisor)
        try:
            await supervisor.start()
            # The jobs resumed (or declared) now: not ready until each has made its first start.
            resuming.extend(j for j in supervisor.jobs.values() if j.task is not None)
            yield {}
        finally:
            await supervisor.aclose()

    holder: list[Supervisor] = []
    resuming: list[JobRunner] = []
    router = APIRouter(lifespan=lifespan)

    def sup(request: Request) -> Supervisor:
        check_token(request, token)
        if not holder or not holder[0].ready:
            raise HTTPException(503, "the jobs service is starting")
        return holder[0]

    def job(request: Request, job_id: str) -> JobRunner:
        try:
            runner = sup(request).get(job_id)
        except UnknownJob as exc:
            raise HTTPException(404, exc.args[0]) from None
        set_ids(job=runner.id)  # this request's log records, and the threads it starts
        return runner

    @router.post("/jobs", status_code=201, response_model=JobStatus)
    async def create(spec: JobSpec, request: Request, response: Response) -> JobStatus:
        """Create a job and start it (201, ``Location: /jobs/{id}``)."""
        supervisor = sup(request)
        try:
            runner = await supervisor.create(spec)
        except JobConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except ConfigError as exc:
            return error_response(422, str(exc))  # type: ignore[return-value]
        response.headers["Location"] = f"/jobs/{runner.id}"
        return runner.status()

    @router.get("/jobs", response_model=list[JobStatus])
    async def list_jobs(request: Request) -> list[JobStatus]:
        """Every job, oldest first."""
        return [r.status() for r in sup(request).jobs.values()]

    @router.get("/jobs/{job_id}", response_model=JobStatus)
    async def show(job_id: str, request: Request) -> JobStatus:
        """One job."""
        return job(request, job_id).status()

    async def control(
        job_id: str, request: Request, action: Callable[[JobRunner], Any]
    ) -> JobStatus:
        runner = job(request, job_id)
        await run_control(action(runner), runner.message)
        return runner.status()

    control_routes(router, control)

    @router.get("/jobs/{job_id}/results")
    async def results(job_id: str, request: Request) -> StreamingResponse:
        """Server-sent events, one prediction JSON per frame; a slow client gets the latest."""
        runner = job(request, job_id)
        if runner.state in ("completed", "failed", "stopped"):
            raise HTTPException(409, f"job {job_id} is {runner.state}: it has no results to come")
        sub = engine.subscribe(job=runner.engine_job, delivery="latest", buffer=1)
        return StreamingResponse(_events(runner, sub), media_type="text/event-stream")

    @router.get("/metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        """Prometheus text format."""
        body = render_metrics(sup(request))
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        """200 once the stored jobs were resumed, while every loaded model's worker runs; else
        503 with the reason."""
        reason = not_ready(holder[0] if holder else None, engine, resuming)
        if reason is None:
            return JSONResponse({"status": "ready", "reason": None})
        return JSONResponse({"status": "not ready", "reason": redact_credentials(reason)}, 503)

    return router


Control = Callable[[str, Request, Callable[[Any], Any]], Awaitable[JobStatus]]


def control_routes(router: APIRouter, control: Control) -> None:
    """Pause, resume, stop and hot add/remove of a source on ``router``: each runs ``control``
    (find the job, apply the action, answer its status), the same for the jobs service and
    ``serve --ray``."""

    @router.post("/jobs/{job_id}/pause", response_model=JobStatus)
    async def pause(job_id: str, request: Request) -> JobStatus:
        """Pause: sources stop, sinks stay open."""
        return await control(job_id, request, lambda r: r.pause())

    @router.post("/jobs/{job_id}/resume", response_model=JobStatus)
    async def resume(job_id: str, request: Request) -> JobStatus:
        """Resume a paused job."""
        return await control(job_id, request, lambda r: r.resume())

    @router.delete("/jobs/{job_id}", response_model=JobStatus)
    async def stop(job_id: str, request: Request) -> JobStatus:
        """Stop the job; its sinks are flushed and closed when this answers."""
        return await control(job_id, request, lambda r: r.stop())

    @router.post("/jobs/{job_id}/sources", status_code=201, response_model=JobStatus)
    async def add_source(job_id: str, source: SourceSpecModel, request: Request) -> JobStatus:
        """Hot-add a source to the job."""
        return await control(job_id, request, lambda r: r.add_source(source))

    @router.delete("/jobs/{job_id}/sources/{source_id}", response_model=JobStatus)
    async def remove_source(job_id: str, source_id: str, request: Request) -> JobStatus:
        """Hot-remove a source (its buffered frames finish)."""
        return await control(job_id, request, lambda r: r.remove_source(source_id))


async def run_control(action: Awaitable[Any], message: Callable[[BaseException], str]) -> None:
    """Await a job's control ``action``, its refusals as HTTP errors (409, 404, 422);
    ``message`` words an error as the job does (credentials redacted)."""
    try:
        await action
    except JobConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except UnknownJob as exc:
        raise HTTPException(404, exc.args[0]) from None
    except SourceError as exc:
        # A hot-added source that cannot be opened (missing file, 401): the request's fault,
        # and the job goes on without it.
        raise HTTPException(422, f"url: {message(exc)}") from None
    except ConfigError as exc:
        raise HTTPException(422, message(exc)) from None


def not_ready(
    supervisor: Supervisor | None, engine: Engine, resuming: list[JobRunner]
) -> str | None:
    """Why the service is not ready, or ``None``. ``resuming``: the jobs run at start that have
    not yet made their first start (those that have are removed, so a job that later waits on a
    camera down does not make the service unready)."""
    if supervisor is None or not supervisor.ready:
        return "the jobs service is starting: stored jobs not resumed yet"
    if engine.error is not None:
        return f"the engine stopped: {engine.error}"
    if supervisor.closing:
        return "the service is shutting down"
    resuming[:] = [
        j
        for j in resuming
        if j.state in ("queued", "starting") and j.error is None and j.restarts == 0
    ]
    if resuming:
        job = resuming[0]
        return f"job {job.id} is {job.state}: resumed at start, its model and sources are opening"
    loaded = engine.models.entries()
    for entry in loaded:
        for thread in entry.threads:
            if thread.done.done():
                model = entry.model.package.model_id
                return f"the worker of model {model} is not running ({thread.name} ended)"
    for job in supervisor.jobs.values():
        if job.state != "running":
            continue
        for handle in job.handles.values():
            if handle.model not in loaded:
                return f"job {job.id}: model {handle.model.model.package.model_id} is not loaded"
    return None


async def _events(runner: JobRunner, sub: Any) -> AsyncIterator[bytes]:
    from stream_pipeline.consumers.files import prediction_json

    context: SinkContext | None = None
    try:
        yield b": results of job " + runner.id.encode() + b"\n\n"
        async for result in sub:
            if context is None:
                handles = list(runner.handles.values())
                if not handles:
                    continue
                model = handles[0].model.model
                package = model.package
                context = SinkContext(package.model_id, model.class_names, package.background_id)
            # RLE encoding takes milliseconds at 1080p: off the loop.
            data = await asyncio.to_thread(prediction_json, result, context, True)
            yield b"data: " + data + b"\n\n"
    finally:
        await sub.aclose()


def error_response(
    status: int, message: str, errors: list[dict[str, str]] | None = None
) -> JSONResponse:
    """A 4xx body: ``{"error": message, "errors": [{"field", "message"}]}``, the field
    being what ``message`` names before its first colon unless ``errors`` are given."""
    field, _, _ = message.partition(":")
    errors = errors or [{"field": field.strip(), "message": message}]
    return JSONResponse({"error": message, "errors": errors}, status)


def validation_error(exc: RequestValidationError) -> JSONResponse:
    """A 422 naming each field: ``sources.0.id: String should match pattern …``."""
    errors = []
    for e in exc.errors():
        loc = [str(p) for p in e.get("loc", ()) if p != "body"]
        # Drop the discriminator tag pydantic adds inside a tagged union (sinks.0.jsonl.path).
        loc = [
            p
            for i, p in enumerate(loc)
            if not (i > 0 and loc[i - 1].isdigit() and p in ("jsonl", "video", "webhook", "mqtt"))
        ]
        msg = str(e.get("msg", "")).removeprefix("Value error, ")
        head, sep, rest = msg.partition(": ")
        if not loc and sep and " " not in head:  # a whole-spec check: "<field>: <why>"
            loc, msg = [head], rest
        if e.get("type") == "json_invalid":
            loc, msg = ["body"], f"malformed JSON: {e.get('ctx', {}).get('error', msg)}"
        field = ".".join(loc) or "body"
        errors.append({"field": field, "message": msg})
    text = "; ".join(f"{x['field']}: {x['message']}" for x in errors)
    return JSONResponse({"error": text, "errors": errors}, 422)


def create_jobs_app(engine: Engine, config: JobsConfig, token: str | None = None) -> FastAPI:
    """A FastAPI app of the jobs routes only (the server app includes :func:`jobs_router`)."""
    app = FastAPI(title="stream_pipeline jobs")
    install_jobs(app, engine, config, token)

    @app.exception_handler(HTTPException)
    async def worded(request: Request, exc: HTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    return app


def install_jobs(app: FastAPI, engine: Engine, config: JobsConfig, token: str | None) -> None:
    """Add the jobs routes to ``app``, with 422s that name each field (the server app's one
    line for the jobs service); with ``config.cluster`` (``serve --ray``) those of the cluster's
    controller instead."""
    if config.cluster is not None:
        from stream_pipeline.cluster.routes import cluster_router

        app.include_router(cluster_router(config, config.cluster, token))
    else:
        app.include_router(jobs_router(engine, config, token))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return validation_error(exc)
