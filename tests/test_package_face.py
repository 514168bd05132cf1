"""The package's face is lazy and leaves the process environment alone."""

from __future__ import annotations

import subprocess
import sys


def _run_clean(code: str) -> None:
    """Run ``code`` in a fresh interpreter (nothing imported yet); its assertions must hold."""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr


def test_importing_errors_loads_no_runtime() -> None:
    code = (
        "import os, sys\n"
        "before = dict(os.environ)\n"
        "import stream_pipeline, stream_pipeline.errors\n"
        "from stream_pipeline import ConfigError\n"
        "heavy = [m for m in ('onnxruntime', 'av', 'numba', 'aiortc') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert dict(os.environ) == before, 'the environment changed on import'\n"
        "assert issubclass(ConfigError, ValueError)\n"
        "from stream_pipeline import Pipeline, load_model\n"
        "assert 'onnxruntime' in sys.modules and callable(load_model) and Pipeline\n"
    )
    _run_clean(code)


def test_unknown_name_is_an_attribute_error() -> None:
    import stream_pipeline

    try:
        stream_pipeline.NoSuchThing  # noqa: B018
    except AttributeError as exc:
        assert "NoSuchThing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_the_command_line_and_the_jobs_client_load_no_runtime() -> None:
    # `stream-pipeline jobs list` talks HTTP: it must not pay for onnxruntime and numba.
    code = (
        "import sys\n"
        "import stream_pipeline.cli, stream_pipeline.jobs.client, stream_pipeline.jobs.spec\n"
        "import stream_pipeline.model.thresholds\n"
        "heavy = [m for m in ('onnxruntime', 'av', 'numba', 'aiortc') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from stream_pipeline.model import SegmentationModel, CONFIDENCE_MODES\n"
        "assert 'onnxruntime' in sys.modules and 'best' in CONFIDENCE_MODES\n"
    )
    _run_clean(code)
