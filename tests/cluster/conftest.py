"""The session's Ray cluster: a head and two worker nodes, real ``ray start`` processes.

These tests run only through ``scripts/test_cluster.sh``, which puts pytest in a private network
and PID namespace (see ``tests/support/raycluster.py`` for why). Anywhere else the fixture fails
rather than skips: a cluster suite that silently skips would pass CI while testing nothing. The
main suite (``scripts/test.sh``) deselects these tests with ``-m "not cluster"``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.raycluster import RayCluster, in_cluster_namespace


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    if not in_cluster_namespace():
        pytest.fail(
            "the cluster tests run only inside scripts/test_cluster.sh's namespace "
            "(SP_RAY_NETNS=1 and only lo): run scripts/test_cluster.sh",
            pytrace=False,
        )
    # Ray creates ~/.ray/auth_token when RAY_AUTH_MODE is unset; the harness sets it everywhere,
    # and this checks that nothing here created one.
    token_file = Path.home() / ".ray" / "auth_token"
    had_token = token_file.exists()
    cluster = RayCluster(tmp_path_factory.mktemp("ray"), workers=2)
    try:
        cluster.start()
        yield cluster
    finally:
        leftovers = cluster.stop()
    assert not leftovers, f"Ray processes left after stop(): {leftovers}"
    assert had_token or not token_file.exists(), f"the cluster tests created {token_file}"
