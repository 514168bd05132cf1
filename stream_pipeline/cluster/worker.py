"""What one actor runs: an engine and a local supervisor whose jobs are the actor's parts.

:class:`StreamWorker` holds no Ray: :mod:`.actor` wraps it. Its assignment (part id → part spec)
comes from the controller only — :meth:`StreamWorker.apply` with the controller's version, and at
start a GET of ``/cluster/actors/{name}/assignment`` from the service — never from constructor
arguments, since Ray runs the constructor again with the original arguments when it restarts the
actor. Applying is idempotent: parts not yet running start, parts no longer assigned stop (sinks
flushed), the rest are left alone. A part is a sub-job of the local supervisor named by its part
id, so a file part resumes after the last line its JSONL holds (the jobs service's resume rule),
wherever it ran before. The local store is a fresh directory per actor process: what survives
a restart is what the controller assigns and what the sinks made durable (JSONL files, and the
remote sinks' spools under ``<output dir>/.spool``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_pipeline.cluster.parts import assignment_version
from stream_pipeline.config import read_environment
from stream_pipeline.engine import Engine
from stream_pipeline.jobs.settings import JobsConfig
from stream_pipeline.jobs.spec import JobSpec
from stream_pipeline.jobs.store import JobStore
from stream_pipeline.jobs.supervisor import Supervisor

__all__ = ["StreamWorker", "WorkerSettings"]

log = logging.getLogger(__name__)
_ENDED = ("completed", "failed", "stopped")


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What every actor of a service is built with (the same for all: no assignment here)."""

    output_dir: str  # where file sinks write on this node (a shared volume keeps file jobs whole)
    controller_url: str | None = None  # the service, to fetch the assignment at start
    token: str | None = field(default=None, repr=False)
    isolate_decoders: bool = True
    device: str = "auto"
    threads: int | None = None
    max_batch: int = 4
    # A part must never run on two actors at once (a shared JSONL would get lines twice). An
    # actor process outlives its raylet: it answers calls until Ray marks the node dead, 12 s
    # with default health checks, and runs on after that. With ``watch_parent`` an actor whose
    # raylet died (its parent process changed) stops its parts and exits at once.
    watch_parent: bool = False


