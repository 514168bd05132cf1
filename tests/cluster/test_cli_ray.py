"""``serve --ray``'s flags (no cluster needed): bad use is a one-line error, exit status 2, and
Ray is not imported without ``--ray``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)


def _serve(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> str:
    base = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run(
        [sys.executable, "-m", "stream_pipeline.cli", "serve", *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=90, env=base | (env or {}),
    )  # fmt: skip
    assert done.returncode == 2, (done.returncode, done.stderr)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


def test_ray_without_token_auth_is_refused(tmp_path: Path) -> None:
    line = _serve(tmp_path, "--state-dir", "s", "--ray", "127.0.0.1:6390")
    assert "RAY_AUTH_MODE=token" in line
    assert not (tmp_path / "s").exists()  # refused before anything was created


def test_ray_needs_the_jobs_api(tmp_path: Path) -> None:
    line = _serve(tmp_path, "--ray", "auto", env={"RAY_AUTH_MODE": "token"})
    assert "--ray" in line and "--state-dir" in line


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [("--ray-max-sources", "0", "--ray-max-sources"), ("--ray-liveness-timeout", "0", "liveness")],
)
def test_ray_flags_out_of_range(tmp_path: Path, flag: str, value: str, needle: str) -> None:
    args = ("--state-dir", "s", "--ray", "auto", flag, value)
    assert needle in _serve(tmp_path, *args, env={"RAY_AUTH_MODE": "token"})


def test_the_jobs_service_does_not_import_ray() -> None:
    code = (
        "import sys; from stream_pipeline.jobs.routes import install_jobs; "
        "from stream_pipeline.cluster import parts, worker; "
        "from stream_pipeline.cluster.routes import cluster_router; "
        "print('ray' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
