"""A real ``stream-pipeline serve`` process group for the jobs tests that kill it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx


def wait_serving(proc: subprocess.Popen[bytes], deadline: float) -> str:
    """The URL of a ``serve`` process once its stderr says "serving on"; an AssertionError with
    what it wrote if it exits or says nothing by ``deadline``."""
    assert proc.stderr is not None
    seen = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stderr], [], [], 0.5)
        if ready:
            line = proc.stderr.readline()
            seen += line
            if line.startswith(b"serving on "):
                return line.split()[2].decode().rstrip("/")
        if proc.poll() is not None:
            break
    raise AssertionError(f"serve did not start: {seen.decode(errors='replace')}")


class Serve:
    """One ``stream-pipeline serve`` process group on a free loopback port."""

    def __init__(self, state: Path, out: Path, model: Path) -> None:
        cmd = [
            sys.executable, "-m", "stream_pipeline.cli", "serve", "--port", "0",
            "--state-dir", str(state), "--output-dir", str(out),
            "--device", "cpu", "--threads", "1", "--model", str(model),
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
        )
        try:
            self.url = wait_serving(self.proc, deadline=time.monotonic() + 60)
        except AssertionError:
            self.kill()
            raise

    def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Signal the whole process group (SIGKILL: a dead machine), and reap it."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
            raise AssertionError(f"serve did not exit within 30 s of {sig.name}") from None
        if self.proc.stderr is not None:
            self.proc.stderr.close()


def poll(client: httpx.Client, job_id: str, ok: Any, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        status: dict[str, Any] = client.get(f"/jobs/{job_id}").json()
        if ok(status) or time.monotonic() > deadline:
            return status
        time.sleep(0.05)
