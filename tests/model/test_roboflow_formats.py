"""Roboflow's package layouts from a folder: inference-models, legacy, defaults, worded errors."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stream_pipeline.errors import ModelError
from stream_pipeline.model import load_model
from stream_pipeline.model.registry import import_package, list_packages, resolve_package
from stream_pipeline.model.thresholds import class_thresholds
from tests.support.onnx_models import write_conv_net

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "roboflow" / "packages"
NAMES = ["background", "road", "vehicle", "person"]


def _im_package(tmp_path: Path, **config: Any) -> Path:
    """An inference-models package (a copy of the golden 'stretch' one) with config changes."""
    pkg = tmp_path / "pkg"
    shutil.copytree(FIXTURES / "stretch", pkg)
    path = pkg / "inference_config.json"
    body = json.loads(path.read_text())
    for key, value in config.items():
        if key == "network_input":
            body["network_input"].update(value)
        else:
            body[key] = value
    path.write_text(json.dumps(body))
    return pkg


def _model_config(pkg: Path, **fields: Any) -> None:
    path = pkg / "model_config.json"
    body = json.loads(path.read_text()) if path.is_file() else {}
    body.update(fields)
    path.write_text(json.dumps(body))


def test_inference_models_layout_loads_with_recommended_thresholds(tmp_path: Path) -> None:
    model = load_model(str(_im_package(tmp_path)), device="cpu", threads=1)
    pkg = model.package
    assert pkg.source == "inference-models" and pkg.class_names == tuple(NAMES)
    assert (pkg.input.width, pkg.input.height, pkg.input.resize) == (64, 48, "stretch")
    # model_config.json's recommended_parameters become the `best` thresholds
    assert class_thresholds(pkg, "best").tolist() == pytest.approx([0.45, 0.3, 0.45, 0.6])
    assert class_thresholds(pkg, "default").tolist() == pytest.approx([0.5] * 4)
    result = model.segment(np.full((30, 40, 3), 90, np.uint8))
    assert result.class_map.shape == (30, 40)


@pytest.mark.parametrize(
    "arch,activation,default,resize,padding",
    [
        ("deep-lab-v3-plus", "softmax", 0.5, "letterbox", 0),
        ("yolo26n-sem", "softmax", 0.25, "letterbox", 127),
        ("rfdetr-sem-small", "sigmoid", 0.4, "stretch", 0),
    ],
)
def test_per_architecture_defaults(
    tmp_path: Path, arch: str, activation: str, default: float, resize: str, padding: int
) -> None:
    pkg_dir = _im_package(tmp_path, network_input={"resize_mode": "fit-longer-edge"})
    _model_config(pkg_dir, model_architecture=arch)
    pkg = resolve_package(str(pkg_dir), tmp_path)
    assert (pkg.activation, pkg.default_confidence) == (activation, default)
    assert (pkg.input.resize, pkg.input.padding_value) == (resize, padding)


def test_legacy_environment_json_layout(tmp_path: Path) -> None:
    pkg = tmp_path / "legacy"
    pkg.mkdir()
    write_conv_net(pkg / "weights.onnx", 4)
    env = {
        "PREPROCESSING": json.dumps(
            {
                "resize": {
                    "enabled": True,
                    "format": "Fit (grey edges) in",
                    "width": 64,
                    "height": 48,
                }
            }
        ),
        "CLASS_MAP": {str(i): n for i, n in enumerate(NAMES)},
        "COLORS": {"road": "#808080"},
        "MULTICLASS": False,
    }
    (pkg / "environment.json").write_text(json.dumps(env))
    model = load_model(str(pkg), device="cpu", threads=1)
    p = model.package
    assert p.source == "legacy" and p.class_names == tuple(NAMES)
    assert (p.input.resize, p.input.padding_value, p.input.mean) == (
        "letterbox",
        127,
        (0.485, 0.456, 0.406),
    )
    assert p.colors == {"road": "#808080"}
    assert model.segment(np.zeros((20, 30, 3), np.uint8)).class_map.shape == (20, 30)


@pytest.mark.parametrize(
    "config,message",
    [
        ({"network_input": {"resize_edges": 1}}, "network_input: unknown key 'resize_edges'"),
        ({"extras": {}}, "unknown key 'extras'"),
        ({"image_pre_processing": {"blur": {}}}, "image_pre_processing: unknown key 'blur'"),
        (
            {"image_pre_processing": {"contrast": {"enabled": True, "type": "Gamma"}}},
            "contrast.type must be one of",
        ),
        ({"network_input": {"resize_mode": "center-crop"}}, "'center-crop' is not supported"),
        ({"network_input": {"input_channels": 1}}, "input_channels must be 3"),
    ],
)
def test_bad_inference_config_is_a_worded_error(
    tmp_path: Path, config: dict[str, Any], message: str
) -> None:
    pkg = _im_package(tmp_path, **config)
    with pytest.raises(ModelError) as info:
        resolve_package(str(pkg), tmp_path)
    assert message in str(info.value) and "inference_config.json" in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_architecture_and_missing_files(tmp_path: Path) -> None:
    pkg = _im_package(tmp_path)
    _model_config(pkg, model_architecture="segformer")
    with pytest.raises(ModelError, match="architecture 'segformer' is not supported"):
        resolve_package(str(pkg), tmp_path)
    (pkg / "model_config.json").unlink()
    (pkg / "class_names.txt").unlink()
    with pytest.raises(ModelError, match=r"missing class_names\.txt"):
        resolve_package(str(pkg), tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="not a model package"):
        resolve_package(str(empty), tmp_path)


@pytest.mark.skipif(
    importlib.util.find_spec("skimage") is not None, reason="scikit-image is installed"
)
def test_adaptive_equalization_without_scikit_image_says_what_to_install(tmp_path: Path) -> None:
    steps = {"contrast": {"enabled": True, "type": "Adaptive Equalization"}}
    model = load_model(str(_im_package(tmp_path, image_pre_processing=steps)), device="cpu")
    with pytest.raises(ModelError, match="needs scikit-image"):
        model.segment(np.zeros((20, 30, 3), np.uint8))


def test_import_a_roboflow_package_into_the_registry(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    source = _im_package(tmp_path)
    with pytest.raises(ModelError, match="must look like project/version"):
        import_package(source, registry)
    model_id, dest = import_package(source, registry, model_id="my_project/3")
    assert model_id == "my_project/3"
    assert sorted(p.name for p in dest.iterdir()) == [
        "class_names.txt",
        "inference_config.json",
        "model_config.json",
        "weights.onnx",
    ]
    pkg = resolve_package("my_project/3", registry)
    assert pkg.model_id == "my_project/3" and pkg.source == "inference-models"
    assert "my_project/3" in [m for m, _ in list_packages(registry)]
