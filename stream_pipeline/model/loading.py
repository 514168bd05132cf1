"""``load_model``: a model reference resolved (pulled from Roboflow if need be) and loaded."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stream_pipeline.config import read_environment
from stream_pipeline.errors import ModelError, ModelNotFoundError
from stream_pipeline.model.package import ModelPackage
from stream_pipeline.model.registry import is_model_id, resolve_package
from stream_pipeline.model.segmenter import SegmentationModel

__all__ = ["load_model"]


def load_model(
    ref: str = "default",
    device: str = "auto",
    threads: int | None = None,
    class_names: Sequence[str] | None = None,
    input_size: tuple[int, int] | None = None,
    registry: Path | None = None,
    api_key: str | None = None,
    offline: bool | None = None,
    hub_settings: Any = None,
) -> SegmentationModel:
    """Resolve ``ref`` (``default``, ``project/version``, a package directory or a bare ``.onnx``
    with ``class_names``) and load it with an onnxruntime session on ``device``.

    A ``project/version`` that is not in the registry is pulled from Roboflow with ``api_key``
    (else ``$ROBOFLOW_API_KEY``) unless ``offline`` (else ``$STREAM_PIPELINE_OFFLINE``) is set;
    once pulled it loads with no network and no key.
    """
    env = read_environment()
    root = registry if registry is not None else env.models_dir

    def resolve() -> ModelPackage:
        return resolve_package(ref, root, class_names=class_names, input_size=input_size)

    try:
        package = resolve()
    except ModelNotFoundError:
        if not is_model_id(ref) or Path(ref).exists():
            raise
        from stream_pipeline.hub.cache import pull

        off = env.offline if offline is None else offline
        pull(ref, root, api_key or env.api_key, env.api_host, offline=off, settings=hub_settings)
        package = resolve()
    try:
        return SegmentationModel(package, device=device, threads=threads)
    except ModelError as exc:
        from stream_pipeline.hub.cache import hosted_source, remove_broken

        directory = package.onnx_path.parent
        if hosted_source(directory) is None:
            raise
        remove_broken(directory)  # a corrupt download must not stick: the next run pulls again
        raise ModelError(
            f"{exc}; the cached copy was removed, the next run downloads it again"
        ) from None
