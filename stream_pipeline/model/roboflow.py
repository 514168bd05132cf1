"""Roboflow's package layouts, read from a folder into a :class:`ModelPackage`.

- inference-models: ``weights.onnx`` + ``inference_config.json`` + ``class_names.txt`` (and, in our
  cache, ``model_config.json`` with the model's architecture and ``recommended_parameters``);
- legacy ``inference`` ORT: ``weights.onnx`` + ``environment.json`` (+ ``class_names.txt``).

Every key is checked: an unknown one is a :class:`ModelError` naming the file and the key, never
silently ignored (Roboflow's own parser drops them). Per-architecture defaults are Roboflow's.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stream_pipeline.errors import ModelError
from stream_pipeline.model.package import ImageSteps, InputSpec, ModelPackage, Recommended

__all__ = ["ARCHITECTURES", "Architecture", "architecture", "detect_format", "load_roboflow"]

INFERENCE_MODELS_FILES = ("weights.onnx", "inference_config.json", "class_names.txt")
LEGACY_FILES = ("weights.onnx", "environment.json")


@dataclass(frozen=True, slots=True)
class Architecture:
    """What Roboflow's model class for an architecture fixes: activation, default confidence, and
    what ``fit-longer-edge`` becomes on a fixed-size ONNX export (resize mode, padding value)."""

    name: str
    activation: str
    default_confidence: float
    fit_longer_edge: tuple[str, int | None]


ARCHITECTURES = {
    "deep-lab-v3-plus": Architecture("deep-lab-v3-plus", "softmax", 0.5, ("letterbox", 0)),
    "yolo26": Architecture("yolo26", "softmax", 0.25, ("letterbox", 127)),
    "rfdetr": Architecture("rfdetr", "sigmoid", 0.4, ("stretch", None)),
}


def architecture(name: str | None, where: str = "model") -> Architecture:
    """The architecture for Roboflow's ``modelArchitecture`` (``None``: DeepLabV3+)."""
    key = (name or "deep-lab-v3-plus").lower()
    if key in ("deeplabv3plus", "deep-lab-v3-plus"):
        return ARCHITECTURES["deep-lab-v3-plus"]
    if key.startswith("yolo26"):
        return ARCHITECTURES["yolo26"]
    if key.startswith("rfdetr") or key.startswith("rf-detr"):
        return ARCHITECTURES["rfdetr"]
    raise ModelError(
        f"{where}: semantic-segmentation architecture {name!r} is not supported "
        "(supported: deep-lab-v3-plus, yolo26*-sem, rfdetr-sem*)"
    )


def detect_format(directory: Path) -> str | None:
    """``model.json``, ``inference-models``, ``legacy`` or None for a folder of none of them."""
    if (directory / "model.json").is_file():
        return "model.json"
    if (directory / "inference_config.json").is_file():
        return "inference-models"
    if (directory / "environment.json").is_file():
        return "legacy"
    return None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path}: not valid JSON ({exc})") from None
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror})") from None


def _object(value: Any, where: str, allowed: frozenset[str]) -> Mapping[str, Any]:
    if not isinstance(value, dict):
        raise ModelError(f"{where} must be an object")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise ModelError(
            f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(allowed))})"
        )
    return value


def _class_names(directory: Path, fallback: Any = None) -> list[str]:
    path = directory / "class_names.txt"
    if path.is_file():
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        names = [n for n in names if n]
    elif isinstance(fallback, dict) and fallback:
        names = [str(fallback[k]) for k in sorted(fallback, key=lambda k: int(k))]
    else:
        raise ModelError(f"{directory}: missing class_names.txt")
    if not names:
        raise ModelError(f"{path}: holds no class names")
    return names


_NETWORK_INPUT = frozenset(
    {
        "training_input_size",
        "dataset_version_resize_dimensions",
        "dynamic_spatial_size_supported",
        "dynamic_spatial_size_mode",
        "color_mode",
        "resize_mode",
        "padding_value",
        "input_channels",
        "scaling_factor",
        "normalization",
    }
)
_CONFIG = frozenset(
    {
        "image_pre_processing",
        "network_input",
        "forward_pass",
        "post_processing",
        "model_initialization",
        "class_names_operations",
    }
)
_STEPS = frozenset({"auto-orient", "static-crop", "contrast", "grayscale"})
_CONTRASTS = {
    "Adaptive Equalization": "adaptive-equalization",
    "Contrast Stretching": "contrast-stretching",
    "Histogram Equalization": "histogram-equalization",
}


