"""`stream-pipeline` as a user runs it: outputs checked from outside, bad input worded, exit 2."""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.media import corrupt_copy, truncated_copy, write_ts_video, write_video

pytestmark = pytest.mark.timeout(120)

EXE = [sys.executable, "-m", "stream_pipeline.cli"]


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXE, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def ffprobe(path: Path) -> dict[str, object]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-count_frames",
            "-show_streams",
            "-show_format",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return json.loads(out.stdout)  # type: ignore[no-any-return]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_file_run_writes_video_and_jsonl(tmp_path: Path, tiny_package: Path) -> None:
    video = write_video(tmp_path / "in.mp4", frames=40)
    res = run_cli(
        "run",
        "--source",
        str(video),
        "--model",
        str(tiny_package),
        "--video-out",
        "out.mp4",
        "--predictions-out",
        "pred.jsonl",
        "--masks-out",
        "masks",
        "--json-status",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.splitlines()[-1])
    assert summary["type"] == "summary" and summary["results"] == 40
    assert {"p50", "p99"} <= set(summary["latency_ms"]["infer"])
    probe = ffprobe(tmp_path / "out.mp4")
    stream = probe["streams"][0]  # type: ignore[index]
    assert stream["codec_name"] == "h264" and int(stream["nb_read_frames"]) == 40
    assert (stream["width"], stream["height"]) == (160, 96)
    assert len((tmp_path / "pred.jsonl").read_text().splitlines()) == 40
    assert len(list((tmp_path / "masks").rglob("*_class.png"))) == 40


