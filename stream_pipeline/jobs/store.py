"""The jobs' state: SQLite in WAL mode under ``--state-dir`` (created 0700).

It holds each job's spec (as submitted: ``${ENV}`` references unexpanded), its state and error,
per-sink checkpoints (the last frame id a file sink made durable, per source), the outages of
live sources across service restarts, with ``serve --ray`` the actor each source is placed on
(the truth the controller re-reads when it starts), and the service's heartbeat (when it was
last alive, from which the next start measures how long it was down). Every call is
synchronous and short; the supervisor runs them off the event loop through the ``a*`` wrappers
(``asyncio.to_thread``), one at a time under a lock, on one connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from stream_pipeline.jobs.spec import JobSpec

__all__ = ["JobRecord", "JobStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    state TEXT NOT NULL,
    error TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoints (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    sink TEXT NOT NULL,
    source_id TEXT NOT NULL,
    frame_id INTEGER NOT NULL,
    PRIMARY KEY (job_id, sink, source_id)
);
CREATE TABLE IF NOT EXISTS outages (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    source_id TEXT NOT NULL,
    count INTEGER NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (job_id, source_id)
);
CREATE TABLE IF NOT EXISTS placements (
    job_id TEXT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    source_id TEXT NOT NULL,
    actor TEXT,
    done INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job_id, source_id)
);
CREATE TABLE IF NOT EXISTS heartbeat (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    alive_at REAL NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class JobRecord:
    """One stored job."""

    id: str
    spec: JobSpec
    state: str
    error: str | None
    created_at: float


class JobStore:
    """See the module docstring. ``close()`` is idempotent."""

    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.state_dir, 0o700)  # mkdir's mode is masked by the umask
        self.path = self.state_dir / "jobs.sqlite3"
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=10.0
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL: a committed transaction survives a process crash (not a power cut).
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(_SCHEMA)
        os.chmod(self.path, 0o600)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("the job store is closed")
        return self._db

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            db, self._db = self._db, None
            if db is not None:
                db.close()

    # -- jobs ------------------------------------------------------------------------------

    def insert(self, job_id: str, spec: JobSpec, state: str) -> JobRecord:
        """Store a new job."""
        now = time.time()
        with self._lock:
            self._conn().execute(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, NULL, ?, ?)",
                (job_id, spec.name, spec.model_dump_json(), state, now, now),
            )
        return JobRecord(job_id, spec, state, None, now)

    def set_state(self, job_id: str, state: str, error: str | None = None) -> None:
        """Record ``state`` (and the error that caused it, or none)."""
        with self._lock:
            self._conn().execute(
                "UPDATE jobs SET state = ?, error = ?, updated_at = ? WHERE id = ?",
                (state, error, time.time(), job_id),
            )

    def set_spec(self, job_id: str, spec: JobSpec) -> None:
        """Replace a job's spec (a source added or removed at run time)."""
        with self._lock:
            self._conn().execute(
                "UPDATE jobs SET spec = ?, updated_at = ? WHERE id = ?",
                (spec.model_dump_json(), time.time(), job_id),
            )

    def jobs(self) -> list[JobRecord]:
        """Every stored job, oldest first."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT id, spec, state, error, created_at FROM jobs ORDER BY created_at, id"
                )
                .fetchall()
            )
        return [
            JobRecord(r[0], JobSpec.model_validate(json.loads(r[1])), r[2], r[3], r[4])
            for r in rows
        ]

    # -- checkpoints -----------------------------------------------------------------------

    def set_checkpoint(self, job_id: str, sink: str, source_id: str, frame_id: int) -> None:
        """The last frame of ``source_id`` that ``sink`` made durable."""
        with self._lock:
            self._conn().execute(
                "INSERT INTO checkpoints VALUES (?, ?, ?, ?) ON CONFLICT (job_id, sink, source_id)"
                " DO UPDATE SET frame_id = excluded.frame_id",
                (job_id, sink, source_id, frame_id),
            )

    def checkpoints(self, job_id: str) -> dict[tuple[str, str], int]:
        """``{(sink, source_id): frame_id}`` of a job."""
        with self._lock:
            rows = (
                self._conn()
                .execute(
                    "SELECT sink, source_id, frame_id FROM checkpoints WHERE job_id = ?", (job_id,)
                )
                .fetchall()
            )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    # -- placements of sources on the actors of a Ray cluster (serve --ray) -----------------

    def set_placement(self, job_id: str, source_id: str, actor: str | None) -> None:
        """``source_id`` of ``job_id`` runs on ``actor`` (``None``: on none, not done)."""
        with self._lock:
            if actor is None:
                self._conn().execute(
                    "DELETE FROM placements WHERE job_id = ? AND source_id = ?",
                    (job_id, source_id),
                )
            else:
                self._conn().execute(
                    "INSERT INTO placements VALUES (?, ?, ?, 0) ON CONFLICT (job_id, source_id)"
                    " DO UPDATE SET actor = excluded.actor, done = 0",
                    (job_id, source_id, actor),
                )

    def set_done(self, job_id: str, source_id: str) -> None:
        """``source_id`` of ``job_id`` has ended (a file read to its end): never placed again."""
        with self._lock:
            self._conn().execute(
                "INSERT INTO placements VALUES (?, ?, NULL, 1) ON CONFLICT (job_id, source_id)"
                " DO UPDATE SET actor = NULL, done = 1",
                (job_id, source_id),
            )

    def placements(self) -> dict[tuple[str, str], str | None]:
        """``{(job_id, source_id): actor}`` of every placed source (``None``: done)."""
        with self._lock:
            rows = self._conn().execute("SELECT job_id, source_id, actor FROM placements")
            return {(r[0], r[1]): r[2] for r in rows.fetchall()}

    def delete(self, job_id: str) -> None:
        """Forget a job and everything stored about it."""
        with self._lock:  # its checkpoints, outages and placements go with it (ON DELETE CASCADE)
            self._conn().execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    # -- outages of live sources across restarts ----------------------------------------------

    def beat(self, now: float | None = None) -> None:
        """The service is alive at ``now`` (wall clock)."""
        with self._lock:
            self._conn().execute(
                "INSERT INTO heartbeat VALUES (0, ?) ON CONFLICT (id) DO UPDATE"
                " SET alive_at = excluded.alive_at",
                (time.time() if now is None else now,),
            )

    def last_beat(self) -> float | None:
        """When the service was last alive (wall clock), ``None`` on a first start."""
        with self._lock:
            row = self._conn().execute("SELECT alive_at FROM heartbeat WHERE id = 0").fetchone()
        return None if row is None else float(row[0])

    def set_outage(self, job_id: str, source_id: str, count: int, seconds: float) -> None:
        """The outages so far of a live source: how many, and their seconds in all."""
        with self._lock:
            self._conn().execute(
                "INSERT INTO outages VALUES (?, ?, ?, ?) ON CONFLICT (job_id, source_id)"
                " DO UPDATE SET count = excluded.count, seconds = excluded.seconds",
                (job_id, source_id, count, seconds),
            )

    def outages(self) -> dict[str, dict[str, tuple[int, float]]]:
        """``{job_id: {source_id: (count, seconds)}}`` of every job."""
        with self._lock:
            rows = (
                self._conn()
                .execute("SELECT job_id, source_id, count, seconds FROM outages")
                .fetchall()
            )
        out: dict[str, dict[str, tuple[int, float]]] = {}
        for job_id, source_id, count, seconds in rows:
            out.setdefault(job_id, {})[source_id] = (int(count), float(seconds))
        return out

    # -- off the loop ----------------------------------------------------------------------

    async def ainsert(self, job_id: str, spec: JobSpec, state: str) -> JobRecord:
        """:meth:`insert` in a thread."""
        return await asyncio.to_thread(self.insert, job_id, spec, state)

    async def aset_state(self, job_id: str, state: str, error: str | None = None) -> None:
        """:meth:`set_state` in a thread."""
        await asyncio.to_thread(self.set_state, job_id, state, error)

    async def aset_spec(self, job_id: str, spec: JobSpec) -> None:
        """:meth:`set_spec` in a thread."""
        await asyncio.to_thread(self.set_spec, job_id, spec)

    async def ajobs(self) -> list[JobRecord]:
        """:meth:`jobs` in a thread."""
        return await asyncio.to_thread(self.jobs)

    async def aset_checkpoint(self, job_id: str, sink: str, source_id: str, frame_id: int) -> None:
        """:meth:`set_checkpoint` in a thread."""
        await asyncio.to_thread(self.set_checkpoint, job_id, sink, source_id, frame_id)

    async def aset_placement(self, job_id: str, source_id: str, actor: str | None) -> None:
        """:meth:`set_placement` in a thread."""
        await asyncio.to_thread(self.set_placement, job_id, source_id, actor)

    async def aset_done(self, job_id: str, source_id: str) -> None:
        """:meth:`set_done` in a thread."""
        await asyncio.to_thread(self.set_done, job_id, source_id)

    async def abeat(self) -> None:
        """:meth:`beat` in a thread."""
        await asyncio.to_thread(self.beat)

    async def aset_outage(self, job_id: str, source_id: str, count: int, seconds: float) -> None:
        """:meth:`set_outage` in a thread."""
        await asyncio.to_thread(self.set_outage, job_id, source_id, count, seconds)
