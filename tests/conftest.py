"""Shared fixtures: a tiny model package (fast), the shipped default model, test videos."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from stream_pipeline.model import SegmentationModel, load_model
from tests.support.onnx_models import write_package
from tests.support.rtsp import rtsp_server, rtsp_server_factory

__all__ = ["rtsp_server", "rtsp_server_factory"]  # fixtures shared by every test module

STREET_CLASSES = ["background", "sky", "road", "building", "vegetation", "vehicle", "person"]


@pytest.fixture(scope="session")
def tiny_package(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 7-class package with a 1×1-conv network: the street classes, in microseconds."""
    return write_package(tmp_path_factory.mktemp("tiny") / "pkg", STREET_CLASSES)


@pytest.fixture(scope="session")
def tiny_model(tiny_package: Path) -> SegmentationModel:
    return load_model(str(tiny_package), device="cpu", threads=1)


@pytest.fixture(autouse=True)
def no_leftover_threads() -> Iterator[None]:
    """Every pipeline thread a test starts is gone when it ends."""
    yield
    for t in threading.enumerate():
        if t.name.startswith("sp-"):
            t.join(timeout=5)  # a thread may still be returning after it reported its end
    left = [t.name for t in threading.enumerate() if t.name.startswith("sp-") and t.is_alive()]
    assert not left, f"threads left behind: {left}"
