"""Fixtures of the jobs tests: the jobs app on uvicorn on a free loopback port, an httpx client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from stream_pipeline.engine import Engine
from stream_pipeline.jobs.routes import create_jobs_app
from stream_pipeline.jobs.spec import JobSpec
from stream_pipeline.jobs.supervisor import JobsConfig
from tests.jobs.processes import Serve


@dataclass
class Service:
    """A running jobs app: its client, its engine and its directories."""

    client: httpx.AsyncClient
    engine: Engine
    state_dir: Path
    output_dir: Path


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


@contextlib.asynccontextmanager
async def serve_jobs(
    state_dir: Path,
    output_dir: Path,
    declared: tuple[JobSpec, ...] = (),
    max_sources: int | None = None,
) -> AsyncIterator[Service]:
    """The jobs app around a CPU engine, served by uvicorn on 127.0.0.1 (a free port)."""
    async with Engine(device="cpu", threads=1) as engine:
        config = JobsConfig(
            state_dir,
            output_dir,
            backoff_initial=0.2,
            backoff_max=1.0,
            declared=declared,
            max_sources=max_sources,
        )
        app = create_jobs_app(engine, config)
        sock = free_socket()
        port = sock.getsockname()[1]
        server = uvicorn.Server(
            uvicorn.Config(app, lifespan="on", log_level="warning", access_log=False)
        )
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            while not server.started:
                if task.done():
                    task.result()
                await asyncio.sleep(0.02)
            base = f"http://127.0.0.1:{port}"
            async with httpx.AsyncClient(base_url=base, timeout=20.0) as client:
                yield Service(client, engine, state_dir, output_dir)
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 30)
            sock.close()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    async with serve_jobs(tmp_path / "state", tmp_path / "out") as svc:
        yield svc


@pytest.fixture
def serve_group(tmp_path: Path, tiny_package: Path) -> Iterator[Any]:
    """``start()`` runs ``stream-pipeline serve`` on one state dir (again after a kill); every
    process group started is killed at the end."""
    started: list[Serve] = []

    def start() -> Serve:
        s = Serve(tmp_path / "state", tmp_path / "out", tiny_package)
        started.append(s)
        return s

    yield start
    for s in started:
        s.kill()
