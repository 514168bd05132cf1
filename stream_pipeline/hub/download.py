"""Downloading one package file: HEAD, then ranged GETs for large files or one streaming GET.

The MD5 is checked while streaming (or over the assembled file for parallel ranges). Bytes go to a
``.part`` file beside the target and are moved into place with ``os.replace`` only once the MD5
matches, so a reader never sees a partial file; a mismatch deletes the part. A ``.part`` left by a
killed run is continued with a ``Range`` request when the server accepts ranges. Signed URLs need
no auth header, so none is sent.
"""

from __future__ import annotations

import base64
import hashlib
import os
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from stream_pipeline.errors import HubError, HubIntegrityError, HubUnavailableError
from stream_pipeline.hub.client import (
    USER_AGENT,
    HubSettings,
    PackageFile,
    http_error,
    network_error,
    with_retries,
)

__all__ = ["download_file", "part_path"]


def part_path(dest: Path, md5: str) -> Path:
    """Where ``dest``'s bytes accumulate until its MD5 is proven."""
    return dest.with_name(f".{dest.name}.{md5[:16]}.part")


def _expected_hex(md5: str) -> str:
    # Roboflow sends hex; a base64 digest (as in x-goog-hash) is accepted too.
    if len(md5) == 24 and md5.endswith("=="):
        return base64.b64decode(md5).hex()
    return md5.lower()


def _open(
    url: str, settings: HubSettings, model_id: str, method: str = "GET", **headers: str
) -> Any:
    host = urllib.parse.urlsplit(url).netloc
    request = urllib.request.Request(
        url, method=method, headers={"User-Agent": USER_AGENT, **headers}
    )
    try:
        return urllib.request.urlopen(request, timeout=settings.timeout_s)
    except urllib.error.HTTPError as exc:
        raise http_error(exc, model_id, "downloading a file", None) from None
    except (urllib.error.URLError, OSError) as exc:
        raise network_error(exc, host, f"downloading a file of {model_id!r}") from None


def _head(url: str, settings: HubSettings, model_id: str) -> tuple[int | None, bool]:
    """(size, accepts ranges); (None, False) when the server does not answer HEAD."""
    try:
        with _open(url, settings, model_id, method="HEAD") as response:
            length = response.headers.get("Content-Length")
            ranges = response.headers.get("Accept-Ranges", "").lower() == "bytes"
            return (int(length) if length and length.isdigit() else None), ranges
    except HubError as exc:
        if isinstance(exc, HubUnavailableError):
            raise
        return None, False


def _stream(
    url: str, part: Path, settings: HubSettings, model_id: str, size: int | None, ranges: bool
) -> hashlib._Hash:
    """Append the rest of the file to ``part`` (resuming where it stops); the MD5 of all of it."""
    digest = hashlib.md5()
    have = part.stat().st_size if part.exists() and ranges else 0
    if size is not None and have > size:
        have = 0
    if have:
        with part.open("rb") as done:
            for block in iter(lambda: done.read(settings.chunk), b""):
                digest.update(block)
        if have == size:
            return digest
    headers = {"Range": f"bytes={have}-"} if have else {}
    with _open(url, settings, model_id, **headers) as response:
        if have and response.status != 206:  # the server ignored the range: start over
            digest, have = hashlib.md5(), 0
        # Unbuffered, and read1 (what has arrived): the part on disk is never far behind the
        # socket, so a killed run leaves as much as it received for the next one to resume.
        with part.open("ab" if have else "wb", buffering=0) as out:
            try:
                for block in iter(lambda: response.read1(settings.chunk), b""):
                    digest.update(block)
                    out.write(block)
            except OSError as exc:  # connection dropped mid-body: the part stays for a resume
                raise network_error(exc, urllib.parse.urlsplit(url).netloc, "downloading") from None
    return digest


def _ranged(url: str, part: Path, size: int, settings: HubSettings, model_id: str) -> None:
    """Fetch ``size`` bytes in parallel ``Range`` GETs, each written at its offset."""
    step = -(-size // settings.range_parts)
    with part.open("wb") as out:
        out.truncate(size)
    fd = os.open(part, os.O_WRONLY)
    try:

        def fetch(start: int) -> None:
            end = min(size, start + step) - 1
            with _open(url, settings, model_id, Range=f"bytes={start}-{end}") as response:
                if response.status != 206:
                    raise HubUnavailableError(f"the file server ignored a range request ({url})")
                offset = start
                for block in iter(lambda: response.read1(settings.chunk), b""):
                    os.pwrite(fd, block, offset)
                    offset += len(block)
                if offset != end + 1:
                    raise HubUnavailableError("a ranged download ended early")

        with ThreadPoolExecutor(max_workers=settings.range_parts) as pool:
            list(pool.map(fetch, range(0, size, step)))
    finally:
        os.close(fd)


def _md5_of(path: Path, chunk: int) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def download_file(
    file: PackageFile, dest: Path, model_id: str, settings: HubSettings | None = None
) -> None:
    """Download ``file`` to ``dest`` (MD5-checked, atomic, resumable, retried)."""
    settings = settings or HubSettings()
    part = part_path(dest, file.md5)
    want = _expected_hex(file.md5)

    def attempt() -> str:
        size, ranges = _head(file.url, settings, model_id)
        if size is not None and ranges and size >= settings.ranged_threshold:
            _ranged(file.url, part, size, settings, model_id)
            return _md5_of(part, settings.chunk)
        return _stream(file.url, part, settings, model_id, size, ranges).hexdigest()

    got = with_retries(settings, attempt)
    if got != want:
        part.unlink(missing_ok=True)
        raise HubIntegrityError(
            f"{file.handle} of model {model_id!r} does not match its MD5 (expected {want}, "
            f"got {got}): the download was discarded, nothing was cached"
        )
    os.replace(part, dest)
