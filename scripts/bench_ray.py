#!/usr/bin/env python3
"""Benchmark of ``stream-pipeline serve --ray`` on a real cluster on this machine.

    sudo .venv/bin/python scripts/bench_ray.py --runs 3 --sources 8
    sudo .venv/bin/python scripts/bench_ray.py --runs 0 --soak-minutes 30 --kill-actor-every 300

The script re-executes itself in a private network + PID namespace (``unshare``, needs root) and
starts the cluster the tests use there (``tests/support/raycluster.py``: a head and two worker
nodes with a fake GPU and one ``stream_pipeline`` slot each, token auth) and a ``serve --ray``
process (``tests/cluster/service.py``). Per health-check setting (Ray's default, and the tuned
``RAY_health_check_*`` of docs/scale-out.md on the head), each run:

1. ``POST /jobs`` with ``--sources`` camera-paced synthetic sources (5 fps, 160×96) and a JSONL
   sink: seconds until the first line of the first source's file, and of every source's.
2. Under that load: p50/p99 of ``GET /jobs/{id}`` and ``GET /cluster`` (``--polls`` calls each)
   and of ``status()`` round trips to each actor from a second driver (this process).
3. ``kill -9`` of the actor process running the most sources: seconds until they stream again
   on its restarted process (same node).
4. ``kill -9`` of the raylet of the node running the most sources: seconds until every source it
   ran streams again (frames growing) on the other actor. A replacement node then joins.

``--soak-minutes`` (tuned health checks): one job of ``--sources`` sources runs that long while
the RSS of the head's processes, each node's, each actor's and the service's is sampled every
10 s, and with ``--kill-actor-every S`` one actor process is SIGKILLed every S seconds.

Prints one JSON object per run, then medians (runs interleave nothing: each setting has its own
cluster). ``--json PATH`` also writes everything there.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.cluster.service import RayServe, actors, sources, until  # noqa: E402
from tests.support.raycluster import (  # noqa: E402
    HEAD_PORTS,
    HEALTH_CHECK_ENV,
    RayCluster,
    in_cluster_namespace,
    proc_table,
)

LIVE = "synthetic://street?frames=0&realtime=1&fps=5&width=160&height=96"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def timed(fn: Any, n: int) -> dict[str, float]:
    """p50/p99 in ms of ``n`` sequential calls of ``fn``."""
    took = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        took.append((time.perf_counter() - start) * 1000)
    return {"p50_ms": round(pct(took, 0.5), 2), "p99_ms": round(pct(took, 0.99), 2)}


def job_spec(n: int, tag: str) -> dict[str, Any]:
    return {
        "name": f"bench-{tag}",
        "model": "default",
        "sources": [{"id": f"{tag}-{i}", "url": LIVE} for i in range(n)],
        "sinks": [{"type": "jsonl", "path": f"bench/{tag}.jsonl", "with_masks": False}],
    }


def first_lines(out: Path, tag: str, ids: list[str], t0: float) -> dict[str, float | None]:
    """Seconds from ``t0`` to the first JSONL line of the first source, and of every source."""
    seen: dict[str, float] = {}
    deadline = t0 + 180
    while len(seen) < len(ids) and time.time() < deadline:
        for sid in ids:
            path = out / "bench" / f"{tag}.{sid}.jsonl"
            if sid not in seen and path.is_file() and b"\n" in path.read_bytes()[:65536]:
                seen[sid] = time.time() - t0
        time.sleep(0.02)
    return {
        "first_result_s": round(min(seen.values()), 2) if seen else None,
        "every_source_s": round(max(seen.values()), 2) if len(seen) == len(ids) else None,
    }


def actor_rtt(address: str, names: list[str], n: int) -> dict[str, dict[str, float]]:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, namespace="stream-pipeline", log_to_driver=False)
    out = {}
    for name in names:
        handle = ray.get_actor(name)
        out[name] = timed(lambda h=handle: ray.get(h.status.remote(), timeout=10), n)
    return out


def busiest(serve: RayServe, job_id: str) -> tuple[str, set[str]]:
    """The actor running the most of the job's sources, and those sources."""
    on: dict[str, set[str]] = {}
    for sid, s in sources(serve, job_id).items():
        on.setdefault(s["actor"], set()).add(sid)
    victim = max(on, key=lambda a: len(on[a]))
    return victim, on[victim]


def node_loss(cluster: RayCluster, serve: RayServe, job_id: str) -> dict[str, Any]:
    """Kill the node running the most sources; seconds until each streams again elsewhere."""
    victim, moved = busiest(serve, job_id)
    node = actors(serve)[victim]["node"]
    index = next(
        cluster.worker_index(n.node_manager_port) for n in cluster.nodes() if n.node_id == node
    )
    t0 = time.time()
    cluster.kill_worker(index)
    back: dict[str, float] = {}
    frames: dict[str, int] = {}
    while len(back) < len(moved) and time.time() - t0 < 120:
        for sid, s in sources(serve, job_id).items():
            if sid in moved and sid not in back and s["actor"] not in (None, victim):
                if sid in frames and s["frames"] > frames[sid]:
                    back[sid] = round(time.time() - t0, 2)
                frames.setdefault(sid, s["frames"])
        time.sleep(0.1)
    cluster.add_worker()
    until(
        lambda: actors(serve),
        lambda a: sum(x["alive"] for x in a.values()) == 2,
        120, "the replacement node's actor alive",
    )  # fmt: skip
    return {
        "moved_sources": len(moved),
        "all_back_s": max(back.values()) if len(back) == len(moved) else None,
        "first_back_s": min(back.values()) if back else None,
    }