class StreamWorker:
    """One actor's engine and parts; every method runs on the actor's event loop."""

    def __init__(self, name: str, settings: WorkerSettings, node: str = "", address: str = ""):
        self.name = name
        self.settings = settings
        self.node = node  # the Ray node id and address the actor runs on (for the status)
        self.address = address
        self.reconstructed = False
        self.version = ""  # of the assignment applied last ("" until one is)
        self.engine: Engine | None = None
        self.sup: Supervisor | None = None
        self._state_dir = ""
        self._apply = asyncio.Lock()  # one apply at a time: the controller's and the fetched
        self.refused: dict[str, str] = {}  # part id → why it could not be created here
        self.started_at = time.time()
        # Counts status snapshots: the controller keeps the newest of answers that arrive out
        # of order (a status call and an apply run concurrently).
        self._seq = 0
        self._parent = os.getppid()
        self._fence: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Open the engine and the local supervisor, then fetch the assignment if the service
        can be reached (else the controller's next poll applies it)."""
        self._state_dir = tempfile.mkdtemp(prefix=f"sp-{self.name}-")
        self.engine = Engine(
            device=self.settings.device,
            threads=self.settings.threads,
            max_batch=self.settings.max_batch,
            registry=read_environment().models_dir,
        )
        await self.engine.__aenter__()
        store = await asyncio.to_thread(JobStore, self._state_dir)
        config = JobsConfig(
            state_dir=Path(self._state_dir),
            output_dir=Path(self.settings.output_dir),
            isolate_decoders=self.settings.isolate_decoders,
            # Not in the per-process state dir: a restarted actor, or the actor a part moves to
            # when the output dir is shared, delivers the backlog its predecessor spooled.
            spool_root=Path(self.settings.output_dir) / ".spool",
        )
        self.sup = Supervisor(self.engine, store, config)
        await self.sup.start()
        if self.settings.watch_parent:
            self._fence = asyncio.get_running_loop().create_task(self._fencing(), name="fence")
        if self.settings.controller_url:
            with contextlib.suppress(Exception):  # unreachable: the controller pushes instead
                version, parts = await asyncio.to_thread(self._fetch)
                await self.apply(version, parts)

    def _fetch(self) -> tuple[str, dict[str, str]]:
        url = f"{self.settings.controller_url}/cluster/actors/{self.name}/assignment"
        request = urllib.request.Request(url)
        if self.settings.token:
            request.add_header("Authorization", f"Bearer {self.settings.token}")
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.load(response)
        return str(body["version"]), {str(k): str(v) for k, v in body["parts"].items()}

    async def apply(self, version: str, parts: dict[str, str]) -> dict[str, Any]:
        """Run exactly ``parts`` (part id → spec JSON); idempotent. Returns :meth:`status`."""
        sup = self.sup
        assert sup is not None
        if assignment_version(parts) != version:
            raise ValueError(f"assignment {version} does not match its parts")
        async with self._apply:
            for pid in [p for p in sup.jobs if p not in parts]:
                await self._remove(pid)
            for pid, wire in parts.items():
                runner = sup.jobs.get(pid)
                if runner is not None and runner.state in ("failed", "stopped"):
                    await sup.forget(pid)  # assigned again: a fresh start (the restart policy)
                    runner = None
                if runner is None:
                    spec = JobSpec.model_validate_json(wire)
                    try:
                        await sup.create(spec, job_id=pid)
                    except Exception as exc:  # a path that leaves the node's output dir, …
                        log.error("actor %s: part %s refused: %s", self.name, pid, exc)
                        self.refused[pid] = str(exc).splitlines()[0] if str(exc) else repr(exc)
                        continue
                self.refused.pop(pid, None)
            self.version = version
        return self.status()

    async def _fencing(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            if os.getppid() != self._parent:
                log.error("actor %s: its raylet is gone: stopping its parts and exiting", self.name)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._drop_all(), 5)
                os._exit(1)  # Ray restarts it where a slot is free

    async def _remove(self, pid: str) -> None:
        """Stop the part (its sinks flushed) unless it ended, and forget it."""
        sup = self.sup
        assert sup is not None
        runner = sup.jobs[pid]
        if runner.state not in _ENDED:
            await runner.stop()
        await sup.forget(pid)

    async def _drop_all(self) -> None:
        """Stop and forget every part; the next apply starts what is assigned then."""
        sup = self.sup
        assert sup is not None
        async with self._apply:
            for pid in list(sup.jobs):
                await self._remove(pid)
            self.version = ""  # differs from any assignment: the controller pushes again

    def status(self) -> dict[str, Any]:
        """The actor now: who and where, the applied version, and every part's job status."""
        sup = self.sup
        parts = {}
        if sup is not None:
            parts = {pid: r.status().model_dump(mode="json") for pid, r in sup.jobs.items()}
        self._seq += 1
        return {
            "seq": self._seq,
            "name": self.name,
            "node": self.node,
            "address": self.address,
            "pid": os.getpid(),
            "reconstructed": self.reconstructed,
            "version": self.version,
            "started_at": self.started_at,
            "engine_error": None if self.engine is None or self.engine.error is None
            else str(self.engine.error),
            "parts": parts,
            "refused": dict(self.refused),
            "cost": self._cost(),
        }  # fmt: skip

    def _cost(self) -> dict[str, float]:
        """Frames its workers processed and their time on them, over every model it loaded
        (the controller derives streams per actor from it, see ``placement.capacity``)."""
        frames, seconds = 0, 0.0
        if self.engine is not None:
            for meters in self.engine.models.meters().values():
                n, busy = meters.cost()
                frames, seconds = frames + n, seconds + busy
        return {"frames": frames, "seconds": seconds}

    async def aclose(self) -> None:
        """Stop the parts as a closing service does (resumable), close the engine."""
        if self._fence is not None:
            self._fence.cancel()
        if self.sup is not None:
            await self.sup.aclose()
        if self.engine is not None:
            await self.engine.aclose()
        shutil.rmtree(self._state_dir, ignore_errors=True)
