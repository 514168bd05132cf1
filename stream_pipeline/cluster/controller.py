"""The controller of ``serve --ray``: it places the jobs' parts on the actors and keeps them there.

The SQLite store is the truth of what should run where (specs, states, a placement per source);
the actors only run what they are told. One loop, every ``poll_interval``:

1. **Actors.** One named actor per ``stream_pipeline`` slot the cluster has ever offered
   (``worker-0``, ``worker-1``, …), found by name or created (``get_if_exists``): a restarted
   service adopts the actors that run, and creates no second one. Each is polled with
   ``status()``; one that has not answered for ``liveness_timeout``, or whose node Ray marks
   dead, is *lost*.
2. **Placement.** A part on a lost actor is taken off it (the outage of that source starts at
   the actor's last answer); every part that should run and has no actor is placed on the alive
   actor with the fewest parts that still has room (``max_sources`` per actor).
3. **Assignment.** Each alive actor whose applied version differs from what it should run gets
   an ``apply`` of its whole assignment (idempotent); a restarted actor also fetches it itself.
4. **States.** A part that completed is marked done (never placed again); a part that failed
   fails its job; a job whose parts all run is ``running``, all done ``completed``.

A file part moved to another actor resumes after the last complete line of its JSONL (the jobs
service's rule): with the output directory on a volume every node mounts, the file ends with
every frame exactly once across node loss.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from typing import Any

from stream_pipeline.cluster.actors import ActorView
from stream_pipeline.cluster.config import RayConfig
from stream_pipeline.cluster.jobs import ENDED, ClusterJob
from stream_pipeline.cluster.parts import Part, assignment_version, parts_of
from stream_pipeline.cluster.placement import capacity, source_rates
from stream_pipeline.cluster.worker import WorkerSettings
from stream_pipeline.jobs.settings import JobsConfig, UnknownJob, check_sources_free
from stream_pipeline.jobs.spec import JobSpec, resolve_output
from stream_pipeline.jobs.store import JobStore

__all__ = ["Controller"]

log = logging.getLogger(__name__)
_SLOTS_EVERY = 5.0  # seconds between looks at the cluster's slots and named actors
_SETTLE_TIMEOUT = 30.0  # how long a stop or pause waits for the actors to let the parts go


class Controller:
    """See the module docstring. ``start()`` connects and adopts; ``aclose()`` disconnects
    (the actors and their parts go on running, for the next start to adopt)."""

    def __init__(
        self, store: JobStore, config: JobsConfig, ray: RayConfig, settings: WorkerSettings
    ) -> None:
        self.store = store
        self.config = config
        self.ray_config = ray
        self.settings = settings
        self.jobs: dict[str, ClusterJob] = {}
        self.actors: dict[str, ActorView] = {}
        self.placed: dict[tuple[str, str], str] = {}  # (job, source) → actor name
        self.done: set[tuple[str, str]] = set()
        self.ran_on: dict[tuple[str, str], str] = {}  # (job, source) → the actor it ran on last
        self.outages: dict[tuple[str, str], tuple[int, float]] = {}
        self.lost_since: dict[tuple[str, str], float] = {}  # a moved live part: its outage start
        self.ready = False
        self.closing = False
        self.error: str | None = None  # why the controller cannot reach the cluster
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._dead_nodes: set[str] = set()
        self._slots = 0
        self._last_slots = 0.0
        self._started = 0.0

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        """Connect to the cluster, load the jobs and placements, adopt the actors, loop."""
        await asyncio.to_thread(self._connect)
        self._started = time.time()
        outages = await asyncio.to_thread(self.store.outages)
        for record in await self.store.ajobs():
            job = ClusterJob(
                self, record.id, record.spec, record.state, record.error, record.created_at
            )
            self.jobs[record.id] = job
            for sid, (count, seconds) in outages.get(record.id, {}).items():
                self.outages[(record.id, sid)] = (count, seconds)
        for key, actor in (await asyncio.to_thread(self.store.placements)).items():
            if actor is None:
                self.done.add(key)
            else:
                self.placed[key] = self.ran_on[key] = actor
        await self._refresh_actors()
        names = {j.spec.name for j in self.jobs.values()}
        for spec in self.config.declared:
            if spec.name not in names:
                await self.create(spec)
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="ray-controller")
        self.ready = True

    def _connect(self) -> None:
        import ray

        ray.init(
            address=self.ray_config.address,
            namespace=self.ray_config.namespace,
            logging_level=logging.WARNING,
            log_to_driver=False,
            configure_logging=False,
        )

    async def aclose(self) -> None:
        """Stop the loop and disconnect; the detached actors keep their parts running."""
        self.closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for view in self.actors.values():
            view.cancel()
        import ray

        await asyncio.to_thread(ray.shutdown)
        await asyncio.to_thread(self.store.close)

    # -- the API's calls -------------------------------------------------------------------

    def wake(self) -> None:
        """Run the next round now (a job changed)."""
        self._wake.set()

    def check_free(self, source_ids: list[str]) -> None:
        """:class:`JobConflict` if an active job already has one of ``source_ids``, or if they
        would take the service beyond ``--max-sources``."""
        active = [(j.id, j.spec) for j in self.jobs.values() if j.state not in ENDED]
        check_sources_free(active, source_ids, self.config.max_sources)

    async def create(self, spec: JobSpec) -> ClusterJob:
        """Check, store, and have it placed on the next round."""
        job_id = secrets.token_hex(4)
        for part in parts_of(job_id, spec):
            for i, sink in zip(part.sink_index, part.spec.sinks, strict=True):
                path = getattr(sink, "path", None)
                if path is not None:
                    resolve_output(self.config.output_dir, path, f"sinks.{i}.path")
        self.check_free([s.id for s in spec.sources])
        record = await self.store.ainsert(job_id, spec, "queued")
        job = ClusterJob(self, job_id, spec, "queued", None, record.created_at)
        self.jobs[job_id] = job
        self.wake()
        return job

    def get(self, job_id: str) -> ClusterJob:
        """The job ``job_id``; :class:`UnknownJob` otherwise."""
        job = self.jobs.get(job_id)
        if job is None:
            raise UnknownJob(f"no job {job_id!r}")
        return job

    async def set_state(self, job: ClusterJob, state: str, error: str | None = None) -> None:
        """Record a job's state (and wake the loop)."""
        job.state, job.error = state, error
        await self.store.aset_state(job.id, state, error)
        self.wake()

    async def set_spec(self, job: ClusterJob, spec: JobSpec) -> None:
        """Record a job's spec."""
        await self.store.aset_spec(job.id, spec)

    async def settle(self, job: ClusterJob) -> None:
        """Wait until no actor runs a part of ``job`` it should not (sinks flushed), bounded."""
        self.wake()
        deadline = time.monotonic() + _SETTLE_TIMEOUT
        while time.monotonic() < deadline:
            wanted = {p.id for p in self._wanted_parts(job)}
            stray = [
                pid
                for view in self.actors.values()
                if view.status is not None and view.alive(time.time(), self._timeout)
                for pid in view.status["parts"]
                if pid.split(".", 1)[0] == job.id and pid not in wanted
            ]
            if not stray:
                return
            self.wake()  # collect the actors' answers now, not at the next poll
            await asyncio.sleep(0.1)
        log.warning("job %s: actors still run parts they were told to stop", job.id)

    # -- what the status shows --------------------------------------------------------------

    def where(self, job_id: str, source_id: str) -> ActorView | None:
        """The actor a source runs on, if placed."""
        name = self.placed.get((job_id, source_id))
        return self.actors.get(name) if name else None

    def ran_on_address(self, job_id: str, source_id: str) -> str | None:
        """The node address of the actor a source ran on last (placed or not)."""
        name = self.ran_on.get((job_id, source_id))
        view = self.actors.get(name) if name else None
        return view.address if view is not None else None

    def part_status(self, pid: str) -> dict[str, Any] | None:
        """The part's job status as its actor last reported it."""
        job_id, _, source_id = pid.partition(".")
        view = self.where(job_id, source_id)
        if view is None or view.status is None:
            return None
        reported: dict[str, Any] | None = view.status["parts"].get(pid)
        return reported

    def refusal(self, pid: str) -> str | None:
        """Why an actor could not create the part, if it could not."""
        job_id, _, source_id = pid.partition(".")
        view = self.where(job_id, source_id)
        if view is None or view.status is None:
            return None
        reason: str | None = view.status.get("refused", {}).get(pid)
        return reason

    def is_done(self, part: Part) -> bool:
        """The part completed."""
        return (part.job_id, part.source_id) in self.done

    def outage_of(self, job_id: str, source_id: str) -> tuple[int, float]:
        """Times the source was moved off a lost actor, and the seconds it ran nowhere."""
        return self.outages.get((job_id, source_id), (0, 0.0))

    def capacity(self, name: str) -> int | None:
        """Parts actor ``name`` may hold: from its measured cost per frame and its sources'
        rates, and ``--ray-max-sources`` (see :mod:`.placement`); ``None``: no limit known."""
        view = self.actors.get(name)
        status = view.status if view is not None else None
        return capacity(
            None if status is None else status.get("cost"),
            [] if status is None else source_rates(status),
            self.ray_config.utilization,
            self.ray_config.max_sources,
        )

    def cluster(self) -> dict[str, Any]:
        """The actors and where every source runs (``GET /cluster``)."""
        now = time.time()
        assigned = self._assignments()
        actors = []
        for name, view in sorted(self.actors.items()):
            actors.append(
                {
                    "name": name,
                    "alive": view.alive(now, self._timeout),
                    "node": view.node,
                    "address": view.address,
                    "pid": None if view.status is None else view.status["pid"],
                    "parts": sorted(assigned.get(name, {})),
                    # What it reported running last (differs from parts while it catches up).
                    "running": [] if view.status is None else sorted(view.status["parts"]),
                    "last_answer_age": None if view.last_ok is None else now - view.last_ok,
                    "capacity": self.capacity(name),
                    "cost_ms_per_frame": _cost_ms(view.status),
                }
            )
        return {
            "slots": self._slots,
            "max_sources_per_actor": self.ray_config.max_sources,
            "error": self.error,
            "actors": actors,
        }

    def assignment(self, name: str) -> tuple[str, dict[str, str]]:
        """What actor ``name`` should run: (version, part id → spec JSON)."""
        parts = self._assignments().get(name, {})
        return assignment_version(parts), parts

    # -- the loop --------------------------------------------------------------------------

    @property
    def _timeout(self) -> float:
        return self.ray_config.liveness_timeout

    async def _loop(self) -> None:
        while True:
            try:
                await self._round()
                self.error = None
            except Exception as exc:  # the cluster unreachable for a while: keep trying
                self.error = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                log.warning("ray controller: %s", self.error)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.ray_config.poll_interval)
            self._wake.clear()

    async def _round(self) -> None:
        now = time.time()
        if now - self._last_slots >= _SLOTS_EVERY:
            await self._refresh_actors()
        else:  # a node Ray marks dead loses its actors at once, before their polls time out
            self._dead_nodes = await asyncio.to_thread(_dead_nodes)
        for view in self.actors.values():
            view.poll()
            view.collect()
            if view.check_lost(now, self._timeout, self._dead_nodes):
                log.warning("actor %s is lost (node %s): moving its sources", view.name, view.node)
            if view.restarted_from is not None:
                log.warning("actor %s restarted: resuming its sources", view.name)
                for key, actor in self.placed.items():
                    if actor == view.name:
                        self.lost_since.setdefault(key, view.restarted_from)
                view.restarted_from = None
        await self._track_parts(now)
        await self._place(now)
        assigned = self._assignments()
        for name, view in self.actors.items():
            if view.alive(now, self._timeout):
                parts = assigned.get(name, {})
                view.push(assignment_version(parts), parts)

    async def _refresh_actors(self) -> None:
        """Slots and dead nodes from Ray; one actor per slot ever offered (found or created)."""
        from stream_pipeline.cluster import actor as remote

        def look() -> tuple[int, set[str], list[str]]:
            import ray

            resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
            slots = int(resources.get(remote.SLOT_RESOURCE, 0))
            dead = _dead_nodes()
            named = [
                a["name"]
                for a in ray.util.list_named_actors(all_namespaces=True)
                if a.get("namespace") == self.ray_config.namespace
            ]
            return slots, dead, named

        slots, dead, named = await asyncio.to_thread(look)
        self._last_slots = time.time()
        self._dead_nodes = dead
        indices = {i for i in map(remote.actor_index, named) if i is not None}
        self._slots = max(self._slots, slots)
        wanted = set(range(self._slots)) | indices
        for index in sorted(wanted):
            name = remote.actor_name(index)
            if name not in self.actors:
                handle = await asyncio.to_thread(
                    remote.worker_actor, name, self.ray_config.namespace, self.settings
                )
                self.actors[name] = ActorView(name, handle, time.time())

    def _wanted_parts(self, job: ClusterJob) -> list[Part]:
        if not job.active:
            return []
        return [p for p in job.parts.values() if (job.id, p.source_id) not in self.done]

    def _assignments(self) -> dict[str, dict[str, str]]:
        """Actor → {part id: spec JSON} of every placed part that should run."""
        out: dict[str, dict[str, str]] = {}
        for job in self.jobs.values():
            for part in self._wanted_parts(job):
                actor = self.placed.get((job.id, part.source_id))
                if actor is not None:
                    out.setdefault(actor, {})[part.id] = part.wire
        return out

    async def _track_parts(self, now: float) -> None:
        """Done and failed parts, moved parts back, and the jobs' states from them."""
        for job in list(self.jobs.values()):
            if not job.active:
                continue
            running = 0
            wanted = self._wanted_parts(job)
            for part in wanted:
                key = (job.id, part.source_id)
                reported = self.part_status(part.id)
                if reported is None:
                    continue
                job.last[part.source_id] = reported
                state = reported["state"]
                if state == "completed":
                    self.done.add(key)
                    self.placed.pop(key, None)
                    await self.store.aset_done(job.id, part.source_id)
                elif state == "failed":
                    error = f"source {part.source_id}: {reported['error']}"
                    await self.set_state(job, "failed", error)
                    break
                elif state == "running":
                    running += 1
                    frames = reported["sources"][0]["frames"] if reported["sources"] else 0
                    since = self.lost_since.get(key)
                    if since is not None and frames > 0:
                        count, seconds = self.outage_of(*key)
                        self.outages[key] = (count + 1, seconds + now - since)
                        del self.lost_since[key]
                        await self.store.aset_outage(job.id, part.source_id, *self.outages[key])
                        log.info(
                            "job %s: source %s runs again on %s after %.1f s",
                            job.id, part.source_id, self.placed.get(key), now - since,
                        )  # fmt: skip
            if not job.active:
                continue
            left = self._wanted_parts(job)
            if not left:
                await self.set_state(job, "completed")
            elif running == len(left) and job.state != "running":
                await self.set_state(job, "running")
            elif running < len(left) and job.state == "running":
                await self.set_state(job, "starting")

    async def _place(self, now: float) -> None:
        """Off lost actors; then every unplaced part onto the least-loaded actor with room."""
        grace = now - self._started < self._timeout  # just started: actors not yet heard from
        alive = {n for n, v in self.actors.items() if v.alive(now, self._timeout)}
        load = {n: 0 for n in alive}
        wanted: list[Part] = []
        for job in self.jobs.values():
            keep = {p.source_id for p in self._wanted_parts(job)}
            for key in [k for k in self.placed if k[0] == job.id and k[1] not in keep]:
                del self.placed[key]  # paused, stopped or removed: no longer placed
                await self.store.aset_placement(key[0], key[1], None)
            wanted += self._wanted_parts(job)
        for part in wanted:
            key = (part.job_id, part.source_id)
            actor = self.placed.get(key)
            if actor is None:
                continue
            view = self.actors.get(actor)
            if actor in alive:
                load[actor] += 1
            elif view is None or view.lost_at is not None or not grace:
                del self.placed[key]
                last = view.last_ok if view is not None and view.last_ok else now
                self.lost_since.setdefault(key, last)
                await self.store.aset_placement(key[0], key[1], None)
        limits = {n: self.capacity(n) for n in alive}
        for part in wanted:
            key = (part.job_id, part.source_id)
            if key in self.placed:
                continue
            room = [n for n in sorted(alive) if load[n] < (limits[n] or math.inf)]
            if not room:
                break
            target = min(room, key=lambda n: (load[n], n))
            self.placed[key] = target
            self.ran_on[key] = target
            load[target] += 1
            await self.store.aset_placement(key[0], key[1], target)


def _dead_nodes() -> set[str]:
    """The ids of the nodes Ray marks dead (a GCS call: run it in a thread)."""
    import ray

    return {n["NodeID"] for n in ray.nodes() if not n["Alive"]}  # type: ignore[no-untyped-call]


def _cost_ms(status: dict[str, Any] | None) -> float | None:
    """An actor's measured worker time per frame, in ms (``None`` before it ran any frame)."""
    cost = None if status is None else status.get("cost")
    if not cost or not cost["frames"]:
        return None
    return round(1000 * float(cost["seconds"]) / int(cost["frames"]), 3)