def actor_kill(serve: RayServe, job_id: str) -> dict[str, Any]:
    """SIGKILL the process of the actor running the most sources; seconds until they stream
    again (frames growing) on its restarted process."""
    victim, ids = busiest(serve, job_id)
    pid = actors(serve)[victim]["pid"]
    t0 = time.time()
    os.kill(pid, signal.SIGKILL)
    back: dict[str, float] = {}
    while len(back) < len(ids) and time.time() - t0 < 60:
        now = sources(serve, job_id)
        if actors(serve)[victim]["pid"] not in (None, pid):
            for sid in ids - back.keys():
                if now[sid]["state"] == "streaming" and now[sid]["frames"] > 0:
                    back[sid] = round(time.time() - t0, 2)
        time.sleep(0.1)
    return {
        "sources": len(ids),
        "all_back_s": max(back.values()) if len(back) == len(ids) else None,
    }


def one_run(
    a: argparse.Namespace, cluster: RayCluster, serve: RayServe, out: Path, run: str
) -> dict[str, Any]:
    tag = f"r{run}"
    res: dict[str, Any] = {"run": run, "sources": a.sources}
    t0 = time.time()
    created = serve.client.post("/jobs", json=job_spec(a.sources, tag))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    res["post_ms"] = round((time.time() - t0) * 1000, 1)
    ids = [s["id"] for s in created.json()["sources"]]
    res |= first_lines(out, tag, ids, t0)
    res["get_job"] = timed(lambda: serve.client.get(f"/jobs/{job_id}"), a.polls)
    res["get_cluster"] = timed(lambda: serve.client.get("/cluster"), a.polls)
    alive = [n for n, x in actors(serve).items() if x["alive"]]
    res["actor_status"] = actor_rtt(cluster.address, alive, a.polls)
    res["actor_kill"] = actor_kill(serve, job_id)
    res["node_loss"] = node_loss(cluster, serve, job_id)
    serve.client.delete(f"/jobs/{job_id}")
    return res


def roles(serve_pid: int) -> dict[int, str]:
    """pid → head | node-<port> | actor | service, from the process tree."""
    table = proc_table()
    out: dict[int, str] = {}
    raylets = {}
    for pid, (_, argv) in table.items():
        cmd = " ".join(argv)
        if "raylet" in argv[0]:
            port = next(
                (x.split("=", 1)[1] for x in argv if x.startswith("--node_manager_port=")), "?"
            )
            raylets[pid] = "head" if port == str(HEAD_PORTS.node_manager) else f"node-{port}"
        if argv[0].startswith("ray::WorkerActor"):
            out[pid] = "actor"
        elif any(k in cmd for k in ("gcs_server", "monitor.py", "dashboard.py")):
            out[pid] = "head"
    for pid in table:
        if pid in out:
            continue
        walk = pid
        while walk in table and walk not in raylets and walk != serve_pid:
            walk = table[walk][0]
        if walk == serve_pid:
            out[pid] = "service"
        elif walk in raylets:
            out[pid] = raylets[walk]
    out.update(raylets)
    return out


def rss_by_role(serve_pid: int) -> dict[str, float]:
    """MiB of RSS summed per role (actors one by one too)."""
    totals: dict[str, float] = {}
    for pid, role in roles(serve_pid).items():
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        kib = next((int(x.split()[1]) for x in text.splitlines() if x.startswith("VmRSS:")), 0)
        key = "node" if role.startswith("node-") else role
        totals[key] = totals.get(key, 0.0) + kib / 1024
    return {k: round(v, 1) for k, v in sorted(totals.items())}


def soak(a: argparse.Namespace, cluster: RayCluster, serve: RayServe) -> dict[str, Any]:
    created = serve.client.post("/jobs", json=job_spec(a.sources, "soak"))
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    until(
        lambda: sources(serve, job_id),
        lambda s: all(x["frames"] > 0 for x in s.values()),
        120, "every soak source streaming",
    )  # fmt: skip
    samples = []
    kills = 0
    t0 = last_kill = time.time()
    while time.time() - t0 < a.soak_minutes * 60:
        samples.append({"t_s": round(time.time() - t0), **rss_by_role(serve.proc.pid)})
        if a.kill_actor_every and time.time() - last_kill >= a.kill_actor_every:
            pids = [p for p, r in roles(serve.proc.pid).items() if r == "actor"]
            if pids:
                os.kill(pids[kills % len(pids)], signal.SIGKILL)
                kills += 1
            last_kill = time.time()
        time.sleep(10)
    final = sources(serve, job_id)
    serve.client.delete(f"/jobs/{job_id}")
    keys = sorted({k for s in samples for k in s if k != "t_s"})
    return {
        "minutes": a.soak_minutes,
        "actor_kills": kills,
        "sources_streaming_at_end": sum(s["state"] == "streaming" for s in final.values()),
        "rss_first_mib": {k: samples[0].get(k) for k in keys},
        "rss_last_mib": {k: samples[-1].get(k) for k in keys},
        "rss_max_mib": {k: max(s.get(k, 0.0) for s in samples) for k in keys},
        "samples": samples,
    }


