"""Configuration objects. This module is the only place that reads the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Environment", "apply_runtime_defaults", "read_environment"]


@dataclass(frozen=True, slots=True)
class Environment:
    """What the process environment says, read once.

    ``models_dir``: the local model registry (``$STREAM_PIPELINE_MODELS``, else
    ``$XDG_CACHE_HOME/stream_pipeline/models``, else ``~/.cache/stream_pipeline/models``).
    """

    models_dir: Path


def read_environment() -> Environment:
    """Read the environment variables this package understands."""
    explicit = os.environ.get("STREAM_PIPELINE_MODELS")
    if explicit:
        return Environment(models_dir=Path(explicit).expanduser())
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Environment(models_dir=Path(cache) / "stream_pipeline" / "models")


def apply_runtime_defaults() -> None:
    """Process-wide defaults that must be in place before numba starts its thread pool.

    numba's OpenMP layer lets idle workers spin after each parallel kernel; with decode, encode
    and inference threads sharing a few cores that spinning halves encode throughput (measured:
    annotate+encode at 640x360 went from 13-15 ms to ~7-10 ms per frame with passive waiting).
    A value the user set wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
