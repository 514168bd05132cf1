"""Per-class confidence thresholds: the block's ``confidence_mode`` semantics, as Roboflow's
``ConfidenceFilter`` resolves them.

- ``best`` (v2 default): ``recommended.per_class_confidence`` where it lists a class, else
  ``recommended.confidence``, when the package recommends both; else ``recommended.confidence``;
  else ``default_confidence``.
- ``default``: ``default_confidence``.
- ``custom``: ``custom_confidence`` for every class (required, in [0, 1]). A mode given as a number
  (``0.5`` or ``"0.5"``) is custom with that number, as in Roboflow.
- Every **v1** step: custom 0.4 (:data:`V1_CONFIDENCE`): Roboflow's v1 block sends no confidence,
  so its request default applies.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from stream_pipeline.errors import ConfigError
from stream_pipeline.model.package import ModelPackage

__all__ = [
    "CONFIDENCE_MODES",
    "V1_CONFIDENCE",
    "ConfidenceMode",
    "check_confidence",
    "class_thresholds",
    "numeric_mode",
    "resolve_confidence",
]

ConfidenceMode = Literal["best", "default", "custom"]
CONFIDENCE_MODES: tuple[ConfidenceMode, ...] = ("best", "default", "custom")
V1_CONFIDENCE = 0.4


def numeric_mode(value: Any) -> float | None:
    """A ``confidence_mode`` that is a number (``0.5`` or ``"0.5"``) as a float, else None."""
    if isinstance(value, bool) or value in CONFIDENCE_MODES:
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def resolve_confidence(mode: Any, custom_confidence: Any) -> tuple[ConfidenceMode, float | None]:
    """Validate a mode and its custom value: ``(mode, custom)`` with a numeric mode as custom.

    Raises :class:`ConfigError` naming the bad value.
    """
    if mode not in CONFIDENCE_MODES:
        as_number = numeric_mode(mode)
        if as_number is None:
            raise ConfigError(
                f"confidence_mode must be one of {', '.join(CONFIDENCE_MODES)} or a number, "
                f"got {mode!r}"
            )
        mode, custom_confidence = "custom", as_number
    if mode == "custom":
        if custom_confidence is None:
            raise ConfigError("confidence_mode 'custom' needs custom_confidence")
        if isinstance(custom_confidence, bool) or not isinstance(custom_confidence, int | float):
            raise ConfigError(f"custom_confidence must be a number, got {custom_confidence!r}")
        if not 0.0 <= float(custom_confidence) <= 1.0:
            raise ConfigError(f"custom_confidence must be in [0, 1], got {custom_confidence}")
        return "custom", float(custom_confidence)
    return mode, None


def check_confidence(mode: Any, custom_confidence: Any) -> ConfidenceMode:
    """Validate a mode and its custom value; return the mode (``custom`` for a number)."""
    return resolve_confidence(mode, custom_confidence)[0]


def class_thresholds(
    package: ModelPackage, mode: Any = "best", custom_confidence: Any = None
) -> npt.NDArray[np.float32]:
    """Threshold per class id (shape ``(len(class_names),)``, float32) for ``mode``."""
    mode, custom = resolve_confidence(mode, custom_confidence)
    n = len(package.class_names)
    if mode == "custom":
        assert custom is not None
        return np.full(n, custom, dtype=np.float32)
    rec = package.recommended
    if mode == "best" and rec.confidence is not None:
        if rec.per_class_confidence:
            per_class = rec.per_class_confidence
            names = package.class_names
            return np.array([per_class.get(n, rec.confidence) for n in names], dtype=np.float32)
        return np.full(n, rec.confidence, dtype=np.float32)
    return np.full(n, package.default_confidence, dtype=np.float32)
