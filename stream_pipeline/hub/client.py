"""Roboflow's weights API (``GET /models/v1/external/weights``), as inference-models calls it.

The key travels only in the ``Authorization: Bearer`` header: never in a URL, a log line or an
error text (every message is also scrubbed of it). Transient answers (408, 429, 5xx) and network
errors are retried with exponential backoff; every failure ends as one worded
:class:`~stream_pipeline.errors.HubError`.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from stream_pipeline.errors import (
    HubAccountError,
    HubAuthError,
    HubError,
    HubIntegrityError,
    HubModelNotFoundError,
    HubUnavailableError,
)

__all__ = ["HostedPackage", "HubSettings", "PackageFile", "fetch_package", "scrub", "with_retries"]

T = TypeVar("T")
USER_AGENT = "stream_pipeline (Roboflow weights client)"
_RETRY_CODES = frozenset({408, 429})
_MAX_PAGES = 10


@dataclass(frozen=True, slots=True)
class HubSettings:
    """Timeouts, retries and download tuning (defaults as inference-models has them)."""

    timeout_s: float = 30.0
    tries: int = 3
    backoff_s: float = 1.0
    ranged_threshold: int = 32 * 1024 * 1024  # files this large download in parallel ranges
    range_parts: int = 8
    chunk: int = 1024 * 1024
    # Waiting on another process's download: give up only after this long without progress.
    stall_timeout_s: float = 120.0


@dataclass(frozen=True, slots=True)
class PackageFile:
    """One file of a package: its name in the package, a signed URL, its MD5 (hex)."""

    handle: str
    url: str
    md5: str


@dataclass(frozen=True, slots=True)
class HostedPackage:
    """The ONNX package chosen for a hosted model, with what the cache keeps about it."""

    model_id: str
    canonical_id: str
    architecture: str | None
    package_id: str
    files: tuple[PackageFile, ...]
    recommended: Mapping[str, Any]  # snake_case: confidence, per_class_confidence
    manifest: Mapping[str, Any]


def scrub(text: str, secret: str | None) -> str:
    """``text`` with ``secret`` (the API key) replaced: a last guard on every message."""
    return text.replace(secret, "***") if secret else text


def with_retries(settings: HubSettings, call: Callable[[], T]) -> T:
    """``call()`` retried on transient failures (``HubUnavailableError``) with backoff."""
    for attempt in range(settings.tries):
        try:
            return call()
        except HubUnavailableError as exc:
            if attempt + 1 == settings.tries:
                raise HubUnavailableError(f"{exc} (after {settings.tries} tries)") from None
            time.sleep(settings.backoff_s * 2**attempt)
    raise AssertionError("unreachable")


def http_error(exc: urllib.error.HTTPError, model_id: str, what: str, key: str | None) -> HubError:
    """The worded error for an HTTP error answer."""
    code = exc.code
    if code == 401:
        return HubAuthError(
            f"Roboflow refused the API key for model {model_id!r} (HTTP 401): check "
            "ROBOFLOW_API_KEY or --api-key"
        )
    if code == 403:
        return HubAuthError(
            f"the API key may not use model {model_id!r} (HTTP 403): check that the key belongs "
            "to the model's workspace"
        )
    if code == 404:
        # Roboflow's older path answers 404 for a wrong key too: name both causes.
        return HubModelNotFoundError(
            f"model {model_id!r} not found on Roboflow (HTTP 404): check the model id "
            "(project/version) and that the API key belongs to its workspace"
        )
    if code == 402:
        return HubAccountError(
            f"Roboflow needs payment on this account to use model {model_id!r} (HTTP 402)"
        )
    if code == 423:
        return HubAccountError(
            f"Roboflow has paused usage on this account (HTTP 423): model {model_id!r} "
            "cannot be downloaded until it is resumed"
        )
    if code in _RETRY_CODES or code >= 500:
        return HubUnavailableError(f"{what} for model {model_id!r} failed with HTTP {code}")
    body = ""
    with contextlib.suppress(OSError):
        body = exc.read(300).decode("utf-8", "replace")
    detail = " ".join(scrub(body, key).split())[:200]
    return HubError(f"{what} for model {model_id!r} failed with HTTP {code}: {detail}")


def network_error(exc: BaseException, host: str, what: str) -> HubUnavailableError:
    """The worded error for a connection failure or a timeout (never the full URL)."""
    reason: Any = getattr(exc, "reason", exc)
    if isinstance(reason, socket.timeout | TimeoutError):
        text = "timed out"
    else:
        text = getattr(reason, "strerror", None) or type(reason).__name__
    return HubUnavailableError(
        f"{what}: cannot reach {host} ({text}); with --offline, cached models load without it"
    )


def _get_json(url: str, key: str, model_id: str, host: str, settings: HubSettings) -> Any:
    request = urllib.request.Request(
        url, headers={"Authorization": f"Bearer {key}", "User-Agent": USER_AGENT}
    )
    what = "the Roboflow weights API"
    try:
        with urllib.request.urlopen(request, timeout=settings.timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise http_error(exc, model_id, what, key) from None
    except (urllib.error.URLError, OSError) as exc:
        raise network_error(exc, host, f"pulling model {model_id!r}") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise HubError(f"{what} sent an unreadable answer for model {model_id!r}") from None


def _snake(params: Any) -> dict[str, Any]:
    if not isinstance(params, dict):
        return {}
    out: dict[str, Any] = {}
    if params.get("confidence") is not None:
        out["confidence"] = params["confidence"]
    per_class = params.get("perClassConfidence")
    if isinstance(per_class, dict) and per_class:
        out["per_class_confidence"] = dict(per_class)
    return out


def fetch_package(
    model_id: str, key: str, host: str, settings: HubSettings | None = None
) -> HostedPackage:
    """The trusted ONNX package of ``model_id`` (pages followed, retried, errors worded)."""
    settings = settings or HubSettings()
    metadata: dict[str, Any] = {}
    packages: list[Any] = []
    page: str | None = None
    for _ in range(_MAX_PAGES):
        query = {"modelId": model_id, **({"startAfter": page} if page else {})}
        url = f"{host}/models/v1/external/weights?{urllib.parse.urlencode(query)}"

        def get(url: str = url) -> Any:
            return _get_json(url, key, model_id, host, settings)

        answer = with_retries(settings, get)
        meta = answer.get("modelMetadata") if isinstance(answer, dict) else None
        if not isinstance(meta, dict):
            raise HubError(f"the Roboflow weights API answer for {model_id!r} has no modelMetadata")
        metadata = metadata or meta
        packages.extend(p for p in meta.get("modelPackages") or [] if isinstance(p, dict))
        page = meta.get("nextPage")
        if not page:
            break
    task = metadata.get("taskType")
    if task not in (None, "semantic-segmentation"):
        raise HubError(f"model {model_id!r} is a {task} model, not semantic-segmentation")
    return _choose(model_id, metadata, packages)


def _choose(model_id: str, metadata: Mapping[str, Any], packages: list[Any]) -> HostedPackage:
    onnx = [
        p
        for p in packages
        if p.get("trustedSource") is True
        and (p.get("packageManifest") or {}).get("type") == "onnx-model-package-v1"
    ]
    if not onnx:
        kinds = sorted({str((p.get("packageManifest") or {}).get("type")) for p in packages})
        raise HubIntegrityError(
            f"model {model_id!r} has no trusted ONNX package on Roboflow "
            f"(packages: {', '.join(kinds) or 'none'}); only ONNX runs here"
        )
    # fp32 first: it runs everywhere; fp16 after it.
    order = {"fp32": 0, "fp16": 1}
    onnx.sort(key=lambda p: order.get(str(p["packageManifest"].get("quantization")), 2))
    chosen = onnx[0]
    files = []
    for f in chosen.get("packageFiles") or []:
        handle, url, md5 = f.get("fileHandle"), f.get("downloadUrl"), f.get("md5Hash")
        if not (isinstance(handle, str) and handle and "/" not in handle and ".." not in handle):
            raise HubError(f"model {model_id!r}: package file name {handle!r} is not allowed")
        if not (isinstance(url, str) and isinstance(md5, str) and md5):
            raise HubIntegrityError(f"model {model_id!r}: file {handle!r} comes without an MD5")
        files.append(PackageFile(handle, url, md5))
    # Package-level recommendations replace the model-level ones (not merged), as Roboflow does.
    rec = chosen.get("recommendedParameters")
    recommended = _snake(rec if rec is not None else metadata.get("recommendedParameters"))
    return HostedPackage(
        model_id=model_id,
        canonical_id=str(metadata.get("modelId") or model_id),
        architecture=metadata.get("modelArchitecture"),
        package_id=str(chosen.get("packageId") or ""),
        files=tuple(files),
        recommended=recommended,
        manifest=dict(chosen["packageManifest"]),
    )
