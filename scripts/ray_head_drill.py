"""Head-failover drill for ``serve --ray``: what survives a head restart, per GCS storage, measured.

Runs a real two-node Ray cluster (``ray start``: a head, and one worker node with a fake GPU and the
``stream_pipeline`` resource) inside a private network + PID namespace of its own (the script
re-executes itself under ``unshare -n -p -f --mount-proc``), so ``ray stop`` and every port stay
confined to it. In each case a detached, named async actor with ``max_restarts=-1`` runs on the
worker node; a watching driver polls it; the head's processes are killed with SIGKILL, its
``ray_current_cluster`` file is removed and the same ``ray start --head`` runs again. Recorded: does
the worker node survive, does the actor keep its pid and state, when does a fresh driver reach it by
name, does the watching driver reconnect or get terminated.

Cases: ``memory`` (default in-memory GCS), ``rocksdb`` (``RAY_gcs_storage=rocksdb``, alpha in 2.60),
``redis`` (external Redis, needs ``redis-server`` on PATH), and ``nohead`` (the head is killed and
never comes back: when is a driver terminated, with the default and with a larger
``RAY_gcs_rpc_server_reconnect_timeout_s``).

    sudo .venv/bin/python scripts/ray_head_drill.py --cases memory,rocksdb,redis,nohead --runs 3

Needs root (for ``unshare``). Prints one JSON line per run and a table at the end; ``--json PATH``
also writes the runs there.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

RAY = str(Path(sys.executable).with_name("ray"))
PORT = 6390
REDIS_PORT = 6380
HEAD_ARGS = [
    "--head", f"--port={PORT}", "--node-manager-port=6400", "--object-manager-port=6401",
    "--dashboard-agent-listen-port=6402", "--metrics-export-port=6403",
    "--runtime-env-agent-port=6404", "--dashboard-agent-grpc-port=6405",
    "--min-worker-port=10000", "--max-worker-port=10099", "--num-gpus=0",
    "--include-dashboard=false",
]  # fmt: skip
WORKER_ARGS = [
    f"--address=127.0.0.1:{PORT}", "--node-manager-port=6410", "--object-manager-port=6411",
    "--dashboard-agent-listen-port=6412", "--metrics-export-port=6413",
    "--runtime-env-agent-port=6414", "--dashboard-agent-grpc-port=6415",
    "--min-worker-port=10100", "--max-worker-port=10199", "--num-gpus=1",
    '--resources={"stream_pipeline": 1}',
]  # fmt: skip
COMMON = [
    "--node-ip-address=127.0.0.1", "--num-cpus=1", "--object-store-memory=100000000",
    "--disable-usage-stats",
]  # fmt: skip

# The driver programs run as separate processes: a driver is what the service is, and a driver
# that Ray terminates must not take the drill with it.
ACTOR = """
import os, sys, time, json, ray
@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class Counter:
    def __init__(self):
        self.n = 0
    async def incr(self):
        self.n += 1
        return self.n
    async def status(self):
        ctx = ray.get_runtime_context()
        return {"pid": os.getpid(), "n": self.n, "node": ctx.get_node_id(),
                "reconstructed": ctx.was_current_actor_reconstructed}
def out(**kw):
    print(json.dumps({"t": time.time(), **kw}), flush=True)
"""
# Creates the actor on the worker node, counts it up to 5, then polls status() every 0.25 s.
WATCH = (
    ACTOR
    + """
ray.init(address="127.0.0.1:GCS_PORT", namespace="drill")
h = Counter.options(name="drill", lifetime="detached", get_if_exists=True, num_gpus=1,
                    resources={"stream_pipeline": 1}).remote()
for _ in range(5):
    ray.get(h.incr.remote(), timeout=60)
while True:
    try:
        out(ok=True, **ray.get(h.status.remote(), timeout=1))
    except Exception as e:
        out(ok=False, error=type(e).__name__)
    time.sleep(0.25)
""".replace("GCS_PORT", str(PORT))
)
# A fresh driver: connect, look the actor up by name, one status() call, the nodes Ray knows.
PROBE = (
    ACTOR
    + """
