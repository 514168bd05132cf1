"""Loading and validating model packages: every problem gets a message naming it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_pipeline.errors import ModelError, ModelNotFoundError
from stream_pipeline.model import load_model
from stream_pipeline.model.registry import import_package, list_packages, resolve_package
from tests.support.onnx_models import write_conv_net, write_package

NAMES = ["background", "road", "vehicle", "person"]


def _edit(pkg: Path, **changes: Any) -> None:
    meta = json.loads((pkg / "model.json").read_text())
    meta.update(changes)
    (pkg / "model.json").write_text(json.dumps(meta))


def test_loads_and_segments(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", NAMES)
    model = load_model(str(pkg), device="cpu", threads=1)
    image = np.random.default_rng(0).integers(0, 255, (90, 130, 3), dtype=np.uint8)
    result = model.segment(image, "custom", 0.0)
    assert result.class_map.shape == (90, 130) and result.confidence.dtype == np.float32
    assert set(result.present_class_ids) <= set(range(len(NAMES)))


@pytest.mark.parametrize(
    "change,message",
    [
        ({"class_names": ["road", "vehicle", "person", "x"]}, "must contain 'background'"),
        ({"default_confidence": 1.5}, "default_confidence must be in [0, 1]"),
        ({"recommended": {"confidence": -0.1}}, "recommended.confidence must be in [0, 1]"),
        (
            {"recommended": {"confidence": 0.4, "per_class_confidence": {"road": 2}}},
            "recommended.per_class_confidence.road must be in [0, 1]",
        ),
        ({"input": {"width": 0, "height": 48}}, "input.width must be a positive integer"),
        ({"input": {"width": 64, "height": 48, "resize": "crop"}}, "input.resize must be"),
        ({"task": "object-detection"}, "task must be 'semantic-segmentation'"),
        ({"class_names": ["background", "a", "a"]}, "duplicates"),
        ({"colors": {"road": "grey"}}, "colors.road must be '#rrggbb'"),
    ],
)
def test_invalid_model_json(tmp_path: Path, change: dict[str, Any], message: str) -> None:
    pkg = write_package(tmp_path / "p", NAMES)
    _edit(pkg, **change)
    with pytest.raises(ModelError, match=None) as info:
        load_model(str(pkg), device="cpu")
    assert message in str(info.value)
    assert str(pkg / "model.json") in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_files(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", NAMES)
    (pkg / "model.onnx").unlink()
    with pytest.raises(ModelError, match=r"missing model\.onnx"):
        resolve_package(str(pkg), tmp_path)
    (pkg / "model.json").unlink()
    with pytest.raises(ModelError, match=r"not a model package \(expected model\.onnx \+ model"):
        resolve_package(str(pkg), tmp_path)
    write_conv_net(pkg / "model.onnx", len(NAMES))
    with pytest.raises(ModelError, match=r"missing model\.json"):
        resolve_package(str(pkg), tmp_path)


def test_not_onnx(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", NAMES)
    (pkg / "model.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(ModelError, match="not a valid ONNX model"):
        load_model(str(pkg), device="cpu")


def test_not_json(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", NAMES)
    (pkg / "model.json").write_text("{nope")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_model(str(pkg), device="cpu")


def test_output_channels_inconsistent_with_class_names(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", NAMES, channels=7)
    with pytest.raises(ModelError, match="outputs 7 channels but class_names has 4 classes"):
        load_model(str(pkg), device="cpu")


def test_output_rank(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", NAMES, out_rank=2, in_hw=(48, 64))
    with pytest.raises(ModelError, match="output must be logits of rank 4"):
        load_model(str(pkg), device="cpu")


def test_input_size_mismatch(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", NAMES, in_hw=(32, 32))
    with pytest.raises(ModelError, match="network input is 32x32"):
        load_model(str(pkg), device="cpu")


def test_no_background_channel_package(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", NAMES, channels=3)
    model = load_model(str(pkg), device="cpu")
    result = model.segment(np.zeros((48, 64, 3), np.uint8), "custom", 0.0)
    assert 0 not in result.present_class_ids  # the background slot is skipped by the network


def test_static_batch_model_pads_partial_batches(tmp_path: Path) -> None:
    pkg = write_package(tmp_path / "p", NAMES, batch=2, in_hw=(48, 64))
    model = load_model(str(pkg), device="cpu")
    images = [np.full((48, 64, 3), v, np.uint8) for v in (0, 100, 200)]
    results = model.segment_batch(images, "custom", 0.0)
    single = [model.segment_batch([im], "custom", 0.0)[0] for im in images]
    for a, b in zip(results, single, strict=True):
        np.testing.assert_array_equal(a.class_map, b.class_map)


def test_bare_onnx_needs_class_names(tmp_path: Path) -> None:
    net = write_conv_net(tmp_path / "net.onnx", 4, in_hw=(48, 64))
    with pytest.raises(ModelError, match="needs class names"):
        resolve_package(str(net), tmp_path)
    package = resolve_package(str(net), tmp_path, class_names=NAMES)
    assert (package.input.width, package.input.height) == (64, 48)
    dynamic = write_conv_net(tmp_path / "dyn.onnx", 4)
    with pytest.raises(ModelError, match="input size is dynamic"):
        resolve_package(str(dynamic), tmp_path, class_names=NAMES)
    assert resolve_package(str(dynamic), tmp_path, NAMES, (64, 48)).input.width == 64


def test_registry_resolve_import_list(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    with pytest.raises(ModelNotFoundError, match="not in the registry"):
        resolve_package("tiny/1", registry)
    pkg = write_package(tmp_path / "p", NAMES)
    model_id, dest = import_package(pkg, registry)
    assert model_id == "tiny/1" and (dest / "model.onnx").is_file()
    assert resolve_package("tiny/1", registry).model_id == "tiny/1"
    with pytest.raises(ModelError, match="already exists"):
        import_package(pkg, registry)
    _renamed, _ = import_package(pkg, registry, model_id="street/7")
    assert resolve_package("street/7", registry).model_id == "street/7"
    ids = [m for m, _ in list_packages(registry)]
    assert "tiny/1" in ids and "street/7" in ids and ids[0].startswith("street-default/1")
    assert not [p for p in registry.rglob(".import-*")]


def test_import_of_broken_package_writes_nothing(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    pkg = write_package(tmp_path / "p", NAMES, channels=9)
    with pytest.raises(ModelError):
        import_package(pkg, registry)
    assert not registry.exists() or not any(registry.rglob("*.onnx"))


def test_unknown_reference(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_package("no such thing", tmp_path)
    with pytest.raises(ModelNotFoundError, match="ONNX file not found"):
        resolve_package(str(tmp_path / "x.onnx"), tmp_path, class_names=NAMES)


def test_per_class_threshold_for_an_unknown_class_warns_and_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Roboflow ignores thresholds naming classes the model lacks; we do too, and say so.
    pkg = write_package(tmp_path / "p", NAMES)
    _edit(pkg, recommended={"confidence": 0.4, "per_class_confidence": {"tree": 0.3}})
    with caplog.at_level("WARNING"):
        model = load_model(str(pkg), device="cpu")
    assert "unknown class 'tree' (ignored)" in caplog.text
    assert dict(model.package.recommended.per_class_confidence) == {}
