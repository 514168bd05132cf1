"""A real multi-node Ray cluster on this one machine, for the cluster tests (``tests/cluster``).

Why real ``ray start`` nodes rather than ``ray.cluster_utils.Cluster``: production runs on
``ray start`` nodes, and what the tests must exercise lives in those processes — a raylet killed
with SIGKILL, a node joining later, token auth between nodes, per-node GPUs and custom resources.

Why only inside a private network + PID namespace (``scripts/test_cluster.sh`` makes one and sets
``SP_RAY_NETNS=1``; :meth:`RayCluster.start` refuses anywhere else):

* Outside a network namespace that holds only ``lo``, Ray rewrites ``--node-ip-address=127.0.0.1``
  to the host's routable address, and several of its ports bind the wildcard address: a test would
  expose Ray on the host's network. Inside, everything stays on 127.0.0.1.
* ``ray stop`` is machine-wide: on a shared machine it would kill everyone else's Ray. Inside a PID
  namespace it sees only this cluster's processes, and so does :meth:`RayCluster.ray_processes`.
* A killed raylet leaves orphans (its log monitor, agents on their way out); bash, pid 1 of the
  namespace, reaps them, and when the namespace ends the kernel kills whatever is left.

Several nodes on one IP need disjoint port sets; the layout is the one ``scripts/ray_head_drill.py``
proved: the head on 6390 (GCS) and 6400–6405, worker node ``i`` on ``6410+10*i`` … ``6415+10*i``,
worker processes on 10000–10099 (head) and ``10100+100*i`` … ``10199+100*i``.

This module imports no Ray: node state is read by a small helper process (see
:meth:`RayCluster.nodes`), so the test process stays free to be a driver of its own, or not.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DRIVER_ENV",
    "GCS_PORT",
    "HEAD_PORTS",
    "HEALTH_CHECK_ENV",
    "MAX_WORKERS",
    "NodeInfo",
    "NodePorts",
    "RayCluster",
    "in_cluster_namespace",
    "proc_table",
    "ray_processes",
    "worker_ports",
]

RAY = str(Path(sys.executable).with_name("ray"))
GCS_PORT = 6390
# Worker node ports grow by 10 per node from 6410 and must stay below the head's worker range.
MAX_WORKERS = 50
# Process command lines that belong to Ray. The brief's list, plus "autoscaler" (the head's
# monitor.py matches none of the others) and the client server where ray[client] is installed.
RAY_MARKERS = (
    "raylet",
    "gcs_server",
    "ray::",
    "log_monitor",
    "dashboard",
    "runtime_env",
    "default_worker",
    "autoscaler",
    "ray_client_server",
)
# Node death detected in ~3 s instead of the default ~30 s (GCS settings: the head only).
HEALTH_CHECK_ENV = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_failure_threshold": "3",
    "RAY_health_check_timeout_ms": "1000",
}
COMMON_ARGS = (
    "--node-ip-address=127.0.0.1",
    "--num-cpus=1",
    "--object-store-memory=100000000",
    "--disable-usage-stats",
)
START_TIMEOUT_S = 120.0
# What a driver process needs in its environment, besides the address.
DRIVER_ENV = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_USAGE_STATS_ENABLED")

# Reads the GCS node table the way ray.nodes() does, without ray.init(): not a driver, so no job
# in the cluster, nothing tied to a raylet, and it reconnects across GCS hiccups. Private API; the
# ray pin (==2.60.0) keeps it stable. One JSON line per poll on stdout.
_NODES_HELPER = """\
import json, sys, time
from ray._private import services, state

gs = state.GlobalState()
gs._initialize_global_state(services._get_gcs_client_options(sys.argv[1]))
while True:
    try:
        out = {"nodes": [
            {"id": n["NodeID"], "alive": bool(n["Alive"]), "port": int(n["NodeManagerPort"]),
             "resources": n.get("Resources") or {}}
            for n in gs.node_table()
        ]}
    except Exception as e:
        out = {"error": repr(e)}
    print(json.dumps(out), flush=True)
    time.sleep(float(sys.argv[2]))
