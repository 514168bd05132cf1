"""``--jobs FILE``: job specs declared in a JSON or YAML file, created at start when absent.

The file holds a list of job specs (or ``{"jobs": [...]}``). It is validated whole before the
service starts, so a bad file is one error naming the job and the field
(``jobs.yaml: jobs[1].sinks.0.path: leaves --output-dir``). A declared job is *absent* when no job
of its ``name`` is in the store, whatever its state: a declared job that an operator stopped stays
stopped across restarts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stream_pipeline.errors import ConfigError
from stream_pipeline.jobs.spec import JobSpec

__all__ = ["load_jobs_file", "read_spec_file"]


def read_spec_file(path: Path, label: str = "--jobs") -> Any:
    """The parsed content of ``path`` (``.yaml``/``.yml``: YAML, else JSON), unvalidated; a
    :class:`ConfigError` starting ``<label> <path>:`` when it cannot be read or parsed."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{label} {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError's parse errors
        raise ConfigError(f"{label} {path}: not valid: {' '.join(str(exc).split())}") from None
    except Exception as exc:  # yaml.YAMLError is no ValueError
        raise ConfigError(f"{label} {path}: not valid YAML: {' '.join(str(exc).split())}") from None


def load_jobs_file(path: Path) -> tuple[JobSpec, ...]:
    """The validated specs of ``path`` (``.yaml``/``.yml``: YAML, else JSON)."""
    raw = read_spec_file(path)
    if isinstance(raw, dict) and set(raw) == {"jobs"}:
        raw = raw["jobs"]
    if not isinstance(raw, list):
        raise ConfigError(f"--jobs {path}: expected a list of job specs (or {{'jobs': [...]}})")
    specs = []
    for i, item in enumerate(raw):
        try:
            specs.append(JobSpec.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"])
            msg = str(first["msg"]).removeprefix("Value error, ")
            raise ConfigError(
                f"--jobs {path}: jobs[{i}]{'.' + loc if loc else ''}: {msg}"
            ) from None
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ConfigError(f"--jobs {path}: job names must be unique, {dup[0]!r} is repeated")
    return tuple(specs)
