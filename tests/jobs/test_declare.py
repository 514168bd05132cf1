"""``--jobs FILE``: declared jobs are created at start when absent, once; a bad file is one
worded error naming the job and the field, before anything starts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from stream_pipeline.cli import main
from stream_pipeline.jobs.declare import load_jobs_file
from tests.jobs.conftest import serve_jobs

YAML = """
jobs:
  - name: gate
    model: {model}
    sources: [{{id: gate, url: "synthetic://street?frames=0&realtime=1&width=64&height=48"}}]
    restart: always
  - name: clip
    model: {model}
    sources: [{{id: clip, url: "synthetic://street?frames=10&width=64&height=48"}}]
    sinks: [{{type: jsonl, path: clip.jsonl}}]
"""


async def test_declared_jobs_are_created_once(tmp_path: Path, tiny_package: Path) -> None:
    file = tmp_path / "jobs.yaml"
    file.write_text(YAML.format(model=tiny_package))
    declared = load_jobs_file(file)
    state, out = tmp_path / "state", tmp_path / "out"
    async with asyncio.timeout(60):
        async with serve_jobs(state, out, declared) as svc:
            jobs = (await svc.client.get("/jobs")).json()
            assert sorted(j["name"] for j in jobs) == ["clip", "gate"]
            gate = next(j["id"] for j in jobs if j["name"] == "gate")
            assert (await svc.client.delete(f"/jobs/{gate}")).json()["state"] == "stopped"
        async with serve_jobs(state, out, declared) as svc:
            again = {j["name"]: j["state"] for j in (await svc.client.get("/jobs")).json()}
            assert len(again) == 2
            assert again["gate"] == "stopped"  # an operator's stop is kept


def test_a_bad_jobs_file_stops_serve_naming_the_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    file = tmp_path / "jobs.json"
    file.write_text(
        '[{"name": "a", "model": "default", "sources": [{"id": "a", "url": "x.mp4"}]},'
        ' {"name": "b", "model": "default", "sources": []}]'
    )
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--state-dir", str(tmp_path / "s"), "--jobs", str(file)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "jobs[1].sources" in err
    assert not (tmp_path / "s").exists()  # nothing created
