"""The Ray actor: :class:`~stream_pipeline.cluster.worker.StreamWorker` as a detached, named,
async actor, one per GPU slot (this module imports Ray; only ``serve --ray`` and actors load it).

Options (measured in ../shared/reference/ray-scale-out.md): ``num_cpus=0`` (a 1-CPU default would
block placement on small nodes), ``num_gpus=1`` (Ray sets ``CUDA_VISIBLE_DEVICES`` to that GPU),
one ``stream_pipeline`` custom resource (the slot: a node offers as many as it has GPUs for
streams), ``max_restarts=-1`` (a crashed actor comes back, on a node with a free slot),
``max_task_retries=-1`` (control calls made while it is down wait; the controller always uses
timeouts), ``lifetime="detached"`` with a name and a fixed namespace (a restarted service finds
them), ``get_if_exists=True`` (creating is idempotent). ``status`` runs in a concurrency group of
its own, so a slow ``apply`` never delays a liveness answer.
"""

from __future__ import annotations

from typing import Any

import ray

from stream_pipeline.cluster.worker import StreamWorker, WorkerSettings

__all__ = ["SLOT_RESOURCE", "WorkerActor", "actor_index", "actor_name", "worker_actor"]

SLOT_RESOURCE = "stream_pipeline"  # ray start --resources '{"stream_pipeline": <GPUs>}'
_PREFIX = "worker-"


def actor_name(index: int) -> str:
    """The name of the ``index``-th actor (``worker-0``, ``worker-1``, …)."""
    return f"{_PREFIX}{index}"


def actor_index(name: str) -> int | None:
    """The index of an actor named by :func:`actor_name`; ``None`` for any other name."""
    tail = name.removeprefix(_PREFIX)
    return int(tail) if name.startswith(_PREFIX) and tail.isdigit() else None


@ray.remote(  # type: ignore[call-overload]  # concurrency_groups is not in Ray's stubs
    num_cpus=0,
    num_gpus=1,
    resources={SLOT_RESOURCE: 1},
    max_restarts=-1,
    max_task_retries=-1,
    concurrency_groups={"status": 2, "control": 1},
)
class WorkerActor:
    """See the module docstring."""

    async def __init__(self, name: str, settings: WorkerSettings) -> None:  # type: ignore[misc]
        context = ray.get_runtime_context()
        address = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]
        self.worker = StreamWorker(name, settings, node=context.get_node_id(), address=address)
        self.worker.reconstructed = context.was_current_actor_reconstructed
        await self.worker.start()

    @ray.method(concurrency_group="status")
    async def status(self) -> dict[str, Any]:
        """The actor's status (see :meth:`StreamWorker.status`)."""
        return self.worker.status()

    @ray.method(concurrency_group="control")
    async def apply(self, version: str, parts: dict[str, str]) -> dict[str, Any]:
        """Run exactly ``parts`` (see :meth:`StreamWorker.apply`)."""
        return await self.worker.apply(version, parts)

    @ray.method(concurrency_group="control")
    async def shutdown(self) -> None:
        """Stop every part (resumable) before the controller kills the actor."""
        await self.worker.aclose()


def worker_actor(name: str, namespace: str, settings: WorkerSettings) -> Any:
    """The actor ``name``: created if absent (pending until a slot is free), else the one there."""
    return WorkerActor.options(  # type: ignore[attr-defined]
        name=name, namespace=namespace, lifetime="detached", get_if_exists=True
    ).remote(name, settings)
