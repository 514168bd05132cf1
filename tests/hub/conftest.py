"""Hub tests never reach a real Roboflow host: the API host points at a closed loopback port."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_real_roboflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBOFLOW_API_HOST", "http://127.0.0.1:9")
    monkeypatch.delenv("ROBOFLOW_API_KEY", raising=False)
    monkeypatch.delenv("STREAM_PIPELINE_OFFLINE", raising=False)
