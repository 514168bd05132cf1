"""Per-class confidence thresholds: the block's ``confidence_mode`` semantics.

- ``best`` (v2 default): ``recommended.per_class_confidence`` where it lists a class, else
  ``recommended.confidence``, when the package recommends a confidence; else ``default_confidence``.
- ``default`` (and every v1 step): ``default_confidence``.
- ``custom``: ``custom_confidence`` for every class (required, in [0, 1]).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

from stream_pipeline.errors import ConfigError
from stream_pipeline.model.package import ModelPackage

__all__ = ["CONFIDENCE_MODES", "ConfidenceMode", "check_confidence", "class_thresholds"]

ConfidenceMode = Literal["best", "default", "custom"]
CONFIDENCE_MODES: tuple[ConfidenceMode, ...] = ("best", "default", "custom")


def check_confidence(mode: str, custom_confidence: float | None) -> ConfidenceMode:
    """Validate a mode and its custom value; return the mode. Raises :class:`ConfigError`."""
    if mode not in CONFIDENCE_MODES:
        raise ConfigError(
            f"confidence_mode must be one of {', '.join(CONFIDENCE_MODES)}, got {mode!r}"
        )
    if mode == "custom":
        if custom_confidence is None:
            raise ConfigError("confidence_mode 'custom' needs custom_confidence")
        if isinstance(custom_confidence, bool) or not isinstance(custom_confidence, int | float):
            raise ConfigError(f"custom_confidence must be a number, got {custom_confidence!r}")
        if not 0.0 <= float(custom_confidence) <= 1.0:
            raise ConfigError(f"custom_confidence must be in [0, 1], got {custom_confidence}")
    return mode


def class_thresholds(
    package: ModelPackage, mode: str = "best", custom_confidence: float | None = None
) -> npt.NDArray[np.float32]:
    """Threshold per class id (shape ``(len(class_names),)``, float32) for ``mode``."""
    mode = check_confidence(mode, custom_confidence)
    n = len(package.class_names)
    if mode == "custom":
        assert custom_confidence is not None
        return np.full(n, float(custom_confidence), dtype=np.float32)
    rec = package.recommended
    if mode == "best" and rec.confidence is not None:
        return np.array(
            [rec.per_class_confidence.get(name, rec.confidence) for name in package.class_names],
            dtype=np.float32,
        )
    return np.full(n, package.default_confidence, dtype=np.float32)
