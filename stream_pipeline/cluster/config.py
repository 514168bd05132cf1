"""``serve --ray``'s settings (no Ray import here: the CLI builds them before Ray is loaded)."""

from __future__ import annotations

import dataclasses

__all__ = ["RayConfig"]


@dataclasses.dataclass(frozen=True, slots=True)
class RayConfig:
    """Where the cluster is and how the controller drives its actors."""

    address: str  # the head's GCS address (host:port) or "auto"
    namespace: str = "stream-pipeline"
    max_sources: int | None = None  # per actor, on top of the measured cost's limit
    utilization: float = 0.8  # of an actor's worker time its sources may take (0: no such cap)
    liveness_timeout: float = 10.0  # seconds without a status answer before an actor is lost
    poll_interval: float = 1.0  # seconds between status polls of each actor
    fetch_url: str | None = None  # this service's URL, for actors to fetch their assignment
    token: str | None = None  # its bearer token, when it has one

    def validate(self) -> None:
        """:class:`ValueError` naming the flag that is out of range."""
        if self.max_sources is not None and self.max_sources < 1:
            raise ValueError(f"--ray-max-sources must be ≥ 1, got {self.max_sources}")
        if not self.liveness_timeout > 0:
            raise ValueError(f"--ray-liveness-timeout must be > 0, got {self.liveness_timeout}")
        if not 0 <= self.utilization <= 1:
            raise ValueError(f"--ray-utilization must be in [0, 1], got {self.utilization}")
        if not self.namespace:
            raise ValueError("--ray-namespace must not be empty")