"""


@dataclass(frozen=True)
class NodePorts:
    """The ports one node listens on; two nodes on one IP must share none of them."""

    node_manager: int
    object_manager: int
    dashboard_agent_listen: int
    metrics_export: int
    runtime_env_agent: int
    dashboard_agent_grpc: int
    min_worker: int
    max_worker: int

    def args(self) -> list[str]:
        """The ``ray start`` flags for this port set."""
        return [
            f"--node-manager-port={self.node_manager}",
            f"--object-manager-port={self.object_manager}",
            f"--dashboard-agent-listen-port={self.dashboard_agent_listen}",
            f"--metrics-export-port={self.metrics_export}",
            f"--runtime-env-agent-port={self.runtime_env_agent}",
            f"--dashboard-agent-grpc-port={self.dashboard_agent_grpc}",
            f"--min-worker-port={self.min_worker}",
            f"--max-worker-port={self.max_worker}",
        ]


def _port_block(base: int, workers_from: int) -> NodePorts:
    return NodePorts(
        node_manager=base,
        object_manager=base + 1,
        dashboard_agent_listen=base + 2,
        metrics_export=base + 3,
        runtime_env_agent=base + 4,
        dashboard_agent_grpc=base + 5,
        min_worker=workers_from,
        max_worker=workers_from + 99,
    )


HEAD_PORTS = _port_block(6400, 10000)


def worker_ports(index: int) -> NodePorts:
    """The port set of worker node ``index`` (0-based)."""
    if not 0 <= index < MAX_WORKERS:
        raise ValueError(f"worker index {index} outside 0..{MAX_WORKERS - 1}")
    return _port_block(6410 + 10 * index, 10100 + 100 * index)


@dataclass(frozen=True)
class NodeInfo:
    """One row of the GCS node table (what ``ray.nodes()`` reports), the fields tests use."""

    node_id: str
    alive: bool
    node_manager_port: int
    resources: Mapping[str, float] = field(default_factory=dict)

    @property
    def is_head(self) -> bool:
        return self.node_manager_port == HEAD_PORTS.node_manager


def in_cluster_namespace() -> bool:
    """True inside ``scripts/test_cluster.sh``'s namespace: ``SP_RAY_NETNS=1`` and only ``lo``.

    The interfaces come from ``if_nameindex()`` (netlink, this process's network namespace), not
    ``/sys/class/net``: sysfs shows the namespace of whoever mounted it, which after a plain
    ``unshare -n`` is still the host's.
    """
    if os.environ.get("SP_RAY_NETNS") != "1":
        return False
    try:
        names = [name for _, name in socket.if_nameindex()]
    except OSError:
        return False
    return names == ["lo"]


def proc_table() -> dict[int, tuple[int, list[str]]]:
    """Live (not zombie) processes: pid -> (ppid, argv)."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            raw = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] == "Z" or not raw:  # zombies wait for pid 1; kernel threads have no argv
            continue
        argv = raw.rstrip(b"\0").decode(errors="replace").split("\0")
        table[int(entry.name)] = (int(fields[1]), argv)
    return table


def _ancestors(table: Mapping[int, tuple[int, list[str]]]) -> set[int]:
    """This process and its ancestors: their command lines carry pytest's arguments (``-k
    raylet``…), which must not count as Ray processes."""
    out: set[int] = set()
    pid = os.getpid()
    while pid > 0 and pid not in out:
        out.add(pid)
        pid = table[pid][0] if pid in table else 0
    return out


def ray_processes(exclude: set[int] | None = None) -> list[tuple[int, str]]:
    """Ray's processes visible here, as (pid, command line): inside the cluster namespace, this
    cluster's. Zombies, this process, its ancestors and ``exclude`` are left out."""
    table = proc_table()
    skip = _ancestors(table) | (exclude or set())
    found = []
    for pid, (_, argv) in sorted(table.items()):
        cmd = " ".join(argv)
        if pid not in skip and any(m in cmd for m in RAY_MARKERS):
            found.append((pid, cmd))
    return found


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no output)"


@dataclass
class _Worker:
    index: int
    ports: NodePorts
    temp_dir: Path