def _image_steps(raw: Any, where: str) -> ImageSteps:
    """``image_pre_processing`` (or legacy ``PREPROCESSING``, without its ``resize``)."""
    steps = _object(raw or {}, where, _STEPS | {"resize"})
    crop = steps.get("static-crop")
    box = None
    if isinstance(crop, dict) and crop.get("enabled"):
        keys = ("x_min", "y_min", "x_max", "y_max")
        _object(crop, f"{where}.static-crop", frozenset({"enabled", *keys}))
        values = [crop.get(k) for k in keys]
        if not all(isinstance(v, int | float) and 0 <= v <= 100 for v in values):
            raise ModelError(f"{where}.static-crop: {', '.join(keys)} must be percentages")
        box = (int(values[0]), int(values[1]), int(values[2]), int(values[3]))  # type: ignore[arg-type]
    contrast = steps.get("contrast")
    kind = None
    if isinstance(contrast, dict) and contrast.get("enabled"):
        _object(contrast, f"{where}.contrast", frozenset({"enabled", "type"}))
        kind = _CONTRASTS.get(str(contrast.get("type")))
        if kind is None:
            raise ModelError(
                f"{where}.contrast.type must be one of {', '.join(_CONTRASTS)}, "
                f"got {contrast.get('type')!r}"
            )
    gray = steps.get("grayscale")
    # auto-orient reads EXIF orientation, which video frames do not have: nothing to do.
    return ImageSteps(box, bool(isinstance(gray, dict) and gray.get("enabled")), kind)


def _network_input(raw: Any, where: str, arch: Architecture) -> InputSpec:
    ni = _object(raw, where, _NETWORK_INPUT)
    size = ni.get("training_input_size")
    if not isinstance(size, dict) or not all(
        isinstance(size.get(k), int) and size[k] > 0 for k in ("width", "height")
    ):
        raise ModelError(f"{where}.training_input_size must give a positive width and height")
    if ni.get("input_channels", 3) != 3:
        raise ModelError(f"{where}.input_channels must be 3, got {ni.get('input_channels')!r}")
    resize = ni.get("resize_mode")
    padding = ni.get("padding_value")
    if resize == "fit-longer-edge":
        resize, padding = arch.fit_longer_edge
    elif resize == "letterbox-reflect-edges":
        resize = "letterbox"  # Roboflow's numpy path pads it as a plain letterbox
    if resize not in ("stretch", "letterbox"):
        raise ModelError(
            f"{where}.resize_mode {ni.get('resize_mode')!r} is not supported "
            "(stretch, letterbox, letterbox-reflect-edges, fit-longer-edge)"
        )
    color = ni.get("color_mode", "rgb")
    if color not in ("rgb", "bgr"):
        raise ModelError(f"{where}.color_mode must be rgb or bgr, got {color!r}")
    norm = ni.get("normalization")
    mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    if norm is not None:
        if not (isinstance(norm, list) and len(norm) == 2 and all(len(v) == 3 for v in norm)):
            raise ModelError(f"{where}.normalization must be [[3 means], [3 stds]]")
        mean = (float(norm[0][0]), float(norm[0][1]), float(norm[0][2]))
        std = (float(norm[1][0]), float(norm[1][1]), float(norm[1][2]))
    scale = ni.get("scaling_factor")
    return InputSpec(
        width=size["width"],
        height=size["height"],
        resize=resize,
        color=color,
        scale=1.0 if scale is None else float(scale),
        mean=mean,
        std=std,
        padding_value=0 if padding is None else int(padding),
    )


def _recommended(model_config: Mapping[str, Any], where: str) -> Recommended:
    rec = model_config.get("recommended_parameters") or {}
    if not isinstance(rec, dict):
        raise ModelError(f"{where}.recommended_parameters must be an object")
    return Recommended(rec.get("confidence"), rec.get("per_class_confidence") or {})


def _finish(meta: dict[str, Any], onnx: Path, where: str, **extra: Any) -> ModelPackage:
    # model.json's validation (class names, background, thresholds in [0, 1]) applies as well.
    base = ModelPackage.from_dict(meta, onnx, where=where)
    fields = {f: getattr(base, f) for f in ModelPackage.__dataclass_fields__}
    return ModelPackage(**{**fields, **extra})


