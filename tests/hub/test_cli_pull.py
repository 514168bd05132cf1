"""``stream-pipeline models pull`` in real processes: errors, a killed download, a race."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.hub.standin import KEY, StandIn, hosted_from_fixture, weights_bytes

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StandIn]:
    # ~2 MB of weights, so that a download takes long enough to kill or to race.
    weights = weights_bytes(tmp_path, extra_floats=500_000)
    stand_in = StandIn({"my_project/3": hosted_from_fixture(weights)}).start()
    yield stand_in
    stand_in.stop()


def _env(server: StandIn, registry: Path, key: str | None = KEY) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ROBOFLOW_", "STREAM_P"))}
    env.update(STREAM_PIPELINE_MODELS=str(registry), ROBOFLOW_API_HOST=server.url)
    if key:
        env["ROBOFLOW_API_KEY"] = key
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "stream_pipeline.cli", *args],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _run(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    proc = _cli(*args, env=env)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def test_pull_list_and_worded_errors(server: StandIn, tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    code, out, err = _run("models", "pull", "my_project/3", env=_env(server, registry))
    assert code == 0, err
    assert out.strip() == f"my_project/3\t{registry / 'my_project' / '3'}"
    code, out, err = _run("models", "list", env=_env(server, registry, key=None))
    line = next(x for x in out.splitlines() if x.startswith("my_project/3\t"))
    assert f"roboflow {server.url} (pulled 20" in line
    server.status = 401
    code, out, err = _run("models", "pull", "other/1", env=_env(server, registry))
    assert code == 2 and out == ""
    assert err.startswith(
        "stream-pipeline: error: Roboflow refused the API key for model 'other/1'"
    )
    assert err.count("\n") == 1 and "Traceback" not in err
    for text in (out, err):
        assert KEY not in text
    code, _, err = _run("models", "pull", "nonsense", env=_env(server, registry))
    assert code == 2 and "needs project/version" in err
    for path in registry.rglob("*"):
        assert not path.is_file() or KEY.encode() not in path.read_bytes()


def test_a_download_killed_half_way_resumes(server: StandIn, tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    size = len(server.models["my_project/3"].files["weights.onnx"])
    server.throttle_s = 0.05
    proc = _cli("models", "pull", "my_project/3", env=_env(server, registry))
    deadline = time.monotonic() + 60
    while server.sent.get("weights.onnx", 0) < size // 3:
        assert proc.poll() is None and time.monotonic() < deadline, "download did not progress"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not (registry / "my_project" / "3").exists()  # nothing half-cached
    parts = list(registry.rglob("*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size < size
    server.throttle_s = 0.0
    code, _, err = _run("models", "pull", "my_project/3", env=_env(server, registry))
    assert code == 0, err
    resumed = server.gets("weights.onnx")[-1]
    assert resumed.startswith("bytes=") and int(resumed[6:].rstrip("-")) > 0
    data = (registry / "my_project" / "3" / "weights.onnx").read_bytes()
    assert data == server.models["my_project/3"].files["weights.onnx"]
    assert not list(registry.rglob("*.part"))


def test_two_processes_racing_download_once(server: StandIn, tmp_path: Path) -> None:
    registry = tmp_path / "reg"
    server.throttle_s = 0.03  # about a second of download: long enough to overlap
    procs = [_cli("models", "pull", "my_project/3", env=_env(server, registry)) for _ in range(2)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], results
    assert all(out.startswith("my_project/3\t") for out, _ in results)
    assert len(server.gets("weights.onnx")) == 1
    api_calls = [p for m, p, _ in server.requests if p.startswith("/models/")]
    assert len(api_calls) == 1


def test_a_roboflow_workflow_runs_with_a_key_then_offline_without_one(
    server: StandIn, tmp_path: Path
) -> None:
    import json

    workflow = tmp_path / "wf.json"
    workflow.write_text(
        json.dumps(
            {
                "version": "1.0",
                "inputs": [{"type": "WorkflowImage", "name": "image"}],
                "steps": [
                    {
                        "name": "seg",
                        "type": "roboflow_core/roboflow_semantic_segmentation_model@v1",
                        "images": "$inputs.image",
                        "model_id": "my_project/3",
                    }
                ],
                "outputs": [
                    {"type": "JsonField", "name": "predictions", "selector": "$steps.seg.*"}
                ],
            }
        )
    )
    registry = tmp_path / "reg"
    common = ["run", "--workflow", str(workflow), "--max-frames", "3", "--quiet", "--device", "cpu"]
    env = _env(server, registry, key=None)
    code, _, err = _run(*common, "--offline", "--predictions-out", "none.jsonl", env=env)
    assert code == 2 and "offline mode is on" in err and err.count("\n") == 1
    out1 = tmp_path / "online.jsonl"
    code, _, err = _run(*common, "--api-key", KEY, "--predictions-out", str(out1), env=env)
    assert code == 0, err
    server.stop()
    out2 = tmp_path / "offline.jsonl"
    code, _, err = _run(*common, "--offline", "--predictions-out", str(out2), env=env)
    assert code == 0, err
    lines = [out1.read_text().splitlines(), out2.read_text().splitlines()]
    assert [len(x) for x in lines] == [3, 3]
    # the workflow's output "predictions" ($steps.seg.*) by its name, as Roboflow shapes it
    assert json.loads(lines[1][0])["predictions"]["model_id"] == "my_project/3"
    assert KEY not in out1.read_text() + err
