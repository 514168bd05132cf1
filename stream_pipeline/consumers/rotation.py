"""Retention of rotated files (recording segments, JSONL parts): oldest first, never the live one.

Also the parsers for the sizes and durations users write (``500M``, ``7d``).
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from stream_pipeline.errors import ConfigError

__all__ = ["Retention", "parse_duration", "parse_size", "utc_stamp"]

log = logging.getLogger(__name__)

_SIZE_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
_TIME_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_size(text: str, what: str = "size") -> int:
    """``1048576``, ``512K``, ``500M``, ``2G`` (powers of 1024; ``B``/``iB`` accepted) → bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(?:i?b)?\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{what} wants a positive size such as 500M or 2G, got {text!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])


def parse_duration(text: str, what: str = "duration") -> float:
    """``90``, ``90s``, ``30m``, ``12h``, ``7d``, ``2w`` → seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not m or float(m.group(1)) <= 0:
        raise ConfigError(f"{what} wants a positive duration such as 90s, 12h or 7d, got {text!r}")
    return float(m.group(1)) * _TIME_UNITS[m.group(2)]


def utc_stamp(unix_seconds: float) -> str:
    """``20261202T024000.123Z``: sorts as time does, safe in file names."""
    stamp = datetime.fromtimestamp(unix_seconds, tz=UTC)
    return stamp.strftime("%Y%m%dT%H%M%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class Retention:
    """Keep files at most ``max_age`` seconds old (by modification time) and at most
    ``max_bytes`` in total (the live file counts, but is never deleted). ``None``: no limit."""

    max_age: float | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.max_age is not None and not self.max_age > 0:
            raise ConfigError(f"retention age must be > 0 s, got {self.max_age!r}")
        if self.max_bytes is not None and self.max_bytes <= 0:
            raise ConfigError(f"retention size must be > 0 bytes, got {self.max_bytes!r}")

    @property
    def active(self) -> bool:
        """Whether any limit is set."""
        return self.max_age is not None or self.max_bytes is not None

    def apply(self, files: list[Path], live_bytes: int = 0, now: float | None = None) -> list[Path]:
        """Delete from ``files`` (oldest first; the live file is not among them) what is over the
        limits; returns what was deleted."""
        if not self.active:
            return []
        now = time.time() if now is None else now
        sized: list[tuple[Path, int, float]] = []
        for path in files:
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            sized.append((path, st.st_size, st.st_mtime))
        total = live_bytes + sum(size for _, size, _ in sized)
        removed = []
        for path, size, mtime in sized:
            too_old = self.max_age is not None and now - mtime > self.max_age
            too_big = self.max_bytes is not None and total > self.max_bytes
            if not (too_old or too_big):
                break  # the rest are newer, and the total fits from here on
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                log.warning("retention could not delete %s: %s", path, exc.strerror)
                continue
            total -= size
            removed.append(path)
        if removed:
            log.info("retention deleted %d file(s), oldest %s", len(removed), removed[0].name)
        return removed
