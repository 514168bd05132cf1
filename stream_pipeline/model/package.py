"""Model packages: ``model.onnx`` + ``model.json``, parsed and validated on load.

The format is the one in docs/models.md ("Model packages"). Every problem is reported as a
:class:`~stream_pipeline.errors.ModelError` whose one-line message names the file and the field.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from stream_pipeline.errors import ModelError, ModelNotFoundError

__all__ = ["CONTRAST_TYPES", "ImageSteps", "InputSpec", "ModelPackage", "Recommended"]

ResizeMode = Literal["stretch", "letterbox"]
ColorOrder = Literal["rgb", "bgr"]
Activation = Literal["softmax", "sigmoid", "none"]

_LOG = logging.getLogger(__name__)
_HEX_COLOR = re.compile(r"^#[0-9a-fA-F]{6}$")


@dataclass(frozen=True, slots=True)
class InputSpec:
    """How a frame becomes the network's input tensor."""

    width: int
    height: int
    resize: ResizeMode = "stretch"
    color: ColorOrder = "rgb"
    scale: float = 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    padding_value: int = 0


CONTRAST_TYPES = ("adaptive-equalization", "contrast-stretching", "histogram-equalization")


@dataclass(frozen=True, slots=True)
class ImageSteps:
    """Roboflow's ``image_pre_processing``, applied to the frame before the resize.

    ``static_crop`` is ``(x_min, y_min, x_max, y_max)`` in percent of the frame; the class map is
    placed back on the full frame (background, confidence 0 outside the crop). ``contrast`` is one
    of :data:`CONTRAST_TYPES`.
    """

    static_crop: tuple[int, int, int, int] | None = None
    grayscale: bool = False
    contrast: str | None = None


@dataclass(frozen=True, slots=True)
class Recommended:
    """Thresholds the package recommends (used by the ``best`` confidence mode)."""

    confidence: float | None = None
    per_class_confidence: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelPackage:
    """A validated model package. ``onnx_path`` is the network; the rest is ``model.json``."""

    model_id: str
    onnx_path: Path
    class_names: tuple[str, ...]
    input: InputSpec
    activation: Activation = "softmax"
    default_confidence: float = 0.5
    recommended: Recommended = field(default_factory=Recommended)
    colors: Mapping[str, str] = field(default_factory=dict)
    image_steps: ImageSteps = field(default_factory=ImageSteps)
    source: str = "model.json"  # the package's format: model.json, inference-models, legacy

    @property
    def background_id(self) -> int:
        """Index of the ``background`` class (any case)."""
        return next(i for i, n in enumerate(self.class_names) if n.lower() == "background")

    @classmethod
    def load(cls, directory: str | Path) -> ModelPackage:
        """Load ``model.json`` and locate ``model.onnx`` in ``directory``."""
        root = Path(directory)
        if not root.is_dir():
            raise ModelNotFoundError(f"model package directory not found: {root}")
        meta_path = root / "model.json"
        onnx_path = root / "model.onnx"
        if not meta_path.is_file():
            raise ModelError(f"{root}: missing model.json")
        if not onnx_path.is_file():
            raise ModelError(f"{root}: missing model.onnx")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ModelError(f"{meta_path}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise ModelError(f"{meta_path}: must hold a JSON object")
        return cls.from_dict(meta, onnx_path, where=str(meta_path))

    @classmethod
    def from_bare_onnx(
        cls,
        onnx_path: str | Path,
        class_names: Sequence[str],
        width: int,
        height: int,
        **overrides: Any,
    ) -> ModelPackage:
        """A package for a bare ``.onnx`` with class names (and input size) given separately."""
        path = Path(onnx_path)
        if not path.is_file():
            raise ModelNotFoundError(f"ONNX file not found: {path}")
        meta: dict[str, Any] = {
            "model_id": path.stem,
            "task": "semantic-segmentation",
            "class_names": list(class_names),
            "input": {"width": width, "height": height},
        }
        meta.update(overrides)
        return cls.from_dict(meta, path, where=str(path))

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any], onnx_path: Path, where: str) -> ModelPackage:
        """Validate a parsed ``model.json``; ``where`` prefixes error messages."""

        def fail(msg: str) -> ModelError:
            return ModelError(f"{where}: {msg}")

        task = meta.get("task", "semantic-segmentation")
        if task != "semantic-segmentation":
            raise fail(f"task must be 'semantic-segmentation', got {task!r}")
        model_id = meta.get("model_id")
        if not isinstance(model_id, str) or not model_id:
            raise fail("model_id must be a non-empty string")

        names = meta.get("class_names")
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) and n for n in names)
        ):
            raise fail("class_names must be a non-empty list of strings")
        if len(set(names)) != len(names):
            raise fail("class_names contains duplicates")
        if not any(n.lower() == "background" for n in names):
            raise fail("class_names must contain 'background' (sub-threshold pixels become it)")
        if len(names) > 65536:
            raise fail("at most 65536 classes are supported")

        input_spec = _parse_input(meta.get("input"), fail)

        output = meta.get("output", {})
        if not isinstance(output, dict):
            raise fail("output must be an object")
        activation = output.get("activation", "softmax")
        if activation not in ("softmax", "sigmoid", "none"):
            raise fail(f"output.activation must be softmax, sigmoid or none, got {activation!r}")

        default_conf = _unit_float(meta.get("default_confidence", 0.5), "default_confidence", fail)

        rec_raw = meta.get("recommended", {}) or {}
        if not isinstance(rec_raw, dict):
            raise fail("recommended must be an object")
        rec_conf = rec_raw.get("confidence")
        rec_conf_f = (
            None if rec_conf is None else _unit_float(rec_conf, "recommended.confidence", fail)
        )
        per_class_raw = rec_raw.get("per_class_confidence", {}) or {}
        if not isinstance(per_class_raw, dict):
            raise fail("recommended.per_class_confidence must be an object")
        per_class: dict[str, float] = {}
        for name, value in per_class_raw.items():
            if name not in names:
                # Roboflow ignores thresholds for classes the model lacks; so do we, but say so.
                _LOG.warning(
                    "%s: recommended.per_class_confidence names unknown class %r (ignored)",
                    where,
                    name,
                )
                continue
            per_class[name] = _unit_float(value, f"recommended.per_class_confidence.{name}", fail)

        colors_raw = meta.get("colors", {}) or {}
        if not isinstance(colors_raw, dict):
            raise fail("colors must be an object mapping class name to '#rrggbb'")
        for name, color in colors_raw.items():
            if name not in names:
                raise fail(f"colors names unknown class {name!r}")
            if not isinstance(color, str) or not _HEX_COLOR.match(color):
                raise fail(f"colors.{name} must be '#rrggbb', got {color!r}")

        return cls(
            model_id=model_id,
            onnx_path=onnx_path,
            class_names=tuple(names),
            input=input_spec,
            activation=activation,
            default_confidence=default_conf,
            recommended=Recommended(rec_conf_f, per_class),
            colors=dict(colors_raw),
        )

    def channel_class_ids(self, channels: int) -> tuple[int, ...]:
        """Class id of each network output channel.

        ``channels == len(class_names)``: one channel per class. ``len - 1``: the network has no
        background channel, so ids skip the background slot. ``1``: a binary head whose channel is
        the one non-background class.
        """
        n = len(self.class_names)
        bg = self.background_id
        if channels == n:
            return tuple(range(n))
        if channels == n - 1 or (channels == 1 and n == 2):
            return tuple(i for i in range(n) if i != bg)
        raise ModelError(
            f"{self.onnx_path}: network outputs {channels} channels but class_names has {n} "
            f"classes (expected {n}, or {n - 1} without a background channel)"
        )


