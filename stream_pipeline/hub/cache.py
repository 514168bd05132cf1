"""The cache is the registry: a hosted model is pulled once into ``<registry>/project/version/``.

A pull downloads into ``project/.pull-version/`` (kept between runs, so a killed download
resumes), checks that the network loads, writes ``model_config.json`` (the manifest, with the
recommended thresholds) last and renames the folder into place: a folder in the registry is always
complete. Once there, the model loads with no network and no key, for as long as the user keeps
it (no expiry). Pulls of one model take a file lock; a process that finds it held waits for as
long as the holder makes progress, not for a fixed time.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from stream_pipeline.errors import (
    HubAuthError,
    HubIntegrityError,
    HubUnavailableError,
    ModelError,
    OfflineError,
)
from stream_pipeline.hub.client import HostedPackage, HubSettings, fetch_package, scrub
from stream_pipeline.hub.download import download_file

__all__ = ["MANIFEST", "hosted_source", "is_complete", "pull", "remove_broken"]

MANIFEST = "model_config.json"
_LOG = logging.getLogger(__name__)


def is_complete(directory: Path) -> bool:
    """Whether ``directory`` holds a whole pulled (or imported) package."""
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text(encoding="utf-8")).get("package_files", [])
    except (OSError, ValueError, AttributeError):
        return False
    return all((directory / name).is_file() for name in files)


def hosted_source(directory: Path) -> dict[str, Any] | None:
    """The ``source`` record of a pulled package (api host, package id, when), else None."""
    try:
        meta = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    source = meta.get("source") if isinstance(meta, dict) else None
    return source if isinstance(source, dict) and source.get("kind") == "roboflow" else None


def remove_broken(directory: Path) -> None:
    """Drop a pulled package that does not load, so that the next run downloads it again."""
    shutil.rmtree(directory, ignore_errors=True)


def _progress(staging: Path) -> tuple[int, float]:
    """What a waiter watches: bytes and newest change under the holder's staging folder."""
    total, newest = 0, 0.0
    for path in staging.glob("*") if staging.is_dir() else []:
        try:
            st = path.stat()
        except OSError:
            continue
        total, newest = total + st.st_size, max(newest, st.st_mtime)
    return total, newest


@contextmanager
def _locked(lock_path: Path, staging: Path, model_id: str, settings: HubSettings) -> Iterator[None]:
    lock = FileLock(str(lock_path))
    seen, since = _progress(staging), time.monotonic()
    while True:
        try:
            lock.acquire(timeout=0.5)
            break
        except Timeout:
            now = _progress(staging)
            if now != seen:
                seen, since = now, time.monotonic()
            elif time.monotonic() - since > settings.stall_timeout_s:
                raise HubUnavailableError(
                    f"another process has been pulling {model_id!r} with no progress for "
                    f"{settings.stall_timeout_s:.0f} s (lock {lock_path})"
                ) from None
    try:
        yield
    finally:
        lock.release()


def _manifest(package: HostedPackage, host: str) -> dict[str, Any]:
    # Roboflow's model_config.json keys, plus where it came from (never the key).
    return {
        "model_id": package.model_id,
        "canonical_model_id": package.canonical_id,
        "model_architecture": package.architecture,
        "task_type": "semantic-segmentation",
        "backend_type": "onnx",
        "package_id": package.package_id,
        "quantization": package.manifest.get("quantization"),
        "dynamic_batch_size_supported": package.manifest.get("dynamicBatchSize"),
        "static_batch_size": package.manifest.get("staticBatchSize"),
        "recommended_parameters": dict(package.recommended),
        "package_files": [f.handle for f in package.files],
        "source": {
            "kind": "roboflow",
            "api_host": host,
            "package_id": package.package_id,
            "pulled_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        },
    }


def _check_loads(staging: Path, model_id: str) -> None:
    from stream_pipeline.model.roboflow import load_roboflow
    from stream_pipeline.model.session import OnnxSession

    try:
        OnnxSession(load_roboflow(staging, model_id), device="cpu", threads=1)
    except ModelError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise HubIntegrityError(
            f"the package Roboflow sent for {model_id!r} does not load ({exc}); it was removed, "
            "the next run downloads it again"
        ) from None


def pull(
    model_id: str,
    registry: Path,
    api_key: str | None,
    api_host: str,
    offline: bool = False,
    settings: HubSettings | None = None,
) -> Path:
    """``<registry>/<model_id>``, downloading the hosted model first when it is not there."""
    settings = settings or HubSettings()
    final = registry / model_id
    if is_complete(final):
        return final
    if offline:
        raise OfflineError(
            f"model {model_id!r} is not in the registry {registry} and offline mode is on "
            "(pull it once with network: stream-pipeline models pull " + model_id + ")"
        )
    if not api_key:
        raise HubAuthError(
            f"model {model_id!r} is not in the registry {registry} and no Roboflow API key "
            "is set (ROBOFLOW_API_KEY or --api-key)"
        )
    project, version = model_id.split("/")
    staging = registry / project / f".pull-{version}"
    locks = registry / ".locks"
    try:
        locks.mkdir(parents=True, exist_ok=True)
        staging.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot write to the registry {registry}: {exc.strerror}") from None
    with _locked(locks / f"{project}@{version}.lock", staging, model_id, settings):
        if is_complete(final):  # another process pulled it while we waited
            return final
        try:
            package = fetch_package(model_id, api_key, api_host, settings)
            _LOG.info("pulling %s (package %s) from %s", model_id, package.package_id, api_host)
            staging.mkdir(parents=True, exist_ok=True)
            for file in package.files:
                if not (staging / file.handle).is_file():
                    download_file(file, staging / file.handle, model_id, settings)
        except Exception as exc:  # the key must not leave through any message
            if api_key in str(exc):
                raise type(exc)(scrub(str(exc), api_key)) from None
            raise
        _check_loads(staging, model_id)
        tmp = staging / f".{MANIFEST}.tmp"
        tmp.write_text(json.dumps(_manifest(package, api_host), indent=2), encoding="utf-8")
        os.replace(tmp, staging / MANIFEST)  # the manifest last: the folder is now complete
        for leftover in staging.glob(".*"):
            leftover.unlink(missing_ok=True)
        if final.exists():
            shutil.rmtree(final)
        os.replace(staging, final)
    return final