t0 = time.time()
ray.init(address="127.0.0.1:GCS_PORT", namespace="drill")
nodes = [{"port": n["NodeManagerPort"], "alive": n["Alive"]} for n in ray.nodes()]
try:
    h = ray.get_actor("drill")
except ValueError:
    out(ok=False, error="no actor named drill", nodes=nodes)
    sys.exit(0)
out(ok=True, nodes=nodes, took=time.time() - t0, **ray.get(h.status.remote(), timeout=10))
""".replace("GCS_PORT", str(PORT))
)


def procs() -> dict[int, tuple[int, str]]:
    """Live (not zombie) processes of this namespace: pid -> (ppid, command line)."""
    found = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":
            found[int(d.name)] = (int(fields[1]), cmd)
    return found


def descendants(roots: set[int]) -> set[int]:
    """``roots`` and every live process below them."""
    table = procs()
    out = {p for p in roots if p in table}
    grew = True
    while grew:
        more = {p for p, (pp, _) in table.items() if pp in out and p not in out}
        out |= more
        grew = bool(more)
    return out


def worker_raylet() -> int | None:
    for pid, (_, cmd) in procs().items():
        if "raylet" in cmd and "--node_manager_port=6410" in cmd:
            return pid
    return None


def ray_start(args: list[str], env: dict[str, str], temp: Path) -> float:
    t0 = time.time()
    subprocess.run(
        [RAY, "start", *args, *COMMON, *([f"--temp-dir={temp}"] if "--head" in args else [])],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=120,
    )
    return time.time() - t0


def probe(env: dict[str, str]) -> dict[str, Any]:
    try:
        r = subprocess.run(
            [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=25
        )
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "probe timed out"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    if lines:
        result: dict[str, Any] = json.loads(lines[-1])
        return result
    tail = (r.stderr.strip().splitlines() or ["?"])[-1]
    return {"ok": False, "error": f"rc={r.returncode} {tail[:120]}"}


def read_watch(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.startswith("{")]


def start_cluster(
    case: str, temp: Path, env: dict[str, str]
) -> tuple[set[int], dict[str, str], list[str]]:
    """Head (with the case's GCS storage) + worker node; returns the head's env and its pids."""
    head_env = dict(env)
    if case == "rocksdb":
        head_env |= {"RAY_gcs_storage": "rocksdb", "RAY_gcs_storage_path": str(temp / "gcsdb")}
    if case == "redis":
        head_env["RAY_REDIS_ADDRESS"] = f"127.0.0.1:{REDIS_PORT}"
    before = set(procs())
    args = list(HEAD_ARGS)
    if case == "redis":
        args.append(f"--redis-password={env['DRILL_REDIS_PASSWORD']}")
    ray_start(args, head_env, temp)
    head = set(procs()) - before - {os.getpid()}
    ray_start(WORKER_ARGS, env, temp)
    return head, head_env, args


def kill_head(head: set[int], temp: Path) -> None:
    for pid in descendants(head):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    (temp / "ray_current_cluster").unlink(missing_ok=True)


def stop_all(env: dict[str, str]) -> None:
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, check=False, timeout=120)
    for pid in procs():
        if pid != os.getpid() and pid != 1 and pid != os.getppid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def one_run(case: str, run: int, base: Path, env: dict[str, str], window: float) -> dict[str, Any]:
    temp = base / f"{case}-{run}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    redis = None
    if case == "redis":
        redis = subprocess.Popen(
            ["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1", "--requirepass",
             env["DRILL_REDIS_PASSWORD"], "--save", "", "--appendonly", "no", "--dir", str(temp)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        time.sleep(0.5)
    res: dict[str, Any] = {"case": case, "run": run}
    t0 = time.time()
    head, head_env, head_args = start_cluster(case, temp, env)
    res["cluster_up_s"] = round(time.time() - t0, 1)
    watch_log = temp / "watch.jsonl"
    watchers = []
    with watch_log.open("w") as f:
        watchers.append(
            subprocess.Popen([sys.executable, "-c", WATCH], env=env, stdout=f, stderr=f)
        )
    if case == "nohead":
        longer = dict(env, RAY_gcs_rpc_server_reconnect_timeout_s="180")
        with (temp / "watch_long.jsonl").open("w") as f:
            watchers.append(
                subprocess.Popen([sys.executable, "-c", WATCH], env=longer, stdout=f, stderr=f)
            )
    # wait until the watcher has seen the actor counted up
    deadline = time.time() + 90
    while time.time() < deadline:
        seen = [e for e in read_watch(watch_log) if e.get("ok")]
        if seen:
            break
        time.sleep(0.3)
    else:
        raise RuntimeError(f"{case}: the actor never answered before the kill")
    before = seen[-1]
    time.sleep(1.0)
    t_kill = time.time()
    kill_head(head, temp)
    if case == "nohead":
        res |= watch_nohead(watchers, temp, t_kill, window, before)
    else:
        time.sleep(1.0)
        res["head_restart_s"] = round(ray_start(head_args, head_env, temp), 1)
        t_up = time.time()
        res["head_back_after_kill_s"] = round(t_up - t_kill, 1)
        res |= watch_restart(env, t_kill, window, before)
        res |= driver_outcome(watchers[0], watch_log, t_kill, t_up)
    for w in watchers:
        w.kill()
        w.wait()
    stop_all(env)
    if redis is not None:
        redis.kill()
        redis.wait()
    return res


def watch_restart(
    env: dict[str, str], t_kill: float, window: float, before: dict[str, Any]
) -> dict[str, Any]:
    """Fresh drivers every ~2 s until one reaches the actor by name, or the window ends."""
    res: dict[str, Any] = {"pid_before": before["pid"], "n_before": before["n"]}
    last: dict[str, Any] = {}
    worker_gone_at = None
    while time.time() - t_kill < window:
        last = probe(env)
        if worker_gone_at is None and worker_raylet() is None:
            worker_gone_at = time.time() - t_kill
        if last.get("ok"):
            res["actor_by_name_after_kill_s"] = round(last["t"] - t_kill, 1)
            break
        if worker_gone_at is not None and time.time() - t_kill > worker_gone_at + 5:
            break
        time.sleep(2.0)
    time.sleep(3.0)
    final = probe(env)
    res["probe_error"] = None if last.get("ok") else last.get("error")
    res["worker_raylet_alive"] = worker_raylet() is not None
    res["worker_raylet_gone_after_s"] = None if worker_gone_at is None else round(worker_gone_at, 1)
    res["worker_node_alive_in_gcs"] = any(
        n["port"] == 6410 and n["alive"] for n in final.get("nodes", [])
    )
    if last.get("ok"):
        res["same_pid"] = last["pid"] == before["pid"]
        res["state_kept"] = last["n"] == before["n"]
        res["reconstructed"] = last["reconstructed"]
    return res


def driver_outcome(
    watcher: subprocess.Popen[bytes], log: Path, t_kill: float, t_up: float
) -> dict[str, Any]:
    """What the driver that was polling across the kill saw."""
    events = read_watch(log)
    after = [e for e in events if e["t"] > t_kill]
    fails = [e for e in after if not e.get("ok")]
    back = [e for e in after if e.get("ok") and e["t"] > t_up]
    out: dict[str, Any] = {
        "driver_first_failure_after_s": round(fails[0]["t"] - t_kill, 1) if fails else None,
        "driver_answers_after_restart": bool(back),
        "driver_exited": watcher.poll() is not None,
    }
    if fails and back:
        out["driver_answer_again_after_s"] = round(
            next(e["t"] for e in after if e.get("ok") and e["t"] > fails[0]["t"]) - t_kill, 1
        )
    return out


def watch_nohead(
    watchers: list[subprocess.Popen[bytes]],
    temp: Path,
    t_kill: float,
    window: float,
    before: dict[str, Any],
) -> dict[str, Any]:
    """The head stays dead: when do the two drivers and the worker node exit."""
    exits: dict[str, float | None] = {"default": None, "reconnect_180": None}
    names = list(exits)
    worker_gone = None
    while time.time() - t_kill < window:
        for name, w in zip(names, watchers, strict=True):
            if exits[name] is None and w.poll() is not None:
                exits[name] = round(time.time() - t_kill, 1)
        if worker_gone is None and worker_raylet() is None:
            worker_gone = round(time.time() - t_kill, 1)
        if all(v is not None for v in exits.values()) and worker_gone is not None:
            break
        time.sleep(0.5)
    last_ok = [e for e in read_watch(temp / "watch.jsonl") if e.get("ok")]
    return {
        "driver_default_exit_after_s": exits["default"],
        "driver_reconnect180_exit_after_s": exits["reconnect_180"],
        "worker_raylet_gone_after_s": worker_gone,
        "actor_answered_until_s": round(last_ok[-1]["t"] - t_kill, 1) if last_ok else None,
        "window_s": window,
        "pid_before": before["pid"],
    }


def table(runs: list[dict[str, Any]]) -> str:
    """Medians per case, as a Markdown table."""

    def med(rows: list[dict[str, Any]], key: str) -> str:
        vals = [r[key] for r in rows if isinstance(r.get(key), int | float)]
        return f"{statistics.median(vals):.1f}" if vals else "–"

    def frac(rows: list[dict[str, Any]], key: str) -> str:
        return f"{sum(bool(r.get(key)) for r in rows)}/{len(rows)}"

    lines = [
        "| GCS storage | runs | head back (s) | worker node survives | actor same pid | "
        "actor state kept | actor by name (s after kill) | old driver answers again |",
        "|---|---|---|---|---|---|---|---|",
    ]
    by_case: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        by_case.setdefault(r["case"], []).append(r)
    for case, rows in by_case.items():
        if case == "nohead":
            continue
        lines.append(
            f"| {case} | {len(rows)} | {med(rows, 'head_back_after_kill_s')} | "
            f"{frac(rows, 'worker_node_alive_in_gcs')} | {frac(rows, 'same_pid')} | "
            f"{frac(rows, 'state_kept')} | {med(rows, 'actor_by_name_after_kill_s')} | "
            f"{frac(rows, 'driver_answers_after_restart')} |"
        )
    if "nohead" in by_case:
        rows = by_case["nohead"]
        lines += [
            "",
            "| head never back | runs | driver exits (s) | driver with reconnect_timeout 180 "
            "exits (s) | worker raylet exits (s) | actor answered until (s) |",
            "|---|---|---|---|---|---|",
            f"| in-memory GCS | {len(rows)} | {med(rows, 'driver_default_exit_after_s')} | "
            f"{med(rows, 'driver_reconnect180_exit_after_s')} | "
            f"{med(rows, 'worker_raylet_gone_after_s')} | {med(rows, 'actor_answered_until_s')} |",
        ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default="memory,rocksdb,redis,nohead")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--window", type=float, default=75.0, help="seconds to watch after the kill")
    ap.add_argument("--base", default="/tmp/ray_head_drill", help="temp dirs go under it")
    ap.add_argument("--json", help="also write the runs to this file")
    a = ap.parse_args()
    cases = a.cases.split(",")
    for c in cases:
        if c not in ("memory", "rocksdb", "redis", "nohead"):
            sys.exit(f"unknown case {c!r}: pick from memory, rocksdb, redis, nohead")
    if "redis" in cases and shutil.which("redis-server") is None:
        sys.exit("case redis needs redis-server on PATH (apt-get install -y redis-server)")
    if os.environ.get("DRILL_IN_NAMESPACE") != "1":
        # bash stays pid 1 of the namespace (not exec'd): it reaps the head's killed orphans.
        inner = f"ip link set lo up && {sys.executable} {shlex.join(sys.argv)}"
        env = dict(os.environ, DRILL_IN_NAMESPACE="1")
        sys.exit(
            subprocess.call(
                ["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", inner], env=env
            )
        )
    env = dict(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN=secrets.token_hex(32),
        RAY_USAGE_STATS_ENABLED="0",
        DRILL_REDIS_PASSWORD=secrets.token_hex(16),
    )
    base = Path(a.base)
    runs = []
    for run in range(1, a.runs + 1):
        for case in cases:
            r = one_run(case, run, base, env, {"nohead": 95.0}.get(case, a.window))
            print(json.dumps(r), flush=True)
            runs.append(r)
            if a.json:
                Path(a.json).write_text(json.dumps(runs, indent=1))
    print(table(runs))


if __name__ == "__main__":
    main()
