"""Resolving model references: registry ids (``project/version``), package paths, bare ONNX.

The registry is a directory holding ``project/version/`` packages in any supported layout: ours
(``model.onnx`` + ``model.json``), Roboflow's inference-models one (``weights.onnx`` +
``inference_config.json`` + ``class_names.txt``, as hosted models are cached) or its legacy one
(``weights.onnx`` + ``environment.json``). The package ships one default model
(``street-default/1``, alias ``default``) so everything runs offline.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from stream_pipeline.errors import ModelError, ModelNotFoundError
from stream_pipeline.model.package import ModelPackage
from stream_pipeline.model.roboflow import detect_format, load_roboflow

__all__ = [
    "DEFAULT_MODEL_ID",
    "default_package_dir",
    "import_package",
    "is_model_id",
    "list_packages",
    "load_package_dir",
    "package_files",
    "resolve_package",
]

DEFAULT_MODEL_ID = "street-default/1"
_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def default_package_dir() -> Path:
    """Directory of the shipped default model package."""
    return Path(__file__).resolve().parent / "default"


def load_package_dir(directory: Path, model_id: str | None = None) -> ModelPackage:
    """A package directory in any supported layout (see the module docstring)."""
    kind = detect_format(directory)
    if kind == "model.json" or (kind is None and (directory / "model.onnx").is_file()):
        return ModelPackage.load(directory)  # names the missing model.json
    if kind is not None:
        return load_roboflow(directory, model_id)
    if not directory.is_dir():
        raise ModelNotFoundError(f"model package directory not found: {directory}")
    if (directory / "weights.onnx").is_file():
        raise ModelError(f"{directory}: missing inference_config.json (or environment.json)")
    raise ModelError(
        f"{directory}: not a model package (expected model.onnx + model.json, or Roboflow's "
        "weights.onnx + inference_config.json + class_names.txt, or weights.onnx + "
        "environment.json)"
    )


def package_files(directory: Path) -> list[str]:
    """The files that make up the package in ``directory`` (what an import copies)."""
    kind = detect_format(directory)
    names = {
        "model.json": ["model.onnx", "model.json"],
        "inference-models": ["weights.onnx", "inference_config.json", "class_names.txt"],
        "legacy": ["weights.onnx", "environment.json", "class_names.txt"],
    }.get(kind or "", [])
    optional = ["model_config.json", "class_names.txt"]
    return [n for n in dict.fromkeys(names + optional) if (directory / n).is_file()]


def is_model_id(ref: str) -> bool:
    """Whether ``ref`` has the form of a registry id, ``project/version``."""
    return bool(_MODEL_ID.match(ref)) and ".." not in ref


def resolve_package(
    ref: str,
    registry: Path,
    class_names: Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
) -> ModelPackage:
    """Resolve ``ref`` to a :class:`ModelPackage`.

    In order: ``default``; a path to a package directory; a path to a bare ``.onnx`` (needs
    ``class_names`` and, for a network with dynamic input size, ``input_size`` as (width,
    height)); a ``project/version`` id in ``registry``; the shipped default's id.
    """
    if ref in ("default", ""):
        return ModelPackage.load(default_package_dir())
    path = Path(ref).expanduser()
    if path.is_dir():
        return load_package_dir(path)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            raise ModelNotFoundError(f"ONNX file not found: {path}")
        if not class_names:
            raise ModelError(f"{path}: a bare .onnx needs class names (--class-names a,b,...)")
        width, height = input_size or _static_input_size(path)
        return ModelPackage.from_bare_onnx(path, class_names, width, height)
    if is_model_id(ref):
        candidate = registry / ref
        if candidate.is_dir() and detect_format(candidate) is not None:
            return load_package_dir(candidate, model_id=ref)
        if ref == DEFAULT_MODEL_ID:
            return ModelPackage.load(default_package_dir())
        raise ModelNotFoundError(
            f"model {ref!r} is not in the registry {registry} "
            "(see `stream-pipeline models list`; add one with `stream-pipeline models import DIR`)"
        )
    if path.exists():
        raise ModelError(f"{path}: not a model package directory or an .onnx file")
    raise ModelNotFoundError(
        f"model {ref!r} not found: not a path, and not a registry id of the form project/version"
    )


def _static_input_size(path: Path) -> tuple[int, int]:
    import onnxruntime as ort

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime's exception types are not public
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{path}: not a valid ONNX model ({first})") from None
    shape = session.get_inputs()[0].shape
    if len(shape) == 4 and isinstance(shape[2], int) and isinstance(shape[3], int):
        return shape[3], shape[2]
    raise ModelError(f"{path}: the network's input size is dynamic; give it (--input-size WxH)")


def list_packages(registry: Path) -> list[tuple[str, Path]]:
    """``(model_id, directory)`` of the shipped default and every package in ``registry``."""
    found = [(DEFAULT_MODEL_ID + " (shipped, alias 'default')", default_package_dir())]
    if registry.is_dir():
        found.extend(
            (f"{d.parent.name}/{d.name}", d)
            for d in sorted(registry.glob("*/*"))
            if d.is_dir() and not d.name.startswith(".") and detect_format(d) is not None
        )
    return found


def import_package(
    source: Path, registry: Path, model_id: str | None = None, replace: bool = False
) -> tuple[str, Path]:
    """Validate the package at ``source`` and copy it into ``registry`` under its id.

    The copy is made in a temporary directory and renamed into place, so an interrupted import
    leaves nothing half-written. Returns ``(model_id, destination)``.
    """
    from stream_pipeline.model.session import OnnxSession

    package = load_package_dir(source, model_id)
    OnnxSession(package, device="cpu", threads=1)  # proves the network loads and fits the classes
    target_id = model_id or package.model_id
    if not is_model_id(target_id):
        raise ModelError(f"model id {target_id!r} must look like project/version (give --id)")
    dest = registry / target_id
    if dest.exists() and not replace:
        raise ModelError(f"model {target_id!r} already exists in {registry} (use --replace)")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=dest.parent))
    except OSError as exc:
        raise ModelError(f"cannot write to the registry {registry}: {exc.strerror}") from None
    try:
        for name in package_files(source):
            shutil.copy2(source / name, staging / name)
        if package.source == "model.json" and model_id and model_id != package.model_id:
            import json

            meta = json.loads((staging / "model.json").read_text(encoding="utf-8"))
            meta["model_id"] = model_id
            (staging / "model.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        staging.rename(dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target_id, dest
