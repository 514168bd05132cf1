"""The job specs of docs/jobs.md and docs/deploy.md are valid as written, the files they show are
the files shipped, and the Python example of docs/jobs.md runs against a real service."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_pipeline.jobs.declare import load_jobs_file
from stream_pipeline.jobs.spec import JobSpec
from stream_pipeline.workflow import load_workflow
from tests.jobs.processes import Serve

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
FENCE = re.compile(r"^```(\w*)([^\n]*)\n(.*?)^```$", re.M | re.S)
HEREDOC = re.compile(r"^cat > (\S+\.(?:ya?ml|json)) <<'(\w+)'\n(.*?)^\2$", re.M | re.S)


def blocks(page: str) -> list[tuple[str, str, str]]:
    """``(language, rest of the info string, text)`` of each fenced block of ``docs/<page>``."""
    return [(m[1], m[2].strip(), m[3]) for m in FENCE.finditer((DOCS / page).read_text())]


def job_spec_blocks(page: str) -> list[Any]:
    """What each ```json job-spec / ```yaml job-spec block of the page holds, parsed."""
    return [
        json.loads(text) if lang == "json" else yaml.safe_load(text)
        for lang, info, text in blocks(page)
        if "job-spec" in info.split()
    ]


def specs_of(raw: Any) -> list[JobSpec]:
    items = raw if isinstance(raw, list) else [raw]
    return [JobSpec.model_validate(item) for item in items]


@pytest.mark.parametrize("page", ["jobs.md", "deploy.md"])
def test_every_job_spec_block_is_a_valid_job_spec(page: str) -> None:
    raws = job_spec_blocks(page)
    assert raws, f"docs/{page} shows no job-spec block"
    for raw in raws:
        assert specs_of(raw)


def test_jobs_md_shows_an_rtsp_camera_with_an_env_password_and_a_workflow_job() -> None:
    specs = [s for raw in job_spec_blocks("jobs.md") for s in specs_of(raw)]
    rtsp = [s for s in specs if any(src.url.startswith("rtsp://") for src in s.sources)]
    assert rtsp and "${CAM1_PASSWORD}" in rtsp[0].sources[0].url
    workflows = [s for s in specs if s.workflow is not None]
    assert workflows
    example = json.loads((DOCS / "examples" / "street-workflow-job.json").read_text())
    assert example in job_spec_blocks("jobs.md"), "the page and examples/ differ"
    # Through the project's workflow loader, bound to the spec's parameters.
    bound = load_workflow(example["workflow"]).bind(example["parameters"])
    assert (bound.model_id, bound.confidence_mode, bound.custom_confidence) == (
        "street-default/1",
        "custom",
        0.6,
    )


def test_every_jobs_file_written_in_a_shell_block_loads_as_serve_jobs_would(
    tmp_path: Path,
) -> None:
    written = [
        heredoc
        for page in ("jobs.md", "deploy.md")
        for lang, _, text in blocks(page)
        if lang == "bash"
        for heredoc in HEREDOC.findall(text)
    ]
    assert written, "no `cat > jobs.yaml <<'YAML'` in the docs any more: drop this test"
    for name, _, body in written:
        path = tmp_path / name
        path.write_text(body)
        assert load_jobs_file(path)


def test_the_files_deploy_md_shows_are_the_files_shipped() -> None:
    shown = {lang: text for lang, info, text in blocks("deploy.md") if lang in ("ini", "yaml")}
    assert shown["yaml"] == (ROOT / "docker" / "jobs.yaml").read_text()
    assert shown["ini"] == (DOCS / "examples" / "stream-pipeline.service").read_text()


@pytest.mark.slow
def test_the_python_client_example_runs(tmp_path: Path, tiny_package: Path) -> None:
    (code,) = [t for lang, _, t in blocks("jobs.md") if lang == "python" and "JobsClient" in t]
    serve = Serve(tmp_path / "state", tmp_path / "out", tiny_package)
    try:
        env = {**os.environ, "STREAM_PIPELINE_SERVER": serve.url}
        env.pop("STREAM_PIPELINE_TOKEN", None)
        res = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
        )
    finally:
        serve.kill()
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert lines, "the example printed no prediction"
    frame_ids = [int(line.split()[0]) for line in lines]
    assert frame_ids == sorted(set(frame_ids)) and frame_ids[-1] < 60
