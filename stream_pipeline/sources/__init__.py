"""Sources: producers of frames into bounded rings — thread sources and async sources.

:func:`make_source` picks the implementation by URL scheme from a small registry;
:func:`register_source` adds one (a new scheme goes there, nowhere else).
"""

from __future__ import annotations

from collections.abc import Callable

from stream_pipeline.sources.base import (
    AsyncSource,
    FrameClock,
    ReconnectPolicy,
    Source,
    SourceCounters,
    SourceCounts,
    SourceSpec,
    SourceState,
    parse_source_arg,
)

__all__ = [
    "AnySource",
    "AsyncSource",
    "FrameClock",
    "ReconnectPolicy",
    "Source",
    "SourceCounters",
    "SourceCounts",
    "SourceSpec",
    "SourceState",
    "make_source",
    "parse_source_arg",
    "register_source",
    "source_factory",
]

AnySource = Source | AsyncSource
SourceFactory = Callable[[SourceSpec], AnySource]

_FACTORIES: dict[str, SourceFactory] = {}


def register_source(scheme: str, factory: SourceFactory) -> None:
    """Make ``factory`` build the sources of URLs with ``scheme`` (lower case)."""
    _FACTORIES[scheme.lower()] = factory


def _synthetic(spec: SourceSpec) -> AnySource:
    from stream_pipeline.sources.synthetic import SyntheticSource

    return SyntheticSource(spec)


def _pyav(spec: SourceSpec) -> AnySource:
    from stream_pipeline.sources.av_source import AvSource

    return AvSource(spec)


register_source("synthetic", _synthetic)


def source_factory(spec: SourceSpec) -> SourceFactory:
    """The factory that builds ``spec``'s source: a registered scheme's, else PyAV's."""
    return _FACTORIES.get(spec.scheme, _pyav)


def make_source(spec: SourceSpec) -> AnySource:
    """The source for ``spec.url``: a registered scheme's factory, else PyAV (files, RTSP, …)."""
    return source_factory(spec)(spec)
