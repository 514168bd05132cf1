"""Fixtures of the server tests: a loopback-only network namespace and a CPU engine."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from stream_pipeline.engine import Engine
from tests.support.netns import loopback_namespace, netns_unavailable


@pytest.fixture
def netns() -> Iterator[None]:
    """The test's thread in a namespace holding only ``lo`` (skips where none can be made)."""
    why = netns_unavailable()
    if why is not None:
        pytest.skip(why)
    with loopback_namespace():
        yield


@pytest.fixture
async def engine(netns: None) -> AsyncIterator[Engine]:
    async with Engine(device="cpu", threads=1) as engine:
        yield engine
