"""Tiny ONNX networks and model packages built at test time (no downloads)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_conv_net(
    path: Path,
    channels: int,
    stride: int = 4,
    in_hw: tuple[int | str, int | str] = ("H", "W"),
    batch: int | str = "N",
    seed: int = 0,
    out_rank: int = 4,
) -> Path:
    """A 1×1 conv (3 → ``channels``) after average pooling by ``stride``: logits at 1/stride."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(0, 2.0, size=(channels, 3, 1, 1)).astype(np.float32)
    bias = rng.normal(0, 0.5, size=(channels,)).astype(np.float32)
    nodes = [
        helper.make_node(
            "AveragePool",
            ["images"],
            ["pooled"],
            kernel_shape=[stride, stride],
            strides=[stride, stride],
        ),
        helper.make_node("Conv", ["pooled", "w", "b"], ["logits4"]),
    ]
    out_name = "logits4"
    if out_rank != 4:
        nodes.append(helper.make_node("Flatten", ["logits4"], ["logits"], axis=1))
        out_name = "logits"
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [batch, 3, *in_hw])],
        [helper.make_tensor_value_info(out_name, TensorProto.FLOAT, None)],
        initializer=[numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def write_package(
    directory: Path,
    class_names: list[str],
    channels: int | None = None,
    meta: dict[str, Any] | None = None,
    **net: Any,
) -> Path:
    """A model package directory with a tiny conv net and a ``model.json``."""
    directory.mkdir(parents=True, exist_ok=True)
    write_conv_net(directory / "model.onnx", channels or len(class_names), **net)
    body: dict[str, Any] = {
        "model_id": "tiny/1",
        "task": "semantic-segmentation",
        "class_names": class_names,
        "input": {
            "width": 64,
            "height": 48,
            "resize": "stretch",
            "color": "rgb",
            "scale": 255.0,
            "mean": [0.5, 0.5, 0.5],
            "std": [0.25, 0.25, 0.25],
        },
        "output": {"activation": "softmax"},
        "default_confidence": 0.5,
    }
    body.update(meta or {})
    (directory / "model.json").write_text(json.dumps(body), encoding="utf-8")
    return directory
