"""How many parts an actor takes: from the model's measured cost, or a configured cap.

An actor's workers time every batch (``WorkerMeters.cost``: preprocess and infer per batch,
postprocess per frame), so the seconds of worker time one frame costs are measured, on that
actor's GPU (or CPU), for the models it runs. A source at ``fps`` frames a second then takes
``fps × cost`` of the worker's time, and an actor takes
``floor(utilization / (cost × mean fps of its sources))`` of them: the streams per GPU the model
allows at the frame rates the cameras really have. Until enough frames were measured (or with
``utilization`` 0) only ``--ray-max-sources`` limits it; with both, the smaller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["MIN_FRAMES", "capacity", "source_rates"]

MIN_FRAMES = 100  # frames an actor must have processed before its cost is trusted


def capacity(
    cost: Mapping[str, float] | None,
    rates: Sequence[float],
    utilization: float,
    max_sources: int | None,
) -> int | None:
    """Parts the actor may hold (``None``: no limit known). ``cost``: its ``{"frames",
    "seconds"}``; ``rates``: the fps of the sources it runs now."""
    measured = None
    if utilization > 0 and cost is not None and cost["frames"] >= MIN_FRAMES and rates:
        per_frame = cost["seconds"] / cost["frames"]
        rate = sum(rates) / len(rates)
        if per_frame > 0 and rate > 0:
            measured = max(1, math.floor(utilization / (per_frame * rate)))
    if max_sources is None:
        return measured
    return max_sources if measured is None else min(max_sources, measured)


def source_rates(status: Mapping[str, Any]) -> list[float]:
    """The fps of each running part of an actor's status."""
    return [
        float(source["fps"])
        for part in status.get("parts", {}).values()
        for source in part.get("sources", ())
        if source.get("state") == "streaming" and source.get("fps", 0) > 0
    ]
