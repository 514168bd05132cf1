"""Credentials never leave the process: URLs and error texts are redacted before they are shown."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_text", "redact_url"]


def redact_url(url: str) -> str:
    """``rtsp://user:secret@host/x`` → ``rtsp://user:***@host/x``; other strings unchanged."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None and "@" not in parts.netloc:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{user}:***@{host}" if parts.password is not None else f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_text(text: str, url: str) -> str:
    """``text`` with ``url`` and its password (raw and percent-encoded forms) replaced."""
    out = text.replace(url, redact_url(url))
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return out
    if password:
        raw_netloc_password = parts.netloc.rsplit("@", 1)[0].partition(":")[2]
        for secret in {password, raw_netloc_password}:
            if secret:
                out = out.replace(secret, "***")
    return out