def with_cluster(a: argparse.Namespace, tuned: bool, fn: Any) -> Any:
    base = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    cluster = RayCluster(base / "ray", workers=2, health_checks=HEALTH_CHECK_ENV if tuned else {})
    cluster.start()
    serve: RayServe | None = None
    try:
        serve = RayServe(cluster.address, cluster.env, base / "state", base / "out")
        until(
            lambda: actors(serve),  # type: ignore[arg-type]
            lambda x: sum(y["alive"] for y in x.values()) == 2,
            120, "two actors alive",
        )  # fmt: skip
        return fn(cluster, serve, base / "out")
    finally:
        if serve is not None:
            serve.close()
        import ray

        if ray.is_initialized():
            ray.shutdown()
        cluster.stop()


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    def med(*path: str) -> float | None:
        vals = []
        for r in runs:
            v: Any = r
            for k in path:
                v = v.get(k) if isinstance(v, dict) else None
            if isinstance(v, int | float):
                vals.append(float(v))
        return round(statistics.median(vals), 2) if vals else None

    rtt = [x for r in runs for x in r["actor_status"].values()]
    return {
        "post_ms": med("post_ms"),
        "first_result_s": med("first_result_s"),
        "every_source_s": med("every_source_s"),
        "get_job_p50_ms": med("get_job", "p50_ms"),
        "get_job_p99_ms": med("get_job", "p99_ms"),
        "get_cluster_p50_ms": med("get_cluster", "p50_ms"),
        "get_cluster_p99_ms": med("get_cluster", "p99_ms"),
        "actor_status_p50_ms": statistics.median(x["p50_ms"] for x in rtt) if rtt else None,
        "actor_status_p99_ms": statistics.median(x["p99_ms"] for x in rtt) if rtt else None,
        "actor_kill_all_back_s": med("actor_kill", "all_back_s"),
        "node_loss_all_back_s": med("node_loss", "all_back_s"),
        "node_loss_first_back_s": med("node_loss", "first_back_s"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3, help="runs per health-check setting")
    ap.add_argument("--sources", type=int, default=8)
    ap.add_argument("--polls", type=int, default=200, help="calls per latency figure")
    ap.add_argument("--health", default="default,tuned", help="settings to run, comma-separated")
    ap.add_argument("--soak-minutes", type=float, default=0.0)
    ap.add_argument("--kill-actor-every", type=float, default=None, help="seconds, in the soak")
    ap.add_argument("--json", default=None, help="also write everything to this file")
    a = ap.parse_args()
    if a.sources < 1 or a.polls < 1 or a.runs < 0:
        raise SystemExit("bench_ray: --sources and --polls must be ≥ 1, --runs ≥ 0")
    if not in_cluster_namespace():
        if os.geteuid() != 0:
            raise SystemExit("bench_ray: needs root (it runs the cluster under unshare)")
        env = os.environ | {
            "SP_RAY_NETNS": "1",
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": os.urandom(32).hex(),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        inner = "ip link set lo up && " + " ".join(
            [sys.executable, str(Path(__file__).resolve()), *map(_quote, sys.argv[1:])]
        )
        done = subprocess.run(
            ["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", inner],
            env=env, check=False,
        )  # fmt: skip
        raise SystemExit(done.returncode)
    report: dict[str, Any] = {"sources": a.sources, "settings": {}}
    for setting in [s for s in a.health.split(",") if s] if a.runs else []:
        runs = []
        for run in range(a.runs):
            tag = f"{setting}{run}"

            def go(cluster: RayCluster, serve: RayServe, out: Path, tag: str = tag) -> Any:
                return one_run(a, cluster, serve, out, tag)

            result = with_cluster(a, setting == "tuned", go)
            print(json.dumps({"health": setting, **result}), flush=True)
            runs.append(result)
        report["settings"][setting] = {"runs": runs, "medians": medians(runs)}
        print(json.dumps({"health": setting, "medians": medians(runs)}), flush=True)
    if a.soak_minutes:
        report["soak"] = with_cluster(a, True, lambda c, s, o: soak(a, c, s))
        brief = {k: v for k, v in report["soak"].items() if k != "samples"}
        print(json.dumps({"soak": brief}), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(report, indent=1))


def _quote(arg: str) -> str:
    import shlex

    return shlex.quote(arg)


if __name__ == "__main__":
    main()
