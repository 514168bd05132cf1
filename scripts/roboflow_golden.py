"""Golden fixtures from Roboflow's own code (``inference-models`` from PyPI) for the parity tests.

Runs in its own venv, never in the project's (inference-models pulls torch, torchvision, OpenCV,
scikit-image; none is a dependency of stream_pipeline)::

    python3.11 -m venv /tmp/rf-venv
    /tmp/rf-venv/bin/pip install torch==2.14.1 torchvision==0.29.1
    /tmp/rf-venv/bin/pip install --no-deps inference-models==0.39.6
    /tmp/rf-venv/bin/pip install numpy opencv-python-headless pydantic requests backoff \\
        python-dotenv "filelock<4" packaging rich scikit-image "onnxruntime<1.23" onnx \\
        pycocotools supervision pybase64
    /tmp/rf-venv/bin/python scripts/roboflow_golden.py tests/fixtures/roboflow

(``--no-deps``: its full requirement list brings transformers, diffusers, SAM and more, none of
which the semantic-segmentation path imports.)

For each tiny package it writes (``weights.onnx`` + ``inference_config.json`` +
``class_names.txt``, the inference-models layout) and each frame size, it runs Roboflow's
``DeepLabV3PlusForSemanticSegmentationOnnx`` — ``pre_process`` (OpenCV resize, letterbox,
normalisation), ``forward`` (onnxruntime) and ``post_process`` (crop pads, torchvision resize,
softmax, argmax, thresholds) — once per confidence mode, and records the frame, the network input,
the logits, the class map and ``uint8(conf × 255)``. Sigmoid heads (RF-DETR-sem) go through
``post_process_semantic_segmentation_logits(class_activation="sigmoid")`` on the same logits.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

IMAGENET = [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]


def _input(
    width: int,
    height: int,
    resize: str,
    color: str = "rgb",
    padding: int | None = None,
    normalization: list[list[float]] = IMAGENET,
) -> dict[str, Any]:
    """An inference_config.json ``network_input`` (3 channels, /255, fixed size)."""
    return {
        "training_input_size": {"height": height, "width": width},
        "dynamic_spatial_size_supported": False,
        "color_mode": color,
        "resize_mode": resize,
        **({} if padding is None else {"padding_value": padding}),
        "input_channels": 3,
        "scaling_factor": 255,
        "normalization": normalization,
    }


# name -> (class names, channels, network_input, recommended)
PACKAGES: dict[str, dict[str, Any]] = {
    "stretch": {
        "class_names": ["background", "road", "vehicle", "person"],
        "channels": 4,
        "network_input": _input(64, 48, "stretch"),
        "recommended": {"confidence": 0.45, "per_class_confidence": {"road": 0.3, "person": 0.6}},
    },
    # No background channel (K = len(class_names) - 1), background not first, BGR network.
    "letterbox": {
        "class_names": ["road", "background", "vehicle", "person"],
        "channels": 3,
        "network_input": _input(64, 48, "letterbox", color="bgr"),
        "recommended": {"confidence": 0.5},
    },
    # A binary (1-channel, sigmoid) head, letterboxed with grey edges.
    "binary": {
        "class_names": ["background", "crack"],
        "channels": 1,
        "network_input": _input(
            48, 48, "letterbox", padding=127, normalization=[[0.5, 0.5, 0.5], [0.25, 0.25, 0.25]]
        ),
        "recommended": None,
    },
    # Logits finer than the frames (stride 1 and 2): the antialiased downscale, in earnest.
    "fine": {
        "class_names": ["background", "sky", "road", "car", "person"],
        "channels": 5,
        "stride": 1,
        "frames": [(40, 30), (23, 17), (57, 20)],
        "network_input": _input(64, 48, "stretch"),
        "recommended": {"confidence": 0.35, "per_class_confidence": {"car": 0.5}},
    },
    "fine-letterbox": {
        "class_names": ["background", "sky", "road", "car", "person"],
        "channels": 5,
        "stride": 2,
        "frames": [(40, 30), (23, 17), (19, 31)],
        "network_input": _input(64, 48, "letterbox"),
        "recommended": None,
    },
    # image_pre_processing: a static crop (the class map goes back on the whole frame),
    # grayscale and contrast stretching; then histogram equalisation on a letterboxed crop.
    "crop-gray": {
        "class_names": ["background", "road", "vehicle", "person"],
        "channels": 4,
        "frames": [(131, 101), (40, 30)],
        "image_pre_processing": {
            "static-crop": {"enabled": True, "x_min": 10, "y_min": 20, "x_max": 90, "y_max": 100},
            "grayscale": {"enabled": True},
            "contrast": {"enabled": True, "type": "Contrast Stretching"},
        },
        "network_input": _input(64, 48, "stretch"),
        "recommended": None,
    },
    "histeq": {
        "class_names": ["background", "road", "vehicle", "person"],
        "channels": 4,
        "frames": [(131, 101), (57, 20)],
        "image_pre_processing": {
            "auto-orient": {"enabled": True},
            "static-crop": {"enabled": True, "x_min": 5, "y_min": 5, "x_max": 70, "y_max": 95},
            "contrast": {"enabled": True, "type": "Histogram Equalization"},
        },
        "network_input": _input(64, 48, "letterbox"),
        "recommended": None,
    },
}

# (width, height): larger than the logits (upscale), smaller (downscale), and mixed.
FRAMES = [(131, 101), (151, 67), (11, 9), (10, 5), (13, 60)]
MODES: list[Any] = ["best", "default", 0.4, 0.7]


def write_net(path: Path, channels: int, seed: int, stride: int = 4) -> None:
    """A stride-4 average pool and a 1×1 conv (3 → ``channels``): logits at a quarter size."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 2.0, size=(channels, 3, 1, 1)).astype(np.float32)
    bias = rng.normal(0, 0.5, size=(channels,)).astype(np.float32)
    nodes = [
        helper.make_node(
            "AveragePool", ["images"], ["pooled"], kernel_shape=[stride] * 2, strides=[stride] * 2
        ),
        helper.make_node("Conv", ["pooled", "w", "b"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def smooth_image(width: int, height: int, seed: int) -> np.ndarray:
    """A smooth RGB test picture (coarse noise, cubic-upsampled): varied classes, compressible."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, size=(max(2, height // 6), max(2, width // 6), 3), dtype=np.uint8)
    return cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)


def conf_u8(conf: torch.Tensor) -> np.ndarray:
    """Roboflow's serialised confidence: ``(conf * 255).to(uint8)`` (truncation)."""
    return (conf * 255).to(torch.uint8).cpu().numpy()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="fixture folder (tests/fixtures/roboflow)")
    args = parser.parse_args()

    import inference_models
    from inference_models.models.common.roboflow.post_processing import (
        post_process_semantic_segmentation_logits,
    )
    from inference_models.models.deep_lab_v3_plus.deep_lab_v3_plus_segmentation_onnx import (
        DeepLabV3PlusForSemanticSegmentationOnnx,
    )
    from inference_models.weights_providers.entities import RecommendedParameters

    out: Path = args.out
    packages_dir = out / "packages"
    if packages_dir.exists():
        shutil.rmtree(packages_dir)
    arrays: dict[str, np.ndarray] = {}
    cases: list[dict[str, Any]] = []
    for p_index, (name, spec) in enumerate(PACKAGES.items()):
        pkg = packages_dir / name
        pkg.mkdir(parents=True)
        write_net(
            pkg / "weights.onnx", spec["channels"], seed=p_index, stride=spec.get("stride", 4)
        )
        (pkg / "class_names.txt").write_text("\n".join(spec["class_names"]) + "\n")
        config = {"network_input": spec["network_input"]}
        if "image_pre_processing" in spec:
            config["image_pre_processing"] = spec["image_pre_processing"]
        (pkg / "inference_config.json").write_text(json.dumps(config, indent=2) + "\n")
        if spec["recommended"] is not None:
            # What our cache keeps beside a hosted package (model_config.json's snake_case).
            (pkg / "model_config.json").write_text(
                json.dumps({"recommended_parameters": spec["recommended"]}, indent=2) + "\n"
            )
        rec = (
            None
            if spec["recommended"] is None
            else RecommendedParameters.model_validate(spec["recommended"])
        )
        model = DeepLabV3PlusForSemanticSegmentationOnnx.from_pretrained(
            str(pkg), onnx_execution_providers=["CPUExecutionProvider"], recommended_parameters=rec
        )
        for f_index, (width, height) in enumerate(spec.get("frames", FRAMES)):
            case_id = f"{name}-{width}x{height}"
            image = smooth_image(width, height, seed=100 * p_index + f_index)
            tensor, meta = model.pre_process(image, input_color_format="rgb")
            logits = model.forward(tensor)
            arrays[f"{case_id}/image"] = image
            arrays[f"{case_id}/input"] = tensor[0].cpu().numpy().astype(np.float32)
            arrays[f"{case_id}/logits"] = logits[0].cpu().numpy().astype(np.float32)
            activations = ["softmax"] if spec["channels"] > 1 else ["binary"]
            if spec["channels"] > 1:
                activations.append("sigmoid")
            for activation in activations:
                for mode in MODES:
                    if activation == "sigmoid":
                        (result,) = post_process_semantic_segmentation_logits(
                            model_results=logits,
                            pre_processing_meta=meta,
                            class_names=spec["class_names"],
                            background_class_id=spec["class_names"].index("background"),
                            device=torch.device("cpu"),
                            confidence=mode,
                            recommended_parameters=rec,
                            default_confidence=0.4,  # RF-DETR-sem's default
                            class_activation="sigmoid",
                        )
                    else:
                        (result,) = model.post_process(logits, meta, confidence=mode)
                    key = f"{case_id}/{activation}/{mode}"
                    arrays[f"{key}/class_map"] = (
                        result.segmentation_map.cpu().numpy().astype(np.uint8)
                    )
                    arrays[f"{key}/conf_u8"] = conf_u8(result.confidence)
            m = meta[0]
            cases.append(
                {
                    "id": case_id,
                    "package": name,
                    "frame": [width, height],
                    "activations": activations,
                    "modes": MODES,
                    "roboflow_pads_ltrb": [m.pad_left, m.pad_top, m.pad_right, m.pad_bottom],
                    "logits_shape": list(logits.shape[1:]),
                }
            )
            print(f"{case_id}: pads {cases[-1]['roboflow_pads_ltrb']}", file=sys.stderr)
    np.savez_compressed(out / "golden.npz", **arrays)
    index = {
        "generated_by": "scripts/roboflow_golden.py",
        "inference_models": inference_models.__version__
        if hasattr(inference_models, "__version__")
        else "0.39.6",
        "torch": torch.__version__,
        "opencv": cv2.__version__,
        "packages": {
            name: {
                "class_names": spec["class_names"],
                "channels": spec["channels"],
                "recommended": spec["recommended"],
            }
            for name, spec in PACKAGES.items()
        },
        "default_confidence": {"softmax": 0.5, "binary": 0.5, "sigmoid": 0.4},
        "cases": cases,
    }
    (out / "golden.json").write_text(json.dumps(index, indent=2) + "\n")
    print(f"wrote {len(cases)} cases, {len(arrays)} arrays to {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
