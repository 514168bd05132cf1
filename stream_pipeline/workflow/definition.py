"""Roboflow workflow definitions (``version``, ``inputs``, ``steps``, ``outputs``) → a run plan.

:func:`load_workflow` validates the structure and every field of the supported blocks;
:meth:`Workflow.bind` resolves ``$inputs.*`` selectors against runtime parameters and returns the
values the pipeline needs. Errors are :class:`~stream_pipeline.errors.WorkflowError` naming the
step (or output) and the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_pipeline.errors import WorkflowError
from stream_pipeline.model.thresholds import CONFIDENCE_MODES, V1_CONFIDENCE, numeric_mode
from stream_pipeline.workflow.blocks import BLOCKS, BlockSpec

__all__ = ["BoundWorkflow", "Workflow", "load_workflow"]

IMAGE_INPUTS = frozenset({"WorkflowImage", "InferenceImage"})
PARAMETER_INPUTS = frozenset({"WorkflowParameter", "InferenceParameter"})
_INPUT_SELECTOR = re.compile(r"^\$inputs\.([A-Za-z_][A-Za-z0-9_\-]*)$")
_STEP_SELECTOR = re.compile(r"^\$steps\.([^.]+)\.([A-Za-z_][A-Za-z0-9_]*|\*)$")
_MISSING = object()


@dataclass(frozen=True, slots=True)
class Step:
    """One validated step: its block and raw field values (literals or selectors)."""

    name: str
    block: BlockSpec
    values: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class BoundWorkflow:
    """A workflow with every selector resolved: what one pipeline runs."""

    model_id: str
    confidence_mode: str
    custom_confidence: float | None
    segmentation_step: str
    visualization_step: str | None
    opacity: float
    outputs: Mapping[str, tuple[str, str]]  # output name → (step, step output or "*")


@dataclass(frozen=True, slots=True)
class Workflow:
    """A validated workflow definition."""

    version: str
    image_inputs: tuple[str, ...]
    parameters: Mapping[str, Any]  # name → default value (or _MISSING)
    steps: Mapping[str, Step]
    outputs: Mapping[str, tuple[str, str]] = field(default_factory=dict)

    @property
    def segmentation(self) -> Step:
        """The segmentation step."""
        return next(s for s in self.steps.values() if s.block.kind == "segmentation")

    def bind(self, parameters: Mapping[str, Any] | None = None) -> BoundWorkflow:
        """Resolve ``$inputs.*`` selectors with ``parameters`` (else the inputs' defaults)."""
        params = dict(parameters or {})
        unknown = sorted(set(params) - set(self.parameters))
        if unknown:
            raise WorkflowError(
                f"parameter {unknown[0]!r} is not an input of the workflow "
                f"(inputs: {', '.join(sorted(self.parameters)) or 'none'})"
            )
        seg = self.segmentation

        def value(step: Step, name: str, default: Any, required: bool = True) -> Any:
            raw = step.values.get(name, default)
            match = _INPUT_SELECTOR.match(raw) if isinstance(raw, str) else None
            if match is None:
                return raw
            got = params.get(match.group(1), self.parameters[match.group(1)])
            if got is _MISSING and required:
                raise WorkflowError(
                    f"step {step.name!r}: field {name!r} is bound to {raw} but no value was "
                    "given for it and the input has no default_value"
                )
            return None if got is _MISSING else got

        model_id = value(seg, "model_id", None)
        if not isinstance(model_id, str) or not model_id:
            raise WorkflowError(f"step {seg.name!r}: field 'model_id' must be a non-empty string")
        if seg.block.version == 1:
            # Roboflow's v1 block sends no confidence: the request default applies to every class.
            mode, custom = "custom", V1_CONFIDENCE
        else:
            mode = value(seg, "confidence_mode", "best")
            number = numeric_mode(mode)
            if number is not None:
                # A mode bound to a number acts as custom with that number, as in Roboflow.
                _check_unit(seg.name, "confidence_mode", number)
                mode, custom = "custom", number
            else:
                _check_mode(seg.name, mode)
                # custom_confidence only matters in custom mode; an unset parameter is fine.
                custom = value(seg, "custom_confidence", None, required=mode == "custom")
                if custom is not None:
                    _check_unit(seg.name, "custom_confidence", custom)
            if mode == "custom" and custom is None:
                raise WorkflowError(
                    f"step {seg.name!r}: confidence_mode 'custom' needs field 'custom_confidence'"
                )
        viz = next((s for s in self.steps.values() if s.block.kind == "visualization"), None)
        opacity = 0.5
        if viz is not None:
            opacity = value(viz, "opacity", 0.5)
            _check_unit(viz.name, "opacity", opacity)
        return BoundWorkflow(
            model_id=model_id,
            confidence_mode=mode,
            custom_confidence=None if custom is None else float(custom),
            segmentation_step=seg.name,
            visualization_step=None if viz is None else viz.name,
            opacity=float(opacity),
            outputs=dict(self.outputs),
        )


def _check_mode(step: str, mode: Any) -> None:
    if mode not in CONFIDENCE_MODES:
        raise WorkflowError(
            f"step {step!r}: field 'confidence_mode' must be one of "
            f"{', '.join(CONFIDENCE_MODES)} or a $inputs selector, got {mode!r}"
        )


def _check_unit(step: str, name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise WorkflowError(f"step {step!r}: field {name!r} must be a number, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise WorkflowError(f"step {step!r}: field {name!r} must be in [0, 1], got {value}")


def load_workflow(source: str | Path | Mapping[str, Any]) -> Workflow:
    """Load and validate a workflow from a dict, a JSON string or a path to a JSON file."""
    if isinstance(source, Mapping):
        raw: Any = source
    else:
        text = str(source)
        path = Path(text) if isinstance(source, Path) or not text.lstrip().startswith("{") else None
        if path is not None:
            if not path.is_file():
                raise WorkflowError(f"workflow file not found: {path}")
            text = path.read_text(encoding="utf-8")
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowError(f"workflow is not valid JSON: {exc}") from None
    if not isinstance(raw, Mapping):
        raise WorkflowError("workflow must be a JSON object with version, inputs, steps, outputs")
    # The Roboflow API wraps definitions as {"specification": {...}}; accept that too.
    if "specification" in raw and "steps" not in raw:
        raw = raw["specification"]
    return _parse(raw)


def _parse(raw: Mapping[str, Any]) -> Workflow:
    for key in ("version", "inputs", "steps", "outputs"):
        if key not in raw:
            raise WorkflowError(f"workflow is missing {key!r}")
    if not isinstance(raw["version"], str):
        raise WorkflowError("workflow field 'version' must be a string")
    images, parameters = _parse_inputs(raw["inputs"])
    steps = _parse_steps(raw["steps"], images, parameters)
    outputs = _parse_outputs(raw["outputs"], steps)
    return Workflow(raw["version"], images, parameters, steps, outputs)


def _parse_inputs(raw: Any) -> tuple[tuple[str, ...], dict[str, Any]]:
    if not isinstance(raw, list):
        raise WorkflowError("workflow field 'inputs' must be a list")
    images: list[str] = []
    parameters: dict[str, Any] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise WorkflowError(f"input #{i}: must be an object with 'type' and 'name'")
        name, kind = item["name"], item.get("type")
        if name in images or name in parameters:
            raise WorkflowError(f"input {name!r}: defined twice")
        if kind in IMAGE_INPUTS:
            images.append(name)
        elif kind in PARAMETER_INPUTS:
            parameters[name] = item.get("default_value", _MISSING)
        else:
            supported = ", ".join(sorted(IMAGE_INPUTS | PARAMETER_INPUTS))
            raise WorkflowError(f"input {name!r}: unknown type {kind!r} (supported: {supported})")
    if not images:
        raise WorkflowError("workflow has no image input (type WorkflowImage)")
    return tuple(images), parameters


def _parse_steps(
    raw: Any, images: tuple[str, ...], parameters: Mapping[str, Any]
) -> dict[str, Step]:
    if not isinstance(raw, list) or not raw:
        raise WorkflowError("workflow field 'steps' must be a non-empty list")
    steps: dict[str, Step] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise WorkflowError(f"step #{i}: must be an object with 'type' and 'name'")
        name = item["name"]
        if name in steps:
            raise WorkflowError(f"step {name!r}: name used twice")
        block = BLOCKS.get(str(item.get("type")))
        if block is None:
            raise WorkflowError(
                f"step {name!r}: unsupported block type {item.get('type')!r} "
                f"(supported: {', '.join(BLOCKS)})"
            )
        values = {k: v for k, v in item.items() if k not in ("type", "name")}
        for key, val in values.items():
            if key not in block.fields:
                raise WorkflowError(
                    f"step {name!r}: unknown field {key!r} for {block.type} "
                    f"(fields: {', '.join(sorted(block.fields))})"
                )
            _check_field(name, key, val, block, images, parameters, steps)
        step = Step(name, block, values)
        _check_step(step)
        steps[name] = step
    kinds = [s.block.kind for s in steps.values()]
    if kinds.count("segmentation") != 1:
        raise WorkflowError(
            "workflow must have exactly one semantic segmentation step, has "
            f"{kinds.count('segmentation')}"
        )
    if kinds.count("visualization") > 1:
        raise WorkflowError("workflow may have at most one mask visualization step")
    return steps


def _check_field(
    step: str,
    key: str,
    val: Any,
    block: BlockSpec,
    images: tuple[str, ...],
    parameters: Mapping[str, Any],
    steps: Mapping[str, Step],
) -> None:
    if not isinstance(val, str) or not val.startswith("$"):
        return
    where = f"step {step!r}: field {key!r}"
    if key in ("images", "image"):
        match = _INPUT_SELECTOR.match(val)
        if match is None or match.group(1) not in images:
            raise WorkflowError(
                f"{where}: unknown selector {val!r} (image inputs: {', '.join(images)})"
            )
        return
    if key == "predictions":
        sm = _STEP_SELECTOR.match(val)
        if (
            sm is None
            or sm.group(1) not in steps
            or steps[sm.group(1)].block.kind != "segmentation"
            or sm.group(2) != "predictions"
        ):
            raise WorkflowError(
                f"{where}: unknown selector {val!r} "
                "(expected $steps.<segmentation step>.predictions)"
            )
        return
    match = _INPUT_SELECTOR.match(val)
    if match is None or key not in block.bindable:
        raise WorkflowError(f"{where}: selector {val!r} is not allowed here")
    if match.group(1) not in parameters:
        raise WorkflowError(
            f"{where}: unknown selector {val!r} "
            f"(parameters: {', '.join(sorted(parameters)) or 'none'})"
        )


def _check_step(step: Step) -> None:
    values, name = step.values, step.name
    if step.block.kind == "segmentation":
        if "images" not in values:
            raise WorkflowError(f"step {name!r}: field 'images' is required")
        model_id = values.get("model_id")
        if not isinstance(model_id, str) or not model_id:
            raise WorkflowError(
                f"step {name!r}: field 'model_id' is required (a string or $inputs selector)"
            )
        mode = values.get("confidence_mode", "best")
        if not (isinstance(mode, str) and mode.startswith("$")):
            _check_mode(name, mode)
        custom = values.get("custom_confidence")
        if custom is not None and not (isinstance(custom, str) and custom.startswith("$")):
            _check_unit(name, "custom_confidence", custom)
        if mode == "custom" and custom is None:
            raise WorkflowError(
                f"step {name!r}: confidence_mode 'custom' needs field 'custom_confidence'"
            )
    else:
        for key in ("image", "predictions"):
            if key not in values:
                raise WorkflowError(f"step {name!r}: field {key!r} is required")
        opacity = values.get("opacity", 0.5)
        if not (isinstance(opacity, str) and opacity.startswith("$")):
            _check_unit(name, "opacity", opacity)


def _parse_outputs(raw: Any, steps: Mapping[str, Step]) -> dict[str, tuple[str, str]]:
    if not isinstance(raw, list):
        raise WorkflowError("workflow field 'outputs' must be a list")
    outputs: dict[str, tuple[str, str]] = {}
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            raise WorkflowError(f"output #{i}: must be an object with 'name' and 'selector'")
        name, selector = item["name"], item.get("selector")
        if item.get("type", "JsonField") != "JsonField":
            raise WorkflowError(
                f"output {name!r}: type must be JsonField, got {item.get('type')!r}"
            )
        match = _STEP_SELECTOR.match(selector) if isinstance(selector, str) else None
        if match is None or match.group(1) not in steps:
            raise WorkflowError(
                f"output {name!r}: unknown selector {selector!r} (steps: {', '.join(steps)})"
            )
        step = steps[match.group(1)]
        if match.group(2) != "*" and match.group(2) not in step.block.outputs:
            raise WorkflowError(
                f"output {name!r}: step {step.name!r} has no output {match.group(2)!r} "
                f"(outputs: {', '.join(sorted(step.block.outputs))})"
            )
        if name in outputs:
            raise WorkflowError(f"output {name!r}: defined twice")
        outputs[name] = (match.group(1), match.group(2))
    return outputs
