"""Configuration objects. This module is the only place that reads the environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "DEFAULT_API_HOST",
    "Environment",
    "apply_runtime_defaults",
    "expand_env",
    "read_environment",
]


DEFAULT_API_HOST = "https://api.roboflow.com"


@dataclass(frozen=True, slots=True)
class Environment:
    """What the process environment says, read once.

    ``models_dir``: the local model registry (``$STREAM_PIPELINE_MODELS``, else
    ``$XDG_CACHE_HOME/stream_pipeline/models``, else ``~/.cache/stream_pipeline/models``).
    ``api_key``: the Roboflow API key for hosted models (``$ROBOFLOW_API_KEY``; never logged).
    ``api_host``: Roboflow's API (``$ROBOFLOW_API_HOST``, default ``https://api.roboflow.com``).
    ``offline``: never touch the network for models (``$STREAM_PIPELINE_OFFLINE`` = 1/true/yes).
    ``token``: the bearer token of ``stream-pipeline serve`` (``$STREAM_PIPELINE_TOKEN``; never
    logged).
    """

    models_dir: Path
    api_key: str | None = field(default=None, repr=False)
    api_host: str = DEFAULT_API_HOST
    offline: bool = False
    token: str | None = field(default=None, repr=False)


def read_environment() -> Environment:
    """Read the environment variables this package understands."""
    explicit = os.environ.get("STREAM_PIPELINE_MODELS")
    if explicit:
        models_dir = Path(explicit).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        models_dir = Path(cache) / "stream_pipeline" / "models"
    offline = os.environ.get("STREAM_PIPELINE_OFFLINE", "").strip().lower()
    return Environment(
        models_dir=models_dir,
        api_key=os.environ.get("ROBOFLOW_API_KEY") or None,
        api_host=(os.environ.get("ROBOFLOW_API_HOST") or DEFAULT_API_HOST).rstrip("/"),
        offline=offline in ("1", "true", "yes", "on"),
        token=os.environ.get("STREAM_PIPELINE_TOKEN") or None,
    )


def apply_runtime_defaults() -> None:
    """Process-wide defaults that must be in place before numba starts its thread pool.

    numba's OpenMP layer lets idle workers spin after each parallel kernel; with decode, encode
    and inference threads sharing a few cores that spinning halves encode throughput (measured:
    annotate+encode at 640x360 went from 13-15 ms to ~7-10 ms per frame with passive waiting).
    A value the user set wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(text: str) -> str:
    """``text`` with each ``${NAME}`` replaced by that environment variable's value.

    Job specs keep the references (so passwords are not stored); sources expand them when they
    open. An unset variable is a :class:`~stream_pipeline.errors.ConfigError` naming it (never
    its would-be value).
    """
    from stream_pipeline.errors import ConfigError

    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        found = os.environ.get(name)
        if found is None:
            raise ConfigError(f"environment variable {name} is not set")
        return found

    return _ENV_REF.sub(value, text)
