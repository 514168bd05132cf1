"""The supervisor: every job of the service on the one shared engine, resumed after a restart.

Each job is a :class:`~stream_pipeline.jobs.runner.JobRunner` task. States and checkpoints are
written to the :class:`~stream_pipeline.jobs.store.JobStore`; on start every job that was
queued, starting or running is run again (a paused one stays paused), and the service's
heartbeat tells how long it was down (the outages of live sources).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets

from stream_pipeline.engine import Engine
from stream_pipeline.jobs.outage import Outages
from stream_pipeline.jobs.runner import JobRunner
from stream_pipeline.jobs.settings import (
    JobConflict,
    JobsConfig,
    UnknownJob,
    check_sources_free,
)
from stream_pipeline.jobs.spec import JobSpec
from stream_pipeline.jobs.store import JobStore
from stream_pipeline.logs import job_context
from stream_pipeline.sources.isolated import start_decoder_server

__all__ = ["JobConflict", "JobRunner", "JobsConfig", "Supervisor", "UnknownJob"]

_ACTIVE = ("queued", "starting", "running", "paused")
_HEARTBEAT = 1.0  # seconds between the service's heartbeats in the store


class Supervisor:
    """Every job of the service, on one engine. ``start()`` resumes; ``aclose()`` leaves them
    resumable."""

    def __init__(self, engine: Engine, store: JobStore, config: JobsConfig) -> None:
        self.engine = engine
        self.store = store
        self.config = config
        self.jobs: dict[str, JobRunner] = {}
        self.closing = False
        self.ready = False
        self._heartbeat: asyncio.Task[None] | None = None

    def annotator(self, model: str) -> object:
        """A mask annotator for ``model`` (loads its package; run it off the loop)."""
        from stream_pipeline.consumers.visualize import MaskAnnotator
        from stream_pipeline.model.registry import resolve_package

        package = resolve_package(model, self.engine.registry)
        return MaskAnnotator.for_classes(
            package.class_names, package.colors, package.background_id, 0.5
        )

    async def start(self) -> None:
        """Load the stored jobs and run again each one that was active."""
        self.config.output_dir.mkdir(parents=True, exist_ok=True)
        if self.config.isolate_decoders:
            # The decoders' forkserver imports PyAV and numpy once: not on the first job's path.
            await asyncio.to_thread(start_decoder_server)
        down_since = await asyncio.to_thread(self.store.last_beat)
        outages = await asyncio.to_thread(self.store.outages)
        for record in await self.store.ajobs():
            runner = JobRunner(self, record)
            runner.outages = Outages(outages.get(record.id))
            self.jobs[record.id] = runner
            if record.state in _ACTIVE:
                if down_since is not None and record.state != "paused":
                    live = [s.id for s in record.spec.sources if runner.is_live(s)]
                    runner.outages.begin(live, down_since)
                self._launch(runner)
        await self.store.abeat()
        self._heartbeat = asyncio.get_running_loop().create_task(self._beat(), name="heartbeat")
        names = {r.spec.name for r in self.jobs.values()}
        for spec in self.config.declared:
            if spec.name not in names:
                await self.create(spec)
        self.ready = True

    async def _beat(self) -> None:
        # How long the service was down is measured from the last beat before it went.
        while True:
            await asyncio.sleep(_HEARTBEAT)
            with contextlib.suppress(Exception):  # a busy disk must not end the heartbeat
                await self.store.abeat()

    def _launch(self, runner: JobRunner) -> None:
        # Every log record of the job's task, and of the threads it starts, names the job.
        context = job_context(runner.id)
        loop = asyncio.get_running_loop()
        runner.task = loop.create_task(runner.run(), name=f"job-{runner.id}", context=context)

    def check_free(self, source_ids: list[str]) -> None:
        """:class:`JobConflict` if an active job already has one of ``source_ids``, or if they
        would take the service beyond ``max_sources``."""
        active = [(r.id, r.spec) for r in self.jobs.values() if r.state in _ACTIVE]
        check_sources_free(active, source_ids, self.config.max_sources)

    async def create(self, spec: JobSpec, job_id: str | None = None) -> JobRunner:
        """Check what the spec alone cannot (paths after symlinks, ids in use); store; run.

        ``job_id``: a given id (a ``serve --ray`` actor names its sub-jobs after their parts);
        by default a fresh random one."""
        from stream_pipeline.jobs.spec import resolve_output

        for i, sink in enumerate(spec.sinks):
            path = getattr(sink, "path", None)
            if path is not None:
                resolve_output(self.config.output_dir, path, f"sinks.{i}.path")
        self.check_free([s.id for s in spec.sources])
        job_id = job_id or secrets.token_hex(4)
        runner = JobRunner(self, await self.store.ainsert(job_id, spec, "queued"))
        self.jobs[job_id] = runner
        self._launch(runner)
        return runner

    async def forget(self, job_id: str) -> None:
        """Drop an ended job from the service and its store (an actor's removed part)."""
        runner = self.jobs.pop(job_id, None)
        if runner is not None:
            await asyncio.to_thread(self.store.delete, job_id)

    def get(self, job_id: str) -> JobRunner:
        """The job ``job_id``; :class:`UnknownJob` otherwise."""
        runner = self.jobs.get(job_id)
        if runner is None:
            raise UnknownJob(f"no job {job_id!r}")
        return runner

    async def aclose(self) -> None:
        """Stop every job without recording it as stopped: the next start resumes them."""
        self.closing = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
        tasks = [r.task for r in self.jobs.values() if r.task is not None]
        for runner in self.jobs.values():
            runner.wake.set()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(self.store.close)
