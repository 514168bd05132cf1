"""Configuration objects. This module is the only place that reads the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Environment", "read_environment"]


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
