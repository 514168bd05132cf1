"""Benchmark of ``stream-pipeline serve --ray``: control latency, first result, re-placement, RSS.

Runs against a service that is already up with ``--ray`` (and its cluster), from the same machine
or network namespace (the RSS figures read ``/proc``; the node kill is a shell command you give):

    .venv/bin/python scripts/bench_ray.py --url http://127.0.0.1:8080 --sources 4 \
        --ray 127.0.0.1:6390 --kill-node-cmd 'kill -9 $(pgrep -f -- --node_manager_port=6410)' \
        --minutes 5 --runs 3

Per run: one job with ``--sources`` endless, camera-paced synthetic sources is created; measured are
the time from ``POST /jobs`` to the first frame of the first and of every source, the p50/p99 of
``GET /jobs/{id}`` and ``GET /cluster`` while they run, the p50/p99 of ``status()`` round trips to
each actor (a second Ray driver, with ``--ray``), and, with ``--kill-node-cmd``, the time until
every source that ran on the killed node runs (frames growing) on another one. ``--minutes``
samples the RSS of the head, node, actor and service processes every 10 s, and with
``--kill-actor-every S`` SIGKILLs one actor process every S seconds meanwhile (restarts).
Prints one JSON object per run and the medians over runs. Needs ``RAY_AUTH_MODE`` /
``RAY_AUTH_TOKEN`` in the environment as the cluster has them, for ``--ray``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any


class Api:
    """The few HTTP calls the benchmark makes (stdlib only: it must not load the service's code)."""

    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"content-type": "application/json"}
        if token:
            self.headers["authorization"] = f"Bearer {token}"

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data, self.headers, method=method)
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def timed(fn: Any, n: int) -> dict[str, float]:
    """p50/p99 in ms of ``n`` sequential calls of ``fn``."""
    took = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        took.append((time.perf_counter() - t) * 1000)
    return {"p50_ms": round(pct(took, 0.5), 2), "p99_ms": round(pct(took, 0.99), 2)}


def spec(n: int, run: int) -> dict[str, Any]:
    tag = f"{os.getpid()}-{run}"
    return {
        "name": f"bench-ray-{tag}",
        "model": "default",
        "sources": [
            {"id": f"b{tag}-{i}", "url": "synthetic://street?frames=0&realtime=1&fps=10"}
            for i in range(n)
        ],
        "sinks": [{"type": "jsonl", "path": f"bench-ray/{tag}.jsonl"}],
    }


def frames(job: dict[str, Any]) -> dict[str, int]:
    return {s["id"]: int(s.get("frames") or 0) for s in job["sources"]}


def first_results(api: Api, job_id: str, t0: float, deadline: float) -> dict[str, float | None]:
    first = every = None
    while time.time() < deadline and every is None:
        got = frames(api.call("GET", f"/jobs/{job_id}"))
        if first is None and any(got.values()):
            first = time.time() - t0
        if all(got.values()):
            every = time.time() - t0
        time.sleep(0.05)
    return {"first_source_s": first, "every_source_s": every}


def actor_rtt(address: str, namespace: str, names: list[str], n: int) -> dict[str, Any]:
    import ray  # only for --ray: the rest of the benchmark is plain HTTP

    ray.init(address=address, namespace=namespace, log_to_driver=False)
    out = {}
    for name in names:
        h = ray.get_actor(name)
        out[name] = timed(lambda h=h: ray.get(h.status.remote(), timeout=10), n)
    ray.shutdown()
    return out


def replacement(api: Api, job_id: str, cmd: str, deadline: float) -> dict[str, Any]:
    """Kill a node with ``cmd``; seconds until each source it ran runs again elsewhere."""
    job = api.call("GET", f"/jobs/{job_id}")
    before = {s["id"]: s.get("node") for s in job["sources"]}
    t0 = time.time()
    subprocess.run(cmd, shell=True, check=False)
    moved: dict[str, float] = {}
    lost: set[str] = set()
    seen: dict[str, int] = {}
    killed_node = None
    while time.time() < deadline:
        job = api.call("GET", f"/jobs/{job_id}")
        for s in job["sources"]:
            if s.get("node") != before[s["id"]] and before[s["id"]] is not None:
                killed_node = before[s["id"]]
                lost.add(s["id"])
                # it counts once its frames grow on the new node
                if s["id"] not in seen:
                    seen[s["id"]] = int(s.get("frames") or 0)
                elif int(s.get("frames") or 0) > seen[s["id"]] and s["id"] not in moved:
                    moved[s["id"]] = round(time.time() - t0, 2)
        if killed_node is not None:
            lost |= {sid for sid, node in before.items() if node == killed_node}
            if lost and lost <= moved.keys():
                break
        time.sleep(0.1)
    return {
        "sources_on_killed_node": len(lost),
        "replaced_s": sorted(moved.values()),
        "all_replaced_s": max(moved.values()) if lost and lost <= moved.keys() else None,
    }