class _NodesReader:
    """The helper process that streams the node table, and the thread that keeps its last line."""

    def __init__(self, script: Path, address: str, env: Mapping[str, str], log: Path) -> None:
        self._log = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), address, "0.25"],
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self._cond = threading.Condition()
        self._latest: tuple[float, dict[str, Any]] | None = None
        self._thread = threading.Thread(
            target=self._read, args=(self.proc.stdout,), name="raycluster-nodes", daemon=True
        )
        self._thread.start()

    def _read(self, stream: IO[str] | None) -> None:
        assert stream is not None
        for line in stream:
            try:
                parsed = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self._latest = (time.monotonic(), parsed)
                self._cond.notify_all()
        with self._cond:  # EOF: the helper is gone; wake waiters so they can restart it
            self._cond.notify_all()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def snapshot_after(self, since: float, timeout: float) -> dict[str, Any] | None:
        """The first line read after ``since`` (monotonic), or None if none came in time."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._latest is None or self._latest[0] <= since:
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive():
                    return None
                self._cond.wait(min(left, 0.5))
            return self._latest[1]

    def close(self) -> None:
        if self.alive():
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._thread.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


class RayCluster:
    """A head node and ``workers`` worker nodes started with ``ray start``, token auth on.

    The head has no GPU and no ``stream_pipeline`` resource, so actors that ask for them land on
    worker nodes only; each worker node has ``--num-gpus=1`` (a fake GPU: actors there get
    ``CUDA_VISIBLE_DEVICES=0``) and ``{"stream_pipeline": 1}``. ``base`` keeps the ``ray start``
    output and, after :meth:`stop`, the nodes' logs; the nodes' own temp dirs live under a short
    ``/tmp/rt-XXXXXX`` because Ray's unix socket paths must stay under ~107 characters.
    """

    address = f"127.0.0.1:{GCS_PORT}"

    def __init__(
        self, base: Path, workers: int = 2, health_checks: Mapping[str, str] | None = None
    ) -> None:
        self.base = Path(base)
        self.workers = workers
        # The head's node health checks: tuned (dead in ~3 s) unless given ({}: Ray's defaults).
        self.health_checks = dict(HEALTH_CHECK_ENV if health_checks is None else health_checks)
        env = dict(os.environ)
        # Ray reads the auth settings once per process (at the first `import ray`), so a driver in
        # this process works only with the token its environment had from the start:
        # scripts/test_cluster.sh exports one, and the cluster adopts it. Otherwise (drivers only in
        # child processes, given .env) a fresh one.
        token = env.get("RAY_AUTH_TOKEN") if env.get("RAY_AUTH_MODE") == "token" else None
        # A stray RAY_ADDRESS or token file setting would point drivers and nodes elsewhere.
        for stale in ("RAY_ADDRESS", "RAY_AUTH_TOKEN_PATH"):
            env.pop(stale, None)
        # RAY_AUTH_MODE set explicitly everywhere: unset, ray.init() creates ~/.ray/auth_token and
        # `ray start --head` then turns auth on while worker nodes do not (reference §3.1.3).
        env |= {
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": token or secrets.token_hex(32),
            "RAY_USAGE_STATS_ENABLED": "0",
        }
        self.env: dict[str, str] = env
        self.temp_root: Path | None = None
        self._workers: dict[int, _Worker] = {}
        self._next_index = 0
        self._started = False
        self._reader: _NodesReader | None = None

    # -- starting ---------------------------------------------------------------------------

    def driver_ready(self) -> bool:
        """Whether this process can be a driver of the cluster: its environment had the cluster's
        auth settings before Ray was imported (see ``__init__``)."""
        return all(os.environ.get(k) == self.env[k] for k in DRIVER_ENV)

    def start(self) -> RayCluster:
        """Start the head, then the worker nodes, and wait until all are alive in the GCS."""
        if not in_cluster_namespace():
            raise RuntimeError(
                "RayCluster runs only inside scripts/test_cluster.sh's namespace (SP_RAY_NETNS=1, "
                "only lo): outside one, Ray binds the host's network and `ray stop` kills every "
                "Ray on the machine"
            )
        if self._started:
            raise RuntimeError("cluster already started")
        self._started = True
        self.base.mkdir(parents=True, exist_ok=True)
        self.temp_root = self._make_temp_root()
        try:
            self._ray_start(
                "head",
                [
                    "--head",
                    f"--port={GCS_PORT}",
                    *HEAD_PORTS.args(),
                    "--num-gpus=0",
                    "--include-dashboard=false",
                ],
                self.temp_root / "h",
                self.env | self.health_checks,
            )
            for _ in range(self.workers):
                self._start_worker()
            self.wait_nodes(1 + self.workers, timeout=60)
        except BaseException:
            self.stop()
            raise
        return self

    def add_worker(self) -> int:
        """Start one more worker node on the next unused port block; its index, once it is alive.

        Indices are never reused: a killed node's ports may still be held by its dying agents.
        """
        if not self._started:
            raise RuntimeError("start the cluster first")
        index = self._start_worker()
        port = self._workers[index].ports.node_manager
        self._wait(lambda nodes: any(n.alive and n.node_manager_port == port for n in nodes), 60)
        return index

    def _start_worker(self) -> int:
        assert self.temp_root is not None
        index = self._next_index
        ports = worker_ports(index)
        self._next_index += 1
        temp = self.temp_root / f"w{index}"
        self._workers[index] = _Worker(index, ports, temp)
        self._ray_start(
            f"worker{index}",
            [
                f"--address={self.address}",
                *ports.args(),
                "--num-gpus=1",
                '--resources={"stream_pipeline": 1}',
            ],
            temp,
            self.env,
        )
        return index

    def _ray_start(self, name: str, args: list[str], temp: Path, env: Mapping[str, str]) -> None:
        log = self.base / f"ray-start-{name}.log"
        with log.open("w") as out:
            try:
                done = subprocess.run(
                    [RAY, "start", *args, *COMMON_ARGS, f"--temp-dir={temp}"],
                    env=dict(env),
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=START_TIMEOUT_S,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"ray start ({name}) hung; its output:\n{_tail(log)}") from None
        if done.returncode != 0:
            raise RuntimeError(
                f"ray start ({name}) failed with {done.returncode}; its output:\n{_tail(log)}"
            )

    @staticmethod
    def _make_temp_root() -> Path:
        for _ in range(20):
            path = Path(f"/tmp/rt-{secrets.token_hex(3)}")
            try:
                path.mkdir(mode=0o700)
            except FileExistsError:
                continue
            return path
        raise RuntimeError("no free /tmp/rt-XXXXXX name")

    # -- nodes --------------------------------------------------------------------------------

    def node_manager_port(self, index: int) -> int:
        """The raylet port of worker node ``index`` (``NodeManagerPort`` in ``ray.nodes()``)."""
        return self._worker(index).ports.node_manager

    def worker_index(self, node_manager_port: int) -> int:
        """Which worker node has this raylet port (the inverse of :meth:`node_manager_port`)."""
        for w in self._workers.values():
            if w.ports.node_manager == node_manager_port:
                return w.index
        raise KeyError(f"no worker node on port {node_manager_port}")

    def nodes(self, timeout: float = 10.0) -> list[NodeInfo]:
        """The GCS node table as it is now (read after this call began), dead nodes included."""
        if not self._started or self.temp_root is None:
            raise RuntimeError("start the cluster first")
        since = time.monotonic()
        deadline = since + timeout
        last_error = "no answer"
        while True:
            reader = self._nodes_reader()
            snap = reader.snapshot_after(since, max(0.0, deadline - time.monotonic()))
            if snap is not None and "nodes" in snap:
                return [
                    NodeInfo(n["id"], n["alive"], n["port"], dict(n["resources"]))
                    for n in snap["nodes"]
                ]
            if snap is not None:
                last_error = str(snap.get("error"))
                since = time.monotonic()  # an error line: wait for the next one
            if time.monotonic() >= deadline:
                raise TimeoutError(f"node table not readable within {timeout} s: {last_error}")

    def node_id(self, index: int, timeout: float = 10.0) -> str:
        """The node id of worker node ``index`` (its latest registration, alive or not)."""
        port = self.node_manager_port(index)
        matches = [n for n in self.nodes(timeout) if n.node_manager_port == port]
        if not matches:
            raise KeyError(f"worker node {index} (port {port}) is not in the node table")
        return next((n.node_id for n in matches if n.alive), matches[-1].node_id)

    def wait_nodes(self, alive: int, timeout: float = 60.0) -> list[NodeInfo]:
        """Wait until exactly ``alive`` nodes are alive in the GCS; the node table then."""
        return self._wait(lambda nodes: sum(n.alive for n in nodes) == alive, timeout, alive)

    def _wait(
        self, ok: Callable[[list[NodeInfo]], bool], timeout: float, want: object = None
    ) -> list[NodeInfo]:
        deadline = time.monotonic() + timeout
        nodes: list[NodeInfo] = []
        while True:
            nodes = self.nodes(timeout=max(1.0, deadline - time.monotonic()))
            if ok(nodes):
                return nodes
            if time.monotonic() >= deadline:
                seen = [(n.node_manager_port, n.alive) for n in nodes]
                raise TimeoutError(f"nodes not as wanted ({want}) in {timeout} s: {seen}")
            time.sleep(0.2)

    def _nodes_reader(self) -> _NodesReader:
        # Started lazily and again if it died (e.g. a GCS restart made it exit).
        if self._reader is not None and not self._reader.alive():
            self._reader.close()
            self._reader = None
        if self._reader is None:
            assert self.temp_root is not None
            script = self.temp_root / "nodes_helper.py"
            script.write_text(_NODES_HELPER)
            self._reader = _NodesReader(
                script, self.address, self.env, self.base / "nodes-helper.log"
            )
        return self._reader

    # -- failures -----------------------------------------------------------------------------

    def raylet_pid(self, index: int) -> int | None:
        """The pid of worker node ``index``'s raylet, None when it is not running."""
        flag = f"--node_manager_port={self.node_manager_port(index)}"
        for pid, (_, argv) in proc_table().items():
            if argv[0].endswith("/raylet") and flag in argv:
                return pid
        return None

    def kill_worker(self, index: int) -> float:
        """SIGKILL worker node ``index``'s raylet (a node crash, as Ray sees it); the
        ``time.monotonic()`` of the kill. Its agents and workers notice and exit by themselves."""
        pid = self.raylet_pid(index)
        if pid is None:
            raise RuntimeError(f"worker node {index} has no running raylet")
        os.kill(pid, signal.SIGKILL)
        return time.monotonic()

    def _worker(self, index: int) -> _Worker:
        try:
            return self._workers[index]
        except KeyError:
            raise KeyError(f"no worker node {index}") from None

    # -- stopping -----------------------------------------------------------------------------

    def ray_processes(self) -> list[tuple[int, str]]:
        """Ray's processes in this namespace as (pid, command line), the nodes helper excepted."""
        helper = {self._reader.proc.pid} if self._reader is not None else set()
        return ray_processes(exclude=helper)

    def stop(self, timeout: float = 30.0) -> list[tuple[int, str]]:
        """``ray stop --force``, then wait for every Ray process to be gone; those still there
        after ``timeout`` (then killed), so a test can assert the list is empty.

        A driver still connected in this process is shut down first: its core worker would
        otherwise see its raylet die and exit the whole process. Idempotent.
        """
        if not self._started:
            return []
        self._started = False
        ray_module = sys.modules.get("ray")
        if ray_module is not None and ray_module.is_initialized():
            ray_module.shutdown()
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        log = self.base / "ray-stop.log"
        with log.open("a") as out, contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [RAY, "stop", "--force"],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                timeout=60,
                check=False,
            )
        deadline = time.monotonic() + timeout
        left = self.ray_processes()
        while left and time.monotonic() < deadline:
            time.sleep(0.2)
            left = self.ray_processes()
        for pid, _ in left:  # reported to the caller, but not left running
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self._keep_logs()
        return left

    def _keep_logs(self) -> None:
        """Move the nodes' temp dirs (their logs) under ``base``: /tmp stays clean and pytest's
        tmp dir rotation ages them out."""
        if self.temp_root is None:
            return
        target = self.base / "nodes"
        with contextlib.suppress(OSError):
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(str(self.temp_root), str(target))
        shutil.rmtree(self.temp_root, ignore_errors=True)
        self.temp_root = None