def _unit_float(value: Any, name: str, fail: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise fail(f"{name} must be a number in [0, 1], got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise fail(f"{name} must be in [0, 1], got {value}")
    return float(value)


def _parse_input(raw: Any, fail: Any) -> InputSpec:
    if not isinstance(raw, dict):
        raise fail("input must be an object with width and height")
    width, height = raw.get("width"), raw.get("height")
    for key, value in (("width", width), ("height", height)):
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise fail(f"input.{key} must be a positive integer, got {value!r}")
    resize = raw.get("resize", "stretch")
    if resize not in ("stretch", "letterbox"):
        raise fail(f"input.resize must be 'stretch' or 'letterbox', got {resize!r}")
    color = str(raw.get("color", "rgb")).lower()
    if color not in ("rgb", "bgr"):
        raise fail(f"input.color must be 'rgb' or 'bgr', got {raw.get('color')!r}")
    scale = raw.get("scale", 255.0)
    if isinstance(scale, bool) or not isinstance(scale, int | float) or scale <= 0:
        raise fail(f"input.scale must be a positive number, got {scale!r}")
    triples: list[tuple[float, float, float]] = []
    for key, default in (("mean", (0.0, 0.0, 0.0)), ("std", (1.0, 1.0, 1.0))):
        value = raw.get(key, default)
        if (
            not isinstance(value, list | tuple)
            or len(value) != 3
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        ):
            raise fail(f"input.{key} must be a list of 3 numbers, got {value!r}")
        if key == "std" and any(v <= 0 for v in value):
            raise fail(f"input.std must be positive, got {value!r}")
        triples.append((float(value[0]), float(value[1]), float(value[2])))
    pad = raw.get("padding_value", 0)
    if isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad <= 255:
        raise fail(f"input.padding_value must be an integer in [0, 255], got {pad!r}")
    assert isinstance(width, int) and isinstance(height, int)
    return InputSpec(
        width=width,
        height=height,
        resize=resize,
        color=color,  # type: ignore[arg-type]
        scale=float(scale),
        mean=triples[0],
        std=triples[1],
        padding_value=pad,
    )
