"""A real ``stream-pipeline serve --ray`` process group against the test cluster, and polling."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from tests.jobs.processes import wait_serving

LIVENESS = 4.0  # --ray-liveness-timeout of the tests: a lost actor is seen within seconds


class RayServe:
    """One ``serve --ray`` process group on a free loopback port (started with
    ``start_new_session``, so a test can SIGKILL the whole group, as a dead machine)."""

    def __init__(
        self,
        address: str,
        env: Mapping[str, str],
        state: Path,
        out: Path,
        extra: Sequence[str] = (),
    ) -> None:
        cmd = [
            sys.executable, "-m", "stream_pipeline.cli", "serve", "--port", "0",
            "--state-dir", str(state), "--output-dir", str(out), "--device", "cpu",
            "--threads", "1", "--ray", address, "--ray-liveness-timeout", str(LIVENESS),
            # Placement by count only: streams per actor from the measured cost would depend on
            # how fast the test machine is.
            "--ray-utilization", "0", *extra,
        ]  # fmt: skip
        self.log = state.parent / f"{state.name}-serve.log"
        self._log = self.log.open("ab")
        self._drain: threading.Thread | None = None
        self.proc = subprocess.Popen(
            cmd, env=dict(env), stderr=subprocess.PIPE, stdout=self._log, start_new_session=True
        )
        try:
            self.url = wait_serving(self.proc, time.monotonic() + 90)
        except AssertionError:
            self.kill()
            raise
        # The rest of stderr goes to the log: a full pipe would block the service's logging.
        self._drain = threading.Thread(target=self._copy_stderr, daemon=True)
        self._drain.start()
        self.client = httpx.Client(base_url=self.url, timeout=30.0)
        self.wait_ready()

    def _copy_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in iter(self.proc.stderr.readline, b""):
            self._log.write(line)
            self._log.flush()

    def wait_ready(self, seconds: float = 60.0) -> None:
        """Until ``/readyz`` answers 200 (the cluster reached, the stored jobs loaded)."""
        deadline = time.monotonic() + seconds
        while True:
            answer = self.client.get("/readyz")
            if answer.status_code == 200:
                return
            assert time.monotonic() < deadline, answer.text
            time.sleep(0.2)

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the whole process group and reap it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=60)
        if self._drain is not None:
            self._drain.join(timeout=10)  # it ends at the pipe's end, once the group is gone
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        self._log.close()

    def close(self) -> None:
        """SIGTERM (a graceful stop); the actors keep running, detached."""
        self.kill(signal.SIGTERM)


def until(what: Callable[[], Any], ok: Callable[[Any], bool], seconds: float, why: str) -> Any:
    """Poll ``what()`` until ``ok`` of it holds; an AssertionError naming ``why`` otherwise."""
    deadline = time.monotonic() + seconds
    while True:
        value = what()
        if ok(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{why}: not within {seconds} s; last: {value}")
        time.sleep(0.25)


def sources(serve: RayServe, job_id: str) -> dict[str, dict[str, Any]]:
    """The job's sources by id, as ``GET /jobs/{id}`` shows them."""
    body = serve.client.get(f"/jobs/{job_id}").json()
    return {s["id"]: s for s in body["sources"]}


def actors(serve: RayServe) -> dict[str, dict[str, Any]]:
    """``GET /cluster``'s actors by name."""
    return {a["name"]: a for a in serve.client.get("/cluster").json()["actors"]}
