#!/usr/bin/env python3
"""Soak: eight jobs in ``stream-pipeline serve`` for a long time, with ``kill -9`` of the
service's whole process group and restarts of the RTSP server.

    .venv/bin/python scripts/soak_jobs.py --minutes 30 --kill-every 10
    .venv/bin/python scripts/soak_jobs.py --minutes 3 --kill-every 1 --rtsp-restart-every 1

``--rtsp-jobs`` jobs read cameras of one real GStreamer RTSP server (TESTING.md; password from
``${CAM_PASSWORD}``, so it never sits in the state database), the others read an H.264 file
(not paced: as fast as the machine goes). A file job that completes is checked and replaced by a
new one, so eight jobs run all the time and many file jobs are cut by a kill. Every
``--kill-every`` minutes the service's process group gets SIGKILL and is started again on the
same state dir (the jobs must resume by themselves); every ``--rtsp-restart-every`` minutes,
half-way between kills, the RTSP server is killed and brought back ``--rtsp-down`` s later.

Records: resumes (jobs active at a kill that came back by themselves, and how long it took),
frames lost, duplicated or torn in file jobs' JSONL (each frame id exactly once: must be 0),
RSS and open fds of the service's process group at start and end, RTSP reconnects and outages;
and that the RTSP password appears nowhere in the service's log.
Prints a summary and a markdown table; exits 1 if any frame was lost or duplicated, or a job
failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bench import make_video  # noqa: E402
from bench_jobs import ServeProcess, commit, group_usage, isolation, machine  # noqa: E402

from tests.support.rtsp import RtspServer  # noqa: E402

PASSWORD = "soak-" + os.urandom(6).hex()
ACTIVE = ("queued", "starting", "running")


@dataclass
class FileJob:
    """One file job: where its JSONL is and how many frames it must hold."""

    id: str
    source: str
    jsonl: Path
    frames: int
    done: bool = False


@dataclass
class Tally:
    lost: int = 0
    duplicated: int = 0
    torn: int = 0
    checked_complete: int = 0
    checked_partial: int = 0
    failures: list[str] = field(default_factory=list)

    def check(self, job: FileJob, complete: bool) -> None:
        """Each frame id once; a complete job has them all, a cut one a gapless prefix."""
        ids: list[int] = []
        if job.jsonl.exists():
            for raw in job.jsonl.read_bytes().split(b"\n")[:-1]:
                try:
                    ids.append(int(json.loads(raw)["frame_id"]))
                except (ValueError, KeyError):
                    self.torn += 1
            if not job.jsonl.read_bytes().endswith(b"\n") and job.jsonl.stat().st_size:
                self.torn += 1
        unique = set(ids)
        self.duplicated += len(ids) - len(unique)
        want = job.frames if complete else (max(unique) + 1 if unique else 0)
        self.lost += len(set(range(want)) - unique) + len(unique - set(range(job.frames)))
        if complete:
            self.checked_complete += 1
        else:
            self.checked_partial += 1


class Soak:
    def __init__(self, args: argparse.Namespace, root: Path) -> None:
        self.args = args
        self.root = root
        self.state, self.out = root / "state", root / "out"
        self.log = root / "serve.log"
        self.video = make_video(root / "clip.mp4", args.file_frames, args.width, args.height)
        self.camera = RtspServer(
            paths=tuple(f"/cam{i}" for i in range(args.rtsp_jobs)),
            user="soak",
            password=PASSWORD,
            width=args.width,
            height=args.height,
            fps=args.rtsp_fps,
        ).start()
        self.serve: ServeProcess | None = None
        self.files: dict[str, FileJob] = {}  # by slot
        self.generation = 0
        self.tally = Tally()
        self.kills: list[dict[str, Any]] = []
        self.rtsp_restarts = 0
        self.lifetimes: list[dict[str, Any]] = []
        self.live_peak: dict[str, dict[str, float]] = {}  # this lifetime's counters per source
        self.live_total: dict[str, dict[str, float]] = {}  # summed over ended lifetimes

    # -- the service ---------------------------------------------------------------------

    def start_service(self) -> ServeProcess:
        serve = ServeProcess(
            self.state, self.out, self.args.model, self.log, env={"CAM_PASSWORD": PASSWORD}
        )
        serve.wait_ready()
        self.serve = serve
        self.lifetimes.append({"pid": serve.pid, "started": time.monotonic()})
        return serve

    def client(self) -> httpx.Client:
        assert self.serve is not None
        return self.serve.client

    def create(self, spec: dict[str, Any]) -> str:
        created = self.client().post("/jobs", json=spec)
        if created.status_code != 201:
            raise RuntimeError(f"POST /jobs: {created.status_code} {created.text}")
        return str(created.json()["id"])

    def new_file_job(self, slot: int) -> None:
        self.generation += 1
        source = f"file{slot}-{self.generation}"
        job_id = self.create(
            {
                "name": f"soak-{source}",
                "model": self.args.model,
                "sources": [{"id": source, "url": str(self.video)}],
                "sinks": [{"type": "jsonl", "path": f"{source}.jsonl"}],
                "restart": "on-failure",
            }
        )
        self.files[str(slot)] = FileJob(
            job_id, source, self.out / f"{source}.jsonl", self.args.file_frames
        )

    def create_jobs(self) -> None:
        port = self.camera.port
        for i in range(self.args.rtsp_jobs):
            self.create(
                {
                    "name": f"soak-cam{i}",
                    "model": self.args.model,
                    "sources": [
                        {
                            "id": f"cam{i}",
                            "url": f"rtsp://soak:${{CAM_PASSWORD}}@127.0.0.1:{port}/cam{i}",
                        }
                    ],
                    "sinks": [{"type": "jsonl", "path": f"cam{i}.jsonl"}],
                    "restart": "always",
                }
            )
        for slot in range(self.args.jobs - self.args.rtsp_jobs):
            self.new_file_job(slot)

    # -- watching ------------------------------------------------------------------------

    def jobs(self) -> list[dict[str, Any]]:
        got = self.client().get("/jobs", timeout=30)
        got.raise_for_status()
        return list(got.json())

    def look(self) -> list[dict[str, Any]]:
        """Replace completed file jobs (after checking them), note live counters, failures."""
        jobs = self.jobs()
        by_id = {j["id"]: j for j in jobs}
        for slot, job in list(self.files.items()):
            status = by_id.get(job.id)
            if status is None:
                continue
            if status["state"] == "completed":
                self.tally.check(job, complete=True)
                job.done = True
                self.new_file_job(int(slot))
            elif status["state"] == "failed":
                self.tally.failures.append(f"{job.source}: {status['error']}")
                self.new_file_job(int(slot))
        for j in jobs:
            if j["state"] == "failed" and not j["name"].startswith("soak-file"):
                self.tally.failures.append(f"{j['name']}: {j['error']}")
            for s in j["sources"]:
                if s["id"].startswith("cam"):
                    peak = self.live_peak.setdefault(s["id"], {})
                    for k in ("frames", "reconnects", "outages", "outage_seconds"):
                        peak[k] = max(peak.get(k, 0), s.get(k, 0) or 0)
        return jobs

    def end_lifetime(self) -> None:
        for sid, peak in self.live_peak.items():
            total = self.live_total.setdefault(sid, {})
            for k, v in peak.items():
                total[k] = total.get(k, 0) + v
        self.live_peak = {}

    def kill_and_restart(self) -> None:
        assert self.serve is not None
        active = {j["id"] for j in self.look() if j["state"] in ACTIVE}
        usage = group_usage(self.serve.pid)
        self.lifetimes[-1].update(end=usage)
        self.serve.kill(signal.SIGKILL)
        self.end_lifetime()
        t0 = time.monotonic()
        self.start_service()
        back: dict[str, float] = {}
        lost: set[str] = set()  # failed or gone instead of resuming
        deadline = time.monotonic() + 120
        while len(back) + len(lost) < len(active) and time.monotonic() < deadline:
            for j in self.jobs():
                if j["id"] in active and j["id"] not in back:
                    progressed = any(s["frames"] > 0 for s in j["sources"])
                    if j["state"] == "completed" or (j["state"] == "running" and progressed):
                        back[j["id"]] = time.monotonic() - t0
                    elif j["state"] in ("failed", "stopped"):
                        lost.add(j["id"])
            time.sleep(0.2)
        self.kills.append(
            {"active": len(active), "resumed": len(back), "seconds": sorted(back.values())}
        )
        print(
            f"[{self.elapsed():6.0f} s] kill -9: {len(back)}/{len(active)} active jobs resumed "
            f"by themselves (slowest {max(back.values(), default=0):.1f} s)",
            flush=True,
        )

    def restart_camera(self) -> None:
        self.camera.kill()
        time.sleep(self.args.rtsp_down)
        self.camera.start()
        self.rtsp_restarts += 1
        print(f"[{self.elapsed():6.0f} s] RTSP server restarted", flush=True)

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    # -- the soak ------------------------------------------------------------------------

    def run(self) -> int:
        args = self.args
        self.t0 = time.monotonic()
        serve = self.start_service()
        self.create_jobs()
        duration = args.minutes * 60
        kill_every, rtsp_every = args.kill_every * 60, args.rtsp_restart_every * 60
        next_kill = kill_every
        next_rtsp = rtsp_every / 2 if rtsp_every else None
        start_usage: dict[str, int] | None = None
        while self.elapsed() < duration:
            time.sleep(2)
            self.look()
            now = self.elapsed()
            if start_usage is None and now >= min(30, duration / 4):
                start_usage = group_usage(serve.pid)
                print(f"[{now:6.0f} s] service at start: {start_usage}", flush=True)
            if now >= next_kill and now < duration - 15:
                self.kill_and_restart()
                next_kill += kill_every
            if next_rtsp is not None and now >= next_rtsp and now < duration - 15:
                self.restart_camera()
                next_rtsp += rtsp_every
        self.look()
        assert self.serve is not None
        end_usage = group_usage(self.serve.pid)
        took = self.serve.kill(signal.SIGTERM)
        self.end_lifetime()
        for job in self.files.values():  # cut by the end: a gapless prefix, each frame once
            if not job.done:
                self.tally.check(job, complete=False)
        return self.report(start_usage or {}, end_usage, took)

    def report(self, start: dict[str, int], end: dict[str, int], sigterm_s: float) -> int:
        t = self.tally
        resumed = sum(k["resumed"] for k in self.kills)
        active = sum(k["active"] for k in self.kills)
        slowest = max((max(k["seconds"], default=0) for k in self.kills), default=0)
        print("\n## soak summary")
        print(f"- {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; {machine()}")
        print(f"- commit {commit()}; isolated decoders: {isolation()}")
        print(f"- load average at the end: {os.getloadavg()}")
        a = self.args
        print(
            f"- {a.jobs} jobs ({a.rtsp_jobs} RTSP at {a.rtsp_fps} fps, {a.jobs - a.rtsp_jobs} file "
            f"jobs of {a.file_frames} frames, replaced when complete), {a.width}×{a.height}, "
            f"{a.minutes} min, kill -9 every {a.kill_every} min, RTSP restart every "
            f"{a.rtsp_restart_every} min"
        )
        print("\n| what | value |\n|---|---|")
        print(f"| kill -9 of the process group | {len(self.kills)} |")
        print(f"| jobs resumed by themselves / active at the kills | {resumed} / {active} |")
        print(f"| slowest resume (restart → running again) | {slowest:.1f} s |")
        print(f"| RTSP server restarts | {self.rtsp_restarts} |")
        print(
            f"| file jobs checked complete / cut by the end | {t.checked_complete} / {t.checked_partial} |"
        )
        print(
            f"| frames lost / duplicated / torn lines (file jobs) | {t.lost} / {t.duplicated} / {t.torn} |"
        )
        for sid, v in sorted(self.live_total.items()):
            print(
                f"| {sid}: frames / reconnects / outages (outage s) | {v.get('frames', 0):.0f} / "
                f"{v.get('reconnects', 0):.0f} / {v.get('outages', 0):.0f} "
                f"({v.get('outage_seconds', 0):.1f}) |"
            )
        print(
            f"| service RSS at start → end | {start.get('rss_kib', 0) / 1024:.0f} → "
            f"{end.get('rss_kib', 0) / 1024:.0f} MiB |"
        )
        print(f"| service open fds at start → end | {start.get('fds', 0)} → {end.get('fds', 0)} |")
        print(
            f"| service processes at start → end | {start.get('processes', 0)} → "
            f"{end.get('processes', 0)} |"
        )
        print(f"| SIGTERM at the end: exit took | {sigterm_s:.1f} s |")
        if PASSWORD.encode() in self.log.read_bytes():
            t.failures.append("the RTSP password is in the service's log")
        if t.failures:
            print("\nfailures:\n" + "\n".join(f"- {x}" for x in t.failures[:20]))
        bad = t.lost or t.duplicated or t.torn or t.failures or resumed < active
        print(f"\nresult: {'FAIL' if bad else 'ok'}")
        return 1 if bad else 0

    def close(self) -> None:
        if self.serve is not None and self.serve.proc.poll() is None:
            self.serve.kill(signal.SIGKILL)
        self.camera.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--kill-every", type=float, default=10, help="minutes between kill -9")
    ap.add_argument("--rtsp-restart-every", type=float, default=5, help="minutes (0: never)")
    ap.add_argument("--rtsp-down", type=float, default=3, help="seconds the RTSP server is down")
    ap.add_argument("--jobs", type=int, default=8)
    ap.add_argument("--rtsp-jobs", type=int, default=3)
    ap.add_argument("--rtsp-fps", type=int, default=10)
    ap.add_argument("--file-frames", type=int, default=1500, help="frames per file job")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--model", default="default")
    ap.add_argument(
        "--keep", type=Path, default=None, help="work here and keep it (else a temp dir)"
    )
    args = ap.parse_args()
    if not 0 <= args.rtsp_jobs <= args.jobs:
        ap.error("--rtsp-jobs must be between 0 and --jobs")
    print(f"soak: load average {os.getloadavg()}; commit {commit()}", flush=True)
    with tempfile.TemporaryDirectory(prefix="soak-jobs-") as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        soak = Soak(args, root)
        try:
            return soak.run()
        finally:
            soak.close()
            print(
                f"service log: {soak.log} ({'kept' if args.keep else 'removed with the temp dir'})"
            )


if __name__ == "__main__":
    sys.exit(main())
