"""Sources: producers that decode frames into bounded rings, each in its own thread."""

from __future__ import annotations

from stream_pipeline.sources.av_source import AvSource
from stream_pipeline.sources.base import (
    ReconnectPolicy,
    Source,
    SourceSpec,
    SourceState,
    SourceStatus,
    parse_source_arg,
)
from stream_pipeline.sources.synthetic import SyntheticSource

__all__ = [
    "AvSource",
    "ReconnectPolicy",
    "Source",
    "SourceSpec",
    "SourceState",
    "SourceStatus",
    "SyntheticSource",
    "make_source",
    "parse_source_arg",
]


def make_source(spec: SourceSpec) -> Source:
    """The source implementation for ``spec.url``."""
    if spec.scheme == "synthetic":
        return SyntheticSource(spec)
    return AvSource(spec)