def test_two_sources_get_their_own_videos(tmp_path: Path, tiny_package: Path) -> None:
    a = write_video(tmp_path / "a.mp4", frames=10)
    b = write_video(tmp_path / "b.mp4", frames=12, width=128, height=64)
    res = run_cli(
        "run",
        "--source",
        f"left={a}",
        "--source",
        f"right={b}",
        "--model",
        str(tiny_package),
        "--video-out",
        "out.mp4",
        "--predictions-out",
        "p.jsonl",
        "--quiet",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert int(ffprobe(tmp_path / "out.left.mp4")["streams"][0]["nb_read_frames"]) == 10  # type: ignore[index]
    assert int(ffprobe(tmp_path / "out.right.mp4")["streams"][0]["nb_read_frames"]) == 12  # type: ignore[index]
    ids = [json.loads(x)["source_id"] for x in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert ids.count("left") == 10 and ids.count("right") == 12


def _assert_one_line_error(res: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stderr)
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_missing_file(tmp_path: Path, tiny_package: Path) -> None:
    res = run_cli(
        "run",
        "--source",
        "nope.mp4",
        "--model",
        str(tiny_package),
        "--predictions-out",
        "p.jsonl",
        cwd=tmp_path,
    )
    _assert_one_line_error(res, "no such file", "nope.mp4")
    assert not (tmp_path / "p.jsonl").exists() or (tmp_path / "p.jsonl").read_text() == ""


def test_not_a_video(tmp_path: Path, tiny_package: Path) -> None:
    (tmp_path / "notes.mp4").write_text("just some text, not a video\n" * 20)
    res = run_cli(
        "run",
        "--source",
        "notes.mp4",
        "--model",
        str(tiny_package),
        "--predictions-out",
        "p.jsonl",
        cwd=tmp_path,
    )
    _assert_one_line_error(res, "notes.mp4", "not a video")


def test_unreachable_url_redacts_password(tmp_path: Path, tiny_package: Path) -> None:
    url = f"rtsp://admin:s3cr3tpass@127.0.0.1:{closed_port()}/stream1"
    res = run_cli(
        "run",
        "--source",
        url,
        "--model",
        str(tiny_package),
        "--predictions-out",
        "p.jsonl",
        "--open-timeout",
        "3",
        cwd=tmp_path,
    )
    _assert_one_line_error(res, "cannot open", "rtsp://admin:***@127.0.0.1")
    assert "s3cr3tpass" not in res.stderr + res.stdout


def test_unwritable_output(tmp_path: Path, tiny_package: Path) -> None:
    video = write_video(tmp_path / "in.mp4", frames=5)
    (tmp_path / "afile").write_text("x")
    res = run_cli(
        "run",
        "--source",
        str(video),
        "--model",
        str(tiny_package),
        "--predictions-out",
        "afile/p.jsonl",
        cwd=tmp_path,
    )
    _assert_one_line_error(res, "afile/p.jsonl")
    res = run_cli(
        "run",
        "--source",
        str(video),
        "--model",
        str(tiny_package),
        "--video-out",
        "afile/v.mp4",
        cwd=tmp_path,
    )
    _assert_one_line_error(res, "afile/v.mp4")


@pytest.mark.parametrize(
    "flags,needle",
    [
        (["--workflow", "wf.json", "--model", "x/1"], "--workflow sets the model"),
        (
            ["--confidence-mode", "best", "--custom-confidence", "0.3"],
            "--custom-confidence only applies",
        ),
        (["--confidence-mode", "custom"], "needs custom_confidence"),
        (["--custom-confidence", "1.7"], "custom_confidence must be in [0, 1]"),
        (["--max-frames", "0"], "--max-frames must be positive"),
        (["--param", "a=1"], "--param binds workflow inputs"),
        (["--workflow-images"], "--workflow-images includes a workflow's image outputs"),
        (["--buffer-policy", "fifo"], "invalid choice: 'fifo'"),
        (["--model", "nosuch/3"], "not in the registry"),
        (["--opacity", "2"], "--opacity must be in [0, 1]"),
    ],
)
def test_conflicting_or_bad_flags(tmp_path: Path, flags: list[str], needle: str) -> None:
    res = run_cli("run", "--predictions-out", "p.jsonl", *flags, cwd=tmp_path)
    _assert_one_line_error(res, needle)


def test_truncated_file_finishes_cleanly(tmp_path: Path, tiny_package: Path) -> None:
    ts = write_ts_video(tmp_path / "rec.ts", frames=60)
    cut = truncated_copy(ts, tmp_path / "cut.ts", 0.5)
    res = run_cli(
        "run",
        "--source",
        str(cut),
        "--model",
        str(tiny_package),
        "--video-out",
        "o.mp4",
        "--predictions-out",
        "p.jsonl",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert 5 < len(lines) < 60
    assert all(json.loads(line)["frame_id"] == i for i, line in enumerate(lines))
    assert int(ffprobe(tmp_path / "o.mp4")["streams"][0]["nb_read_frames"]) == len(lines)  # type: ignore[index]


def test_truncated_mp4_without_index_is_a_clear_error(tmp_path: Path, tiny_package: Path) -> None:
    mp4 = write_video(tmp_path / "in.mp4", frames=40)
    cut = truncated_copy(mp4, tmp_path / "cut.mp4", 0.5)
    res = run_cli(
        "run",
        "--source",
        str(cut),
        "--model",
        str(tiny_package),
        "--predictions-out",
        "p.jsonl",
        cwd=tmp_path,
    )
    # The moov atom is at the end: an mp4 cut in half has no index and cannot be decoded at all.
    _assert_one_line_error(res, "cut.mp4")


def test_corrupt_file_decodes_what_it_can(tmp_path: Path, tiny_package: Path) -> None:
    ts = write_ts_video(tmp_path / "rec.ts", frames=60)
    bad = corrupt_copy(ts, tmp_path / "bad.ts", start=0.4, length=3000)
    res = run_cli(
        "run",
        "--source",
        str(bad),
        "--model",
        str(tiny_package),
        "--predictions-out",
        "p.jsonl",
        "--video-out",
        "o.mp4",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) >= 30
    for line in lines:
        json.loads(line)
    assert int(ffprobe(tmp_path / "o.mp4")["streams"][0]["nb_read_frames"]) == len(lines)  # type: ignore[index]


def test_models_commands(tmp_path: Path, tiny_package: Path) -> None:
    env = {"STREAM_PIPELINE_MODELS": str(tmp_path / "reg")}
    res = run_cli("models", "import", str(tiny_package), "--id", "street/2", cwd=tmp_path, env=env)
    assert res.returncode == 0 and "imported street/2" in res.stdout, res.stderr
    res = run_cli("models", "list", cwd=tmp_path, env=env)
    assert "street/2" in res.stdout and "street-default/1" in res.stdout
    res = run_cli("models", "show", "street/2", cwd=tmp_path, env=env)
    assert json.loads(res.stdout)["model_id"] == "street/2"
    res = run_cli("models", "import", str(tmp_path / "nowhere"), cwd=tmp_path, env=env)
    _assert_one_line_error(res, "not found")


def test_import_of_invalid_package_is_one_line_and_leaves_nothing(
    tmp_path: Path, tiny_package: Path
) -> None:
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(tiny_package, bad)
    (bad / "model.onnx").write_bytes(b"\x00not onnx")
    env = {"STREAM_PIPELINE_MODELS": str(tmp_path / "reg")}
    res = run_cli("models", "import", str(bad), cwd=tmp_path, env=env)
    _assert_one_line_error(res, "not a valid ONNX model")
    assert not any((tmp_path / "reg").rglob("model.*"))


def test_workflow_run(tmp_path: Path, tiny_package: Path) -> None:
    wf = {
        "version": "1.0",
        "inputs": [
            {"type": "WorkflowImage", "name": "image"},
            {"type": "WorkflowParameter", "name": "model", "default_value": str(tiny_package)},
            {"type": "WorkflowParameter", "name": "conf", "default_value": 0.4},
        ],
        "steps": [
            {
                "type": "roboflow_core/roboflow_semantic_segmentation_model@v2",
                "name": "seg",
                "images": "$inputs.image",
                "model_id": "$inputs.model",
                "confidence_mode": "custom",
                "custom_confidence": "$inputs.conf",
            },
            {
                "type": "roboflow_core/mask_visualization@v1",
                "name": "viz",
                "image": "$inputs.image",
                "predictions": "$steps.seg.predictions",
                "opacity": 0.4,
            },
        ],
        "outputs": [
            {"type": "JsonField", "name": "predictions", "selector": "$steps.seg.predictions"}
        ],
    }
    (tmp_path / "wf.json").write_text(json.dumps(wf))
    video = write_video(tmp_path / "in.mp4", frames=8)
    res = run_cli(
        "run",
        "--workflow",
        "wf.json",
        "--param",
        "conf=1.0",
        "--source",
        str(video),
        "--predictions-out",
        "p.jsonl",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    # custom_confidence 1.0: nothing reaches the threshold, every pixel is background.
    lines = (tmp_path / "p.jsonl").read_text().splitlines()
    assert len(lines) == 8
    for line in lines:
        record = json.loads(line)
        # The workflow's outputs by their names beside the frame's origin, as on_prediction has it.
        assert set(record) == {"source_id", "frame_id", "pts_seconds", "captured_at", "predictions"}
        assert record["predictions"]["predictions"] == []
        assert record["predictions"]["image"] == {"width": 160, "height": 96}
    res = run_cli(
        "run",
        "--workflow",
        "wf.json",
        "--param",
        "conf=7",
        "--source",
        str(video),
        "--predictions-out",
        "q.jsonl",
        cwd=tmp_path,
    )
    _assert_one_line_error(res, "step 'seg': field 'custom_confidence' must be in [0, 1]")


def test_workflow_image_outputs_on_request(tmp_path: Path, tiny_package: Path) -> None:
    wf = {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [
            {
                "type": "roboflow_core/roboflow_semantic_segmentation_model@v2",
                "name": "seg",
                "images": "$inputs.image",
                "model_id": str(tiny_package),
            },
            {
                "type": "roboflow_core/mask_visualization@v1",
                "name": "viz",
                "image": "$inputs.image",
                "predictions": "$steps.seg.predictions",
            },
        ],
        "outputs": [
            {"type": "JsonField", "name": "seg_out", "selector": "$steps.seg.predictions"},
            {"type": "JsonField", "name": "overlay", "selector": "$steps.viz.image"},
        ],
    }
    (tmp_path / "wf.json").write_text(json.dumps(wf))
    video = write_video(tmp_path / "in.mp4", frames=3)
    for flag, name in (([], "plain.jsonl"), (["--workflow-images"], "images.jsonl")):
        res = run_cli(
            "run", "--workflow", "wf.json", "--source", str(video),
            "--predictions-out", name, *flag, cwd=tmp_path,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
    plain = [json.loads(x) for x in (tmp_path / "plain.jsonl").read_text().splitlines()]
    assert len(plain) == 3 and all("overlay" not in r and "seg_out" in r for r in plain)
    with_images = [json.loads(x) for x in (tmp_path / "images.jsonl").read_text().splitlines()]
    jpeg = base64.b64decode(with_images[0]["overlay"]["value"])
    assert with_images[0]["overlay"]["type"] == "base64" and jpeg[:3] == b"\xff\xd8\xff"
