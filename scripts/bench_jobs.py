#!/usr/bin/env python3
"""Benchmark: eight sources as eight jobs in ``stream-pipeline serve`` against one
``stream-pipeline run`` with the same eight sources.

    .venv/bin/python scripts/bench_jobs.py --rounds 3 --frames 150

Both read the same H.264 file (the synthetic street scene, encoded once) eight times as eight
sources, not paced (file speed), with the same model and one JSONL sink per source (RLE masks
in the lines) under a temporary directory. Throughput is results written per second over all
sources, between the first line and the last one seen in the files (so process start-up and
model loading count for neither side); the service must keep ≥ 90% of ``run``'s. While the jobs
run, a client thread asks ``GET /jobs`` and ``GET /jobs/{id}`` in turn (``--api-rate`` a second)
for the API's latency; the time from each ``POST /jobs`` to its job's first JSONL line is the
time to first result. The two sides alternate within a round and the order flips every round
(the machine is shared): medians of per-round figures, ratios within a round.

``ServeProcess``, ``JsonlTail`` and ``group_usage`` are shared with ``scripts/soak_jobs.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import make_video  # noqa: E402  (scripts/bench.py: the street scene as H.264)

CLI = [sys.executable, "-m", "stream_pipeline.cli"]
# The package next to this script, also for a snapshot outside the checkout (see commit()).
CLI_ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


# -- the service as a process group -----------------------------------------------------------


class ServeProcess:
    """``stream-pipeline serve`` in a process group of its own, its stderr in ``log``."""

    def __init__(
        self,
        state: Path,
        out: Path,
        model: str,
        log: Path,
        extra: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
    ) -> None:
        self.log = log
        cmd = [
            *CLI, "serve", "--port", "0", "--state-dir", str(state), "--output-dir", str(out),
            "--device", "cpu", "--model", model, *extra,
        ]  # fmt: skip
        self._log = log.open("ab")
        self._offset = self._log.tell()
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=self._log,
            start_new_session=True,
            cwd=ROOT,
            env={**CLI_ENV, **(env or {})},
        )
        self.url = self._wait_serving(time.monotonic() + 120)
        self.client = httpx.Client(base_url=self.url, timeout=30)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _wait_serving(self, deadline: float) -> str:
        while time.monotonic() < deadline:
            with self.log.open("rb") as f:
                f.seek(self._offset)
                for line in f.read().splitlines():
                    if line.startswith(b"serving on "):
                        return line.split()[2].decode().rstrip("/")
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.kill()
        tail = self.log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"stream-pipeline serve did not start:\n{tail}")

    def wait_ready(self, timeout: float = 60) -> None:
        """Until ``/readyz`` says ready (the stored jobs resumed, the worker up)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if self.client.get("/readyz").status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"serve at {self.url} not ready within {timeout} s")

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout: float = 60) -> float:
        """Signal the whole process group and reap it; the seconds it took to exit."""
        t0 = time.monotonic()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        took = time.monotonic() - t0
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)  # children that outlived the leader
        if hasattr(self, "client"):
            self.client.close()
        self._log.close()
        return took


def group_usage(pgid: int) -> dict[str, int]:
    """RSS (KiB), open fds and processes of every live process in group ``pgid``."""
    rss = fds = procs = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # Fields after the ")" of the command: state, ppid, pgrp, …
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            status = (entry / "status").read_text()
            rss += next(int(x.split()[1]) for x in status.splitlines() if x.startswith("VmRSS:"))
            fds += len(os.listdir(entry / "fd"))
            procs += 1
        except (OSError, StopIteration, ValueError, IndexError):
            continue  # gone meanwhile, or a kernel thread without VmRSS
    return {"rss_kib": rss, "fds": fds, "processes": procs}


# -- watching outputs -------------------------------------------------------------------------


