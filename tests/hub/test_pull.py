"""Hosted models against the stand-in weights API: download, cache, offline, every error."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stream_pipeline.errors import (
    HubAccountError,
    HubAuthError,
    HubError,
    HubIntegrityError,
    HubModelNotFoundError,
    HubUnavailableError,
    ModelError,
    OfflineError,
)
from stream_pipeline.hub.cache import pull
from stream_pipeline.hub.client import HubSettings
from stream_pipeline.model import load_model
from stream_pipeline.model.thresholds import class_thresholds
from stream_pipeline.workflow import load_workflow
from tests.hub.standin import KEY, StandIn, hosted_from_fixture, weights_bytes

FAST = HubSettings(timeout_s=2.0, tries=3, backoff_s=0.01, stall_timeout_s=5.0)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[StandIn]:
    stand_in = StandIn({"my_project/3": hosted_from_fixture(weights_bytes(tmp_path))}).start()
    yield stand_in
    stand_in.stop()


def _no_key_anywhere(registry: Path, *texts: str) -> None:
    for path in registry.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    for text in texts:
        assert KEY not in text


def test_pull_then_load_with_no_network_and_no_key(
    server: StandIn,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = tmp_path / "reg"
    monkeypatch.setenv("ROBOFLOW_API_HOST", server.url)
    with caplog.at_level(logging.DEBUG):
        model = load_model("my_project/3", device="cpu", registry=registry, api_key=KEY)
    assert model.package.source == "inference-models" and model.package.model_id == "my_project/3"
    assert model.segment(np.full((30, 40, 3), 80, np.uint8)).class_map.shape == (30, 40)
    # the key went only in the Authorization header of the API call
    api = [h for m, p, h in server.requests if p.startswith("/models/")]
    assert [h["Authorization"] for h in api] == [f"Bearer {KEY}"]
    assert all(KEY not in p for _, p, _ in server.requests)
    assert all("Authorization" not in h for m, p, h in server.requests if p.startswith("/files/"))
    manifest = json.loads((registry / "my_project/3/model_config.json").read_text())
    assert manifest["source"]["api_host"] == server.url
    server.stop()
    monkeypatch.delenv("ROBOFLOW_API_KEY", raising=False)
    again = load_model("my_project/3", device="cpu", registry=registry)  # no key, server gone
    assert again.class_names == model.class_names
    offline = load_model("my_project/3", device="cpu", registry=registry, offline=True)
    assert offline.package.onnx_path == again.package.onnx_path
    _no_key_anywhere(registry, caplog.text)


def test_a_roboflow_workflow_runs_with_a_key_then_offline(
    server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The block's v2 example as Roboflow documents it, with a real confidence_mode.
    workflow = {
        "version": "1.0",
        "inputs": [{"type": "WorkflowImage", "name": "image"}],
        "steps": [
            {
                "name": "seg",
                "type": "roboflow_core/roboflow_semantic_segmentation_model@v2",
                "images": "$inputs.image",
                "model_id": "my_project/3",
                "confidence_mode": "custom",
                "custom_confidence": 0.3,
            }
        ],
        "outputs": [{"type": "JsonField", "name": "predictions", "selector": "$steps.seg.*"}],
    }
    bound = load_workflow(workflow).bind()
    monkeypatch.setenv("ROBOFLOW_API_HOST", server.url)
    monkeypatch.setenv("ROBOFLOW_API_KEY", KEY)
    registry = tmp_path / "reg"
    frame = np.random.default_rng(1).integers(0, 255, (24, 32, 3), dtype=np.uint8)
    online = load_model(bound.model_id, device="cpu", registry=registry).segment(
        frame, bound.confidence_mode, bound.custom_confidence
    )
    server.stop()
    monkeypatch.delenv("ROBOFLOW_API_KEY")
    monkeypatch.setenv("STREAM_PIPELINE_OFFLINE", "1")
    offline = load_model(bound.model_id, device="cpu", registry=registry).segment(
        frame, bound.confidence_mode, bound.custom_confidence
    )
    np.testing.assert_array_equal(online.class_map, offline.class_map)


@pytest.mark.parametrize(
    "status,error,words",
    [
        (401, HubAuthError, "refused the API key"),
        (403, HubAuthError, "may not use model"),
        (404, HubModelNotFoundError, "check the model id (project/version) and that the API key"),
        (402, HubAccountError, "needs payment"),
        (423, HubAccountError, "paused usage"),
        (400, HubError, "failed with HTTP 400"),
    ],
)
def test_error_answers_are_worded(
    server: StandIn, tmp_path: Path, status: int, error: type[Exception], words: str
) -> None:
    server.status = status
    with pytest.raises(error) as info:
        pull("my_project/3", tmp_path / "reg", KEY, server.url, settings=FAST)
    text = str(info.value)
    assert words in text and "my_project/3" in text and "\n" not in text and KEY not in text
    assert len(server.requests) == 1  # not retried
    assert not (tmp_path / "reg" / "my_project" / "3").exists()


@pytest.mark.parametrize("wrong_key_status", [401, 404])
def test_a_wrong_key_says_to_check_the_key(
    server: StandIn, tmp_path: Path, wrong_key_status: int
) -> None:
    server.wrong_key_status = wrong_key_status
    with pytest.raises(HubError, match="API key") as info:
        pull("my_project/3", tmp_path / "reg", "rf_wrong", server.url, settings=FAST)
    assert "rf_wrong" not in str(info.value)


def test_unknown_model_is_404_worded(server: StandIn, tmp_path: Path) -> None:
    with pytest.raises(HubModelNotFoundError, match="'nope/1' not found on Roboflow"):
        pull("nope/1", tmp_path / "reg", KEY, server.url, settings=FAST)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_transient_answers_are_retried_then_worded(
    server: StandIn, tmp_path: Path, status: int
) -> None:
    server.status = status
    with pytest.raises(HubUnavailableError, match=f"HTTP {status} \\(after 3 tries\\)"):
        pull("my_project/3", tmp_path / "reg", KEY, server.url, settings=FAST)
    assert len(server.requests) == 3


def test_timeouts_and_a_dead_host_are_worded(server: StandIn, tmp_path: Path) -> None:
    server.delay_s = 1.0
    quick = HubSettings(timeout_s=0.2, tries=2, backoff_s=0.01)
    with pytest.raises(HubUnavailableError, match=r"timed out.*after 2 tries"):
        pull("my_project/3", tmp_path / "reg", KEY, server.url, settings=quick)
    url = server.url
    server.stop()
    with pytest.raises(HubUnavailableError, match=r"cannot reach http://127\.0\.0\.1") as info:
        pull("my_project/3", tmp_path / "reg", KEY, url, settings=quick)
    assert "--offline" in str(info.value) and KEY not in str(info.value)


def test_md5_mismatch_discards_the_file_and_caches_nothing(server: StandIn, tmp_path: Path) -> None:
    server.bad_md5 = {"weights.onnx"}
    registry = tmp_path / "reg"
    with pytest.raises(
        HubIntegrityError, match=r"weights\.onnx of model 'my_project/3' does not match"
    ):
        pull("my_project/3", registry, KEY, server.url, settings=FAST)
    assert not (registry / "my_project" / "3").exists()
    assert not [p for p in registry.rglob("*.part")]
    assert not [p for p in registry.rglob("weights.onnx")]


def test_no_trusted_onnx_package_is_worded(server: StandIn, tmp_path: Path) -> None:
    server.models["my_project/3"].manifest_type = "trt-model-package-v1"
    with pytest.raises(HubIntegrityError, match=r"no trusted ONNX package.*trt-model-package-v1"):
        pull("my_project/3", tmp_path / "reg", KEY, server.url, settings=FAST)
    server.models["my_project/3"].manifest_type = "onnx-model-package-v1"
    server.models["my_project/3"].trusted = False
    with pytest.raises(HubIntegrityError, match="no trusted ONNX package"):
        pull("my_project/3", tmp_path / "reg", KEY, server.url, settings=FAST)


def test_corrupt_onnx_is_removed_and_the_next_run_downloads_again(
    server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = server.models["my_project/3"].files["weights.onnx"]
    server.models["my_project/3"].files["weights.onnx"] = b"\x08\x01garbage, not a protobuf"
    registry = tmp_path / "reg"
    with pytest.raises(HubIntegrityError, match=r"does not load .*removed, the next run"):
        pull("my_project/3", registry, KEY, server.url, settings=FAST)
    assert not (registry / "my_project" / "3").exists()
    server.models["my_project/3"].files["weights.onnx"] = good
    assert pull("my_project/3", registry, KEY, server.url, settings=FAST).is_dir()
    # a cached copy that went bad on disk is dropped at load time, with the same promise
    (registry / "my_project" / "3" / "weights.onnx").write_bytes(b"\x00broken")
    monkeypatch.setenv("ROBOFLOW_API_HOST", server.url)
    with pytest.raises(ModelError, match="cached copy was removed"):
        load_model("my_project/3", device="cpu", registry=registry, api_key=KEY)
    assert not (registry / "my_project" / "3").exists()


def test_offline_never_touches_the_network(server: StandIn, tmp_path: Path) -> None:
    with pytest.raises(OfflineError, match="offline mode is on"):
        pull("my_project/3", tmp_path / "reg", KEY, server.url, offline=True, settings=FAST)
    with pytest.raises(HubAuthError, match="no Roboflow API key is set"):
        pull("my_project/3", tmp_path / "reg", None, server.url, settings=FAST)
    assert server.requests == []


def test_package_recommendations_replace_model_ones_for_best(
    server: StandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ROBOFLOW_API_HOST", server.url)
    hosted = server.models["my_project/3"]
    hosted.recommended = {"confidence": 0.2, "perClassConfidence": {"road": 0.9}}
    hosted.package_recommended = {"confidence": 0.35, "perClassConfidence": {"person": 0.65}}
    registry = tmp_path / "reg"
    model = load_model("my_project/3", device="cpu", registry=registry, api_key=KEY)
    # background, road, vehicle, person: the package's map only, the package's fallback
    assert class_thresholds(model.package, "best").tolist() == pytest.approx(
        [0.35, 0.35, 0.35, 0.65]
    )
    manifest = json.loads((registry / "my_project/3/model_config.json").read_text())
    assert manifest["recommended_parameters"] == {
        "confidence": 0.35,
        "per_class_confidence": {"person": 0.65},
    }


def test_large_files_come_in_parallel_ranges(server: StandIn, tmp_path: Path) -> None:
    server.models["my_project/3"].files["weights.onnx"] = weights_bytes(
        tmp_path, extra_floats=50000
    )
    settings = HubSettings(ranged_threshold=100_000, range_parts=4, chunk=8192, backoff_s=0.01)
    final = pull("my_project/3", tmp_path / "reg", KEY, server.url, settings=settings)
    ranges = server.gets("weights.onnx")
    assert len(ranges) == 4 and all(r.startswith("bytes=") for r in ranges)
    assert (final / "weights.onnx").read_bytes() == server.models["my_project/3"].files[
        "weights.onnx"
    ]


def test_a_stalled_lock_holder_is_given_up_on_without_progress(
    server: StandIn, tmp_path: Path
) -> None:
    from filelock import FileLock

    registry = tmp_path / "reg"
    (registry / ".locks").mkdir(parents=True)
    holder = FileLock(str(registry / ".locks" / "my_project@3.lock"))
    holder.acquire()  # another process that took the lock and then hung
    try:
        quick = HubSettings(stall_timeout_s=1.0, backoff_s=0.01)
        with pytest.raises(HubUnavailableError, match="no progress for 1 s"):
            pull("my_project/3", registry, KEY, server.url, settings=quick)
    finally:
        holder.release()
    assert pull("my_project/3", registry, KEY, server.url, settings=FAST).is_dir()