def load_roboflow(directory: Path, model_id: str | None = None) -> ModelPackage:
    """A package in one of Roboflow's layouts (see the module docstring)."""
    kind = detect_format(directory)
    if kind not in ("inference-models", "legacy"):
        raise ModelError(f"{directory}: not a Roboflow package (no inference_config.json)")
    files = INFERENCE_MODELS_FILES if kind == "inference-models" else LEGACY_FILES
    for name in files:
        if not (directory / name).is_file():
            raise ModelError(f"{directory}: missing {name}")
    model_config: Mapping[str, Any] = {}
    if (directory / "model_config.json").is_file():
        model_config = _read_json(directory / "model_config.json")
        if not isinstance(model_config, dict):
            raise ModelError(f"{directory / 'model_config.json'} must hold a JSON object")
    arch = architecture(model_config.get("model_architecture"), str(directory))
    ident = model_id or str(model_config.get("model_id") or directory.name)
    if kind == "inference-models":
        where = str(directory / "inference_config.json")
        config = _object(_read_json(directory / "inference_config.json"), where, _CONFIG)
        if config.get("class_names_operations"):
            raise ModelError(f"{where}: class_names_operations are not supported")
        spec = _network_input(config.get("network_input"), f"{where}: network_input", arch)
        steps = _image_steps(config.get("image_pre_processing"), f"{where}: image_pre_processing")
        names = _class_names(directory)
    else:
        where = str(directory / "environment.json")
        env = _read_json(directory / "environment.json")
        if not isinstance(env, dict) or "PREPROCESSING" not in env:
            raise ModelError(f"{where}: must be an object with PREPROCESSING")
        pre = env["PREPROCESSING"]
        pre = json.loads(pre) if isinstance(pre, str) else pre
        spec = _legacy_input(pre, f"{where}: PREPROCESSING")
        steps = _image_steps(pre, f"{where}: PREPROCESSING")
        names = _class_names(directory, env.get("CLASS_MAP"))
        colors = env.get("COLORS") or {}
        model_config = {**model_config, "colors": colors if isinstance(colors, dict) else {}}
    rec = _recommended(model_config, str(directory / "model_config.json"))
    meta = {
        "model_id": ident,
        "class_names": names,
        "input": {
            "width": spec.width,
            "height": spec.height,
            "resize": spec.resize,
            "color": spec.color,
            "scale": spec.scale,
            "mean": list(spec.mean),
            "std": list(spec.std),
            "padding_value": spec.padding_value,
        },
        "output": {"activation": arch.activation},
        "default_confidence": arch.default_confidence,
        "recommended": {
            "confidence": rec.confidence,
            "per_class_confidence": rec.per_class_confidence,
        },
        "colors": {k: v for k, v in (model_config.get("colors") or {}).items() if k in names},
    }
    return _finish(meta, directory / "weights.onnx", where, image_steps=steps, source=kind)


# The legacy resize formats Roboflow's ORT path understood, as (resize mode, padding value).
_LEGACY_RESIZE = {
    "Stretch to": ("stretch", 0),
    "Fit (black edges) in": ("letterbox", 0),
    "Fit (grey edges) in": ("letterbox", 127),
    "Fit (white edges) in": ("letterbox", 255),
}
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def _legacy_input(pre: Any, where: str) -> InputSpec:
    steps = _object(pre, where, _STEPS | {"resize"})
    resize = steps.get("resize")
    if not isinstance(resize, dict):
        raise ModelError(f"{where}.resize must give format, width and height")
    _object(resize, f"{where}.resize", frozenset({"enabled", "format", "width", "height"}))
    mode = _LEGACY_RESIZE.get(str(resize.get("format")))
    if mode is None:
        raise ModelError(
            f"{where}.resize.format must be one of {', '.join(_LEGACY_RESIZE)}, "
            f"got {resize.get('format')!r}"
        )
    width, height = resize.get("width"), resize.get("height")
    if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
        raise ModelError(f"{where}.resize: width and height must be positive integers")
    # The legacy path feeds RGB / 255 with ImageNet mean and std.
    return InputSpec(width, height, mode[0], "rgb", 255.0, *_IMAGENET, padding_value=mode[1])  # type: ignore[arg-type]