ROLES = {
    "gcs_server": "head",
    "monitor.py": "head",
    "dashboard.py": "head",
    "raylet": "node",
    "log_monitor": "node",
    "dashboard/agent": "node",
    "runtime_env/agent": "node",
    "ray::": "actor",
    "stream-pipeline serve": "service",
}


def rss_sample() -> dict[str, float]:
    """MiB of RSS per role, summed over this machine's (namespace's) processes."""
    out = dict.fromkeys(set(ROLES.values()), 0.0)
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            rss = next(
                int(ln.split()[1])
                for ln in (d / "status").read_text().splitlines()
                if ln.startswith("VmRSS:")
            )
        except (OSError, StopIteration):
            continue
        for key, role in ROLES.items():
            if key in cmd:
                out[role] += rss / 1024
                break
    return {k: round(v, 1) for k, v in out.items()}


def actor_pids() -> list[int]:
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "cmdline").read_bytes().startswith(b"ray::StreamWorker"):
                    found.append(int(d.name))
            except OSError:
                continue
    return found


def soak(minutes: float, kill_every: float | None) -> dict[str, Any]:
    samples = []
    kills = 0
    t0 = last_kill = time.time()
    while time.time() - t0 < minutes * 60:
        samples.append(rss_sample())
        if kill_every and time.time() - last_kill >= kill_every and (pids := actor_pids()):
            os.kill(pids[0], signal.SIGKILL)
            kills += 1
            last_kill = time.time()
        time.sleep(10)
    roles = samples[0].keys() if samples else []
    return {
        "minutes": minutes,
        "actor_kills": kills,
        "rss_first_mib": samples[0] if samples else {},
        "rss_last_mib": samples[-1] if samples else {},
        "rss_max_mib": {r: max(s[r] for s in samples) for r in roles},
    }


def one_run(a: argparse.Namespace, api: Api, run: int) -> dict[str, Any]:
    res: dict[str, Any] = {"run": run, "sources": a.sources}
    t0 = time.time()
    job = api.call("POST", "/jobs", spec(a.sources, run))
    res["post_s"] = round(time.time() - t0, 3)
    res |= first_results(api, job["id"], t0, t0 + 120)
    res["get_job"] = timed(lambda: api.call("GET", f"/jobs/{job['id']}"), a.polls)
    res["get_cluster"] = timed(lambda: api.call("GET", "/cluster"), a.polls)
    cluster = api.call("GET", "/cluster")
    res["actors"] = len(cluster["actors"])
    res["nodes"] = len(cluster["nodes"])
    if a.ray:
        names = [x["name"] for x in cluster["actors"] if x.get("alive")]
        res["actor_status"] = actor_rtt(a.ray, a.ray_namespace, names, a.polls)
    if a.minutes:
        res["soak"] = soak(a.minutes, a.kill_actor_every)
    if a.kill_node_cmd and run == a.runs:  # the last run: a lost node stays lost
        res["node_loss"] = replacement(api, job["id"], a.kill_node_cmd, time.time() + 120)
    api.call("DELETE", f"/jobs/{job['id']}")
    return res


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(path: list[str]) -> float | None:
        vals = []
        for r in runs:
            v: Any = r
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, int | float):
                vals.append(float(v))
        return round(statistics.median(vals), 3) if vals else None

    return {
        "first_source_s": med(["first_source_s"]),
        "every_source_s": med(["every_source_s"]),
        "get_job_p50_ms": med(["get_job", "p50_ms"]),
        "get_job_p99_ms": med(["get_job", "p99_ms"]),
        "get_cluster_p50_ms": med(["get_cluster", "p50_ms"]),
        "get_cluster_p99_ms": med(["get_cluster", "p99_ms"]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--token", default=os.environ.get("STREAM_PIPELINE_TOKEN"))
    ap.add_argument("--sources", type=int, default=4, help="sources of the benchmark job")
    ap.add_argument("--polls", type=int, default=200, help="calls per latency figure")
    ap.add_argument("--ray", default=None, help="GCS address, for actor status() round trips")
    ap.add_argument("--ray-namespace", default="stream-pipeline")
    ap.add_argument("--kill-node-cmd", default=None, help="shell command that kills one node")
    ap.add_argument("--minutes", type=float, default=0.0, help="RSS sampling per run")
    ap.add_argument("--kill-actor-every", type=float, default=None, help="seconds, during it")
    ap.add_argument("--runs", type=int, default=3)
    a = ap.parse_args()
    if a.sources < 1 or a.polls < 1 or a.runs < 1:
        raise SystemExit("--sources, --polls and --runs must be ≥ 1")
    api = Api(a.url, a.token)
    runs = []
    for run in range(1, a.runs + 1):
        r = one_run(a, api, run)
        print(json.dumps(r), flush=True)
        runs.append(r)
    print(json.dumps({"medians": medians(runs)}))


if __name__ == "__main__":
    main()
