"""Smoke test of the cluster harness: the failover the service relies on, on real nodes.

Two detached GPU actors land on the two worker nodes (never the head); one worker node's raylet
is killed; Ray marks that node dead within seconds (tuned health checks); a new node joins and
the orphaned actor comes back on it while the other actor is untouched. If this fails, the
harness or the Ray behaviour the cluster code is built on has changed. It leaves the shared
session cluster as it found it: two live worker nodes (one of them new) and no actors.
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest

from tests.support.raycluster import HEAD_PORTS, RayCluster

pytestmark = pytest.mark.cluster

NAMESPACE = "sp-test"


class Probe:
    """A tiny async actor body: where it runs. Module level, so workers import it by name (Ray
    puts the driver's working directory, the repo root, on their sys.path)."""

    async def status(self) -> tuple[int, str]:
        import ray

        return os.getpid(), ray.get_runtime_context().get_node_id()


def _alive(node_id: str) -> bool:
    import ray

    nodes = ray.nodes()  # type: ignore[no-untyped-call]
    return any(n["NodeID"] == node_id and n["Alive"] for n in nodes)


def _status_on(handle: Any, node_id: str, timeout: float) -> tuple[int, str]:
    """The actor's status once it answers from ``node_id``; fails after ``timeout`` s."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        # max_task_retries=-1: a call made while the actor restarts waits for it, so one pending
        # call at a time is enough; errors (e.g. actor unavailable) get a fresh one.
        ref = handle.status.remote()
        try:
            pid, node = ray.get(ref, timeout=max(0.1, deadline - time.monotonic()))
        except GetTimeoutError as e:
            last = e
            break
        except RayActorError as e:
            last = e
            time.sleep(0.5)
            continue
        if node == node_id:
            return int(pid), str(node)
        last = (pid, node)
        time.sleep(0.5)
    pytest.fail(f"the actor did not answer from node {node_id} within {timeout} s: {last!r}")


def test_actor_fails_over_to_a_new_node(ray_cluster: RayCluster) -> None:
    import ray

    # Ray reads the auth settings once per process, when first imported (possibly while other
    # modules were collected): setting them now would be too late.
    assert ray_cluster.driver_ready(), "run via scripts/test_cluster.sh: it exports the token"
    ray.init(address=ray_cluster.address, namespace=NAMESPACE)
    actor_cls = ray.remote(
        num_cpus=0,
        num_gpus=1,
        resources={"stream_pipeline": 1},
        max_restarts=-1,
        max_task_retries=-1,
    )(Probe)
    handles: dict[str, Any] = {}
    try:
        for name in ("probe-a", "probe-b"):
            handles[name] = actor_cls.options(
                name=name, lifetime="detached", get_if_exists=True
            ).remote()
        first = {name: ray.get(h.status.remote(), timeout=60) for name, h in handles.items()}
        nodes = {n["NodeID"]: n for n in ray.nodes()}  # type: ignore[no-untyped-call]
        placed = {node for _, node in first.values()}
        assert len(placed) == 2, f"both actors on one node: {first}"
        head_port = HEAD_PORTS.node_manager
        assert all(nodes[n]["NodeManagerPort"] != head_port for n in placed), "an actor on the head"

        victim_node = first["probe-a"][1]
        victim = ray_cluster.worker_index(nodes[victim_node]["NodeManagerPort"])
        killed_at = ray_cluster.kill_worker(victim)
        while _alive(victim_node):
            assert time.monotonic() - killed_at < 15, "node not marked dead within 15 s"
            time.sleep(0.25)
        dead_after = time.monotonic() - killed_at

        joined_at = time.monotonic()
        new_index = ray_cluster.add_worker()
        new_node = ray_cluster.node_id(new_index)
        left = 30 - (time.monotonic() - joined_at)
        pid, _ = _status_on(handles["probe-a"], new_node, timeout=left)
        back_after = time.monotonic() - joined_at
        assert pid != first["probe-a"][0]
        # Shown with -s (and on failure): the figures the timeouts above are sized against.
        print(
            f"node dead {dead_after:.1f} s after the kill; actor back {back_after:.1f} s after add_worker"
        )
        assert ray.get(handles["probe-b"].status.remote(), timeout=10) == first["probe-b"], (
            "the actor on the surviving node moved or restarted"
        )
    finally:
        for h in handles.values():
            ray.kill(h, no_restart=True)
        ray.shutdown()
