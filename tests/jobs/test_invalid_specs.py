"""Every invalid job spec is a 4xx whose message names the field, and creates nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from tests.jobs.conftest import Service

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
    service: Service, body: dict[str, Any] | bytes, field: str
) -> None:
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


async def test_a_symlink_out_of_the_output_dir_is_refused(service: Service, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    service.output_dir.mkdir(parents=True, exist_ok=True)
    (service.output_dir / "link").symlink_to(outside)
    spec = {**GOOD, "sinks": [{"type": "jsonl", "path": "link/p.jsonl"}]}
    async with asyncio.timeout(20):
        answer = await service.client.post("/jobs", json=spec)
        assert answer.status_code == 422, answer.text
        assert answer.json()["errors"][0]["field"] == "sinks.0.path"
        assert (await service.client.get("/jobs")).json() == []


async def test_a_source_id_in_use_by_another_job_is_a_conflict(
    service: Service, tiny_package: Path
) -> None:
    live = {"id": "cam-1", "url": "synthetic://street?frames=0&realtime=1&width=64&height=48"}
    spec = {"name": "a", "model": str(tiny_package), "sources": [live]}
    async with asyncio.timeout(30):
        first = await service.client.post("/jobs", json=spec)
        assert first.status_code == 201
        second = await service.client.post("/jobs", json={**spec, "name": "b"})
        assert second.status_code == 409
        assert "cam-1" in second.json()["error"]
        assert len((await service.client.get("/jobs")).json()) == 1
        await service.client.delete(f"/jobs/{first.json()['id']}")
