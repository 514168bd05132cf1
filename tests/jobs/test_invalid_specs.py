"""Every invalid job spec is a 4xx whose message names the field, and creates nothing."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio

from tests.jobs.conftest import Service, serve_jobs

# One service for the whole table (nothing valid is ever created in it): a loop per module.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def shared(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Service]:
    root = tmp_path_factory.mktemp("invalid")
    async with serve_jobs(root / "state", root / "out") as svc:
        yield svc


GOOD: dict[str, Any] = {
    "name": "gate",
    "model": "default",
    "sources": [{"id": "cam-1", "url": "synthetic://street?frames=5"}],
    "sinks": [{"type": "jsonl", "path": "gate/p.jsonl"}],
}
WORKFLOW = {
    "version": "1.0",
    "inputs": [{"type": "WorkflowImage", "name": "image"}],
    "steps": [{"type": "acme/unknown_block@v1", "name": "seg", "image": "$inputs.image"}],
    "outputs": [],
}

CASES: list[tuple[str, dict[str, Any] | bytes, str]] = [
    ("empty sources", {**GOOD, "sources": []}, "sources"),
    ("unknown sink type", {**GOOD, "sinks": [{"type": "ftp", "path": "x"}]}, "sinks.0"),
    ("sink path leaves output dir", {**GOOD, "sinks": [{"type": "jsonl", "path": "../x.jsonl"}]},
     "sinks.0.path"),
    ("absolute sink path", {**GOOD, "sinks": [{"type": "video", "path": "/etc/rec"}]},
     "sinks.0.path"),
    ("custom without custom_confidence", {**GOOD, "confidence_mode": "custom"},
     "custom_confidence"),
    ("confidence out of range",
     {**GOOD, "confidence_mode": "custom", "custom_confidence": 1.5}, "custom_confidence"),
    ("documentation placeholder",
     {**GOOD, "confidence_mode": "<block_does_not_provide_example>"}, "confidence_mode"),
    ("neither model nor workflow", {k: v for k, v in GOOD.items() if k != "model"}, "model"),
    ("both model and workflow", {**GOOD, "workflow": WORKFLOW}, "model"),
    ("unknown workflow block",
     {**{k: v for k, v in GOOD.items() if k != "model"}, "workflow": WORKFLOW}, "workflow"),
    ("duplicate source ids",
     {**GOOD, "sources": [GOOD["sources"][0], {"id": "cam-1", "url": "b.mp4"}]}, "sources"),
    ("bad source id", {**GOOD, "sources": [{"id": "a b", "url": "x.mp4"}]}, "sources.0.id"),
    ("unknown field", {**GOOD, "restart_policy": "always"}, "restart_policy"),
    ("bad restart policy", {**GOOD, "restart": "sometimes"}, "restart"),
    ("segment_seconds not positive",
     {**GOOD, "sinks": [{"type": "video", "path": "rec", "segment_seconds": 0}]},
     "sinks.0.segment_seconds"),
    ("webhook without http", {**GOOD, "sinks": [{"type": "webhook", "url": "ftp://h/"}]},
     "sinks.0.url"),
    ("malformed JSON", b'{"name": "gate", "sources": [', "body"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("body", "field"), [(b, f) for _, b, f in CASES], ids=[c[0] for c in CASES]
)
async def test_invalid_spec_is_refused_naming_the_field(
    shared: Service, body: dict[str, Any] | bytes, field: str
) -> None:
    service = shared
    async with asyncio.timeout(20):
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        answer = await service.client.post(
            "/jobs", content=content, headers={"content-type": "application/json"}
        )
        assert 400 <= answer.status_code < 500, answer.text
        error = answer.json()
        assert any(e["field"] == field for e in error["errors"]), error
        assert field in error["error"]
        assert (await service.client.get("/jobs")).json() == []
    assert not list(service.output_dir.rglob("*.jsonl"))
