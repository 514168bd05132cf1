"""schemathesis against the jobs service's own ``/openapi.json`` over real HTTP: a bounded run,
no 5xx on any operation — once with the ids it makes up, once aimed at a job that exists."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok

from tests.jobs.conftest import serve_jobs
from tests.jobs.test_api import wait_for

pytestmark = pytest.mark.timeout(120)

# Bounded: a few examples per operation keeps the run to seconds on a small shared machine.
BOUNDED = settings(
    max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
LIVE = "synthetic://street?frames=0&realtime=1&width=64&height=48&fps=10"


class ServiceThread:
    """The jobs app (``serve_jobs``: uvicorn on a free loopback port) on an event loop of its
    own, so that schemathesis' blocking calls do not stall the server they test."""

    def __init__(self, root: Path, model: Path) -> None:
        self.root = root
        self.model = model
        self.url = ""
        self.job_id = ""
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="jobs-under-fuzz", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # reported by start() or stop()
            self._error = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with serve_jobs(self.root / "state", self.root / "out") as svc:
            self.url = str(svc.client.base_url)
            spec = {
                "name": "fuzzed",
                "model": str(self.model),
                "sources": [{"id": "seed", "url": LIVE}],
                "restart": "never",
            }
            created = await svc.client.post("/jobs", json=spec)
            assert created.status_code == 201, created.text
            self.job_id = created.json()["id"]
            await wait_for(svc, self.job_id, lambda s: s["state"] == "running")
            self._ready.set()
            await self._stop.wait()

    def start(self) -> ServiceThread:
        self._thread.start()
        if not self._ready.wait(60) or self._error is not None:
            raise AssertionError(f"the jobs service did not start: {self._error!r}")
        return self

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the jobs service did not stop within 60 s"
        if self._error is not None:
            raise self._error


@pytest.fixture
def jobs_service(tmp_path: Path, tiny_package: Path) -> Iterator[ServiceThread]:
    service = ServiceThread(tmp_path, tiny_package).start()
    try:
        yield service
    finally:
        service.stop()


def _fuzz(url: str, path_parameters: dict[str, str] | None = None) -> list[str]:
    """Every operation of the service's schema, valid and invalid inputs, a bounded number of
    each; the operations it ran (schemathesis' own pytest loader, ``from_fixture``, breaks on
    pytest 9, so the operations are walked here with hypothesis directly)."""
    schema = schemathesis.openapi.from_url(f"{url}/openapi.json", timeout=10)
    ran = []
    operations = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"the service's schema is invalid: {result}"
        operations.append(result.ok())
    # Pause, resume and stop last, so that every other operation meets the job running.
    last = ("POST /jobs/{job_id}/pause", "POST /jobs/{job_id}/resume", "DELETE /jobs/{job_id}")
    operations.sort(key=lambda op: last.index(op.label) if op.label in last else -1)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            strategy = operation.as_strategy(mode, path_parameters=path_parameters)

            @BOUNDED
            @given(case=strategy)
            def no_5xx(case: schemathesis.Case[Any]) -> None:
                # schemathesis reads an event stream (the results) for a few events, then stops.
                case.call_and_validate(checks=[not_a_server_error], timeout=10)

            try:
                no_5xx()
            except Unsatisfiable:
                # Nothing to get wrong (no parameters, no body): no invalid input exists.
                assert mode is GenerationMode.NEGATIVE, operation.label
        ran.append(operation.label)
    return ran


def test_no_server_error_with_made_up_ids(jobs_service: ServiceThread) -> None:
    ran = _fuzz(jobs_service.url)
    assert {"POST /jobs", "GET /jobs/{job_id}", "DELETE /jobs/{job_id}/sources/{source_id}"} <= set(
        ran
    )


def test_no_server_error_on_an_existing_job(jobs_service: ServiceThread) -> None:
    # Every {job_id} is the seeded job's: pause, resume, hot add and remove, results, stop.
    ran = _fuzz(jobs_service.url, {"job_id": jobs_service.job_id})
    assert ran[-1] == "DELETE /jobs/{job_id}" and "POST /jobs/{job_id}/sources" in ran
    # The service still answers after it, with the seeded job ended.
    shown = httpx.get(f"{jobs_service.url}/jobs/{jobs_service.job_id}", timeout=10)
    assert shown.status_code == 200, shown.text
    assert shown.json()["state"] in ("stopped", "completed", "failed"), shown.text