class JsonlTail:
    """Counts the complete lines a growing JSONL file holds, reading only what was added."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self.first_at: float | None = None
        self._offset = 0

    def poll(self) -> int:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read()
            whole = data.rfind(b"\n") + 1
            if whole:
                self._offset += whole
                self.lines += data.count(b"\n", 0, whole)
                if self.first_at is None:
                    self.first_at = time.monotonic()
        return self.lines


@dataclass
class Side:
    """What one run of one side gave."""

    frames: int = 0
    first: float = 0.0  # monotonic time of the first line seen
    last: float = 0.0  # … of the last
    first_result: list[float] = field(default_factory=list)  # per source, s after its start
    api_ms: list[float] = field(default_factory=list)

    @property
    def fps(self) -> float:
        return (self.frames - 1) / (self.last - self.first) if self.last > self.first else 0.0


def _watch(tails: list[JsonlTail], total: int, done: Any, timeout: float) -> Side:
    side = Side()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        n = sum(t.poll() for t in tails)
        now = time.monotonic()
        if n and not side.first:
            side.first = min(t.first_at for t in tails if t.first_at is not None)
        if n > side.frames:
            side.frames, side.last = n, now
        if n >= total or done():
            for t in tails:
                t.poll()
            side.frames = sum(t.lines for t in tails)
            return side
        time.sleep(0.01)
    raise RuntimeError(f"timed out: {sum(t.lines for t in tails)} of {total} results written")


# -- the two sides ----------------------------------------------------------------------------


def bench_run(video: Path, sources: int, frames: int, model: str, work: Path) -> Side:
    out = work / "run.jsonl"
    args = [f"--source=s{i}={video}" for i in range(sources)]
    cmd = [*CLI, "run", *args, "--model", model, "--device", "cpu", "--predictions-out", str(out)]
    t0 = time.monotonic()
    # stderr to a file: a pipe nobody reads while it runs would fill and stall it.
    with (work / "run.log").open("wb") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=log, env=CLI_ENV)
        try:
            tail = JsonlTail(out)
            side = _watch([tail], sources * frames, lambda: proc.poll() is not None, 600)
            proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode != 0 or side.frames != sources * frames:
        err = (work / "run.log").read_text(errors="replace")[-800:]
        raise RuntimeError(f"run: status {proc.returncode}, {side.frames} lines: {err}")
    side.first_result = [side.first - t0]  # includes start-up and the model load
    return side


class ApiProbe(threading.Thread):
    """``GET /jobs`` and ``GET /jobs/{id}`` in turn, ``rate`` a second; latencies in ms."""

    def __init__(self, url: str, job_ids: list[str], rate: float) -> None:
        super().__init__(name="api-probe", daemon=True)
        self.url, self.job_ids, self.period = url, job_ids, 1.0 / rate
        self.samples: list[float] = []
        self.errors = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as client:
            i = 0
            while not self.stop.wait(self.period):
                ids = list(self.job_ids)
                path = "/jobs" if i % 2 == 0 or not ids else f"/jobs/{ids[i // 2 % len(ids)]}"
                t0 = time.perf_counter()
                try:
                    ok = client.get(path).status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.samples.append((time.perf_counter() - t0) * 1000)
                self.errors += not ok
                i += 1


def bench_serve(
    video: Path, sources: int, frames: int, model: str, work: Path, api_rate: float
) -> Side:
    out = work / "out"
    serve = ServeProcess(work / "state", out, model, work / "serve.log")
    try:
        serve.wait_ready()
        job_ids: list[str] = []
        probe = ApiProbe(serve.url, job_ids, api_rate)
        tails = [JsonlTail(out / f"s{i}.jsonl") for i in range(sources)]
        posted: list[float] = []
        for i in range(sources):
            spec = {
                "name": f"bench-{i}",
                "model": model,
                "sources": [{"id": f"s{i}", "url": str(video)}],
                "sinks": [{"type": "jsonl", "path": f"s{i}.jsonl"}],
                "restart": "never",
            }
            posted.append(time.monotonic())
            created = serve.client.post("/jobs", json=spec)
            if created.status_code != 201:
                raise RuntimeError(f"POST /jobs: {created.status_code} {created.text}")
            job_ids.append(created.json()["id"])
            if i == 0:
                probe.start()

        def all_ended() -> bool:
            states = {j["state"] for j in serve.client.get("/jobs").json()}
            return not states & {"queued", "starting", "running"}

        side = _watch(tails, sources * frames, lambda: False, 600)
        probe.stop.set()
        probe.join(10)
        deadline = time.monotonic() + 60
        while not all_ended() and time.monotonic() < deadline:
            time.sleep(0.1)
        failed = [j for j in serve.client.get("/jobs").json() if j["state"] != "completed"]
        if failed or probe.errors:
            raise RuntimeError(f"jobs not completed: {failed!r}; API errors: {probe.errors}")
        side.first_result = [
            t.first_at - p for t, p in zip(tails, posted, strict=True) if t.first_at
        ]
        side.api_ms = probe.samples
        return side
    finally:
        serve.kill(signal.SIGTERM)


# -- report -----------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


def machine() -> str:
    cpu = next(
        (
            x.split(":", 1)[1].strip()
            for x in Path("/proc/cpuinfo").read_text().splitlines()
            if x.startswith("model name")
        ),
        platform.processor(),
    )
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB; Python {platform.python_version()}"


def commit() -> str:
    """The commit measured: git's, or a snapshot's (``git archive`` of it, with the line of
    ``git log -1 --format='%h %s'`` in ``COMMIT`` — a tree that other people's edits cannot
    change half-way through a long run)."""
    snapshot = ROOT / "COMMIT"
    if snapshot.is_file() and not (ROOT / ".git").exists():
        return snapshot.read_text().strip() + " (a snapshot of it)"
    done = subprocess.run(
        ["git", "log", "-1", "--format=%h %s"], cwd=ROOT, capture_output=True, text=True
    )
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", "stream_pipeline"],
        cwd=ROOT, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return done.stdout.strip() + (" (+ uncommitted changes in stream_pipeline/)" if dirty else "")


def isolation() -> str:
    from stream_pipeline.jobs.settings import JobsConfig

    names = getattr(JobsConfig, "__dataclass_fields__", {})
    if "isolate_decoders" not in names:
        return "not in this commit (decoders in the service's process)"
    return f"JobsConfig.isolate_decoders default {names['isolate_decoders'].default!r}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--frames", type=int, default=150, help="frames per source")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=360)
    ap.add_argument("--model", default="default")
    ap.add_argument("--api-rate", type=float, default=10.0, help="API requests a second")
    args = ap.parse_args()

    print(f"# {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {machine()}", flush=True)
    print(f"# commit {commit()}; isolated decoders: {isolation()}", flush=True)
    print(f"# load before: {os.getloadavg()[0]:.2f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        root = Path(tmp)
        video = make_video(root / "in.mp4", args.frames, args.width, args.height)
        # Warm-up (numba kernels compiled and cached, files in the page cache); not counted.
        bench_run(video, 1, args.frames, args.model, _fresh(root / "warm"))
        for r in range(args.rounds):
            got: dict[str, Side] = {}
            order = ("run", "serve") if r % 2 == 0 else ("serve", "run")
            for what in order:
                work = _fresh(root / f"{what}-{r}")
                if what == "run":
                    got[what] = bench_run(video, args.sources, args.frames, args.model, work)
                else:
                    got[what] = bench_serve(
                        video, args.sources, args.frames, args.model, work, args.api_rate
                    )
                print(f"round {r} {what}: {got[what].fps:.1f} frames/s", flush=True)
            s = got["serve"]
            rows.append(
                {
                    "run": got["run"].fps,
                    "serve": s.fps,
                    "ratio": s.fps / got["run"].fps,
                    "p50": pct(s.api_ms, 50),
                    "p99": pct(s.api_ms, 99),
                    "requests": len(s.api_ms),
                    "ttfr_med": statistics.median(s.first_result),
                    "ttfr_max": max(s.first_result),
                    "run_start": got["run"].first_result[0],
                }
            )
    print(f"# load after: {os.getloadavg()[0]:.2f}")
    print(
        f"\n{args.sources} sources × {args.frames} frames {args.width}×{args.height} H.264, "
        f"model {args.model}, JSONL with RLE masks, one sink per source\n"
    )
    print(
        "| round | run frames/s | serve frames/s | serve / run | API p50 ms | API p99 ms | "
        "requests | POST → first result, median / max s | run: start → first result s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for i, x in enumerate(rows):
        print(
            f"| {i} | {x['run']:.1f} | {x['serve']:.1f} | {x['ratio']:.0%} | {x['p50']:.1f} | "
            f"{x['p99']:.1f} | {x['requests']} | {x['ttfr_med']:.2f} / {x['ttfr_max']:.2f} | "
            f"{x['run_start']:.2f} |"
        )

    def med(k: str) -> float:
        return statistics.median(x[k] for x in rows)

    print(
        f"| **median** | **{med('run'):.1f}** | **{med('serve'):.1f}** | **{med('ratio'):.0%}** | "
        f"{med('p50'):.1f} | {med('p99'):.1f} | | {med('ttfr_med'):.2f} / {med('ttfr_max'):.2f} | "
        f"{med('run_start'):.2f} |"
    )
    ok = med("ratio") >= 0.9
    print(
        f"\nserve keeps {med('ratio'):.0%} of run's throughput (goal ≥ 90%: {'met' if ok else 'missed'})"
    )
    return 0 if ok else 1


def _fresh(path: Path) -> Path:
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    sys.exit(main())
