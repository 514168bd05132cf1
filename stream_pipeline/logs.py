"""Log records that say which job and source they are about, as text or one JSON object a line.

The ids live in :mod:`contextvars`: the supervisor runs each job's task in a context holding the
job id (:func:`job_context`), and a source's thread or task adds its source id
(:func:`carry_context`, :func:`set_ids`). Threads start with an empty context, so whatever starts
a thread for a job wraps its target in :func:`carry_context`. :class:`ContextFilter` copies the ids
onto every record a handler emits; both formatters redact credentials in URLs
(``rtsp://user:***@host``) from the whole line, tracebacks included, whatever logged it.

``configure("json")`` is what ``stream-pipeline serve --log-format json`` does::

    {"ts": "2026-12-02T06:00:00.123Z", "level": "WARNING", "logger": "stream_pipeline…",
     "message": "…", "job": "3f9c1a0b", "source": "cam-1"}
"""

from __future__ import annotations

import contextvars
import datetime as dt
import json
import logging
import re
import sys
from collections.abc import Callable
from typing import IO, Literal, ParamSpec, TypeVar

__all__ = [
    "LOG_FORMATS",
    "ContextFilter",
    "JsonFormatter",
    "LogFormat",
    "TextFormatter",
    "carry_context",
    "configure",
    "current_job",
    "job_context",
    "make_handler",
    "redact_credentials",
    "set_ids",
]

LOG_FORMATS = ("text", "json")
LogFormat = Literal["text", "json"]

_JOB: contextvars.ContextVar[str | None] = contextvars.ContextVar("sp_log_job", default=None)
_SOURCE: contextvars.ContextVar[str | None] = contextvars.ContextVar("sp_log_source", default=None)

# scheme://user:password@ → scheme://user:***@ (the password may hold "@"; never "/" or a space).
_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@]*:)[^\s/]*@")

P = ParamSpec("P")
R = TypeVar("R")


def redact_credentials(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL in it replaced."""
    return _CREDENTIALS.sub(r"\g<head>***@", text)


def set_ids(job: str | None = None, source: str | None = None) -> None:
    """Set the job and/or source id of the current context (a thread's or a task's own)."""
    if job is not None:
        _JOB.set(job)
    if source is not None:
        _SOURCE.set(source)


def current_job() -> str | None:
    """The job id of the current context, if any."""
    return _JOB.get()


def job_context(job: str) -> contextvars.Context:
    """A copy of the current context with ``job`` as its job id: ``create_task(…, context=…)``."""
    context = contextvars.copy_context()
    context.run(set_ids, job)
    return context


def carry_context(
    fn: Callable[P, R], job: str | None = None, source: str | None = None
) -> Callable[P, R]:
    """``fn`` to run in another thread in a copy of the caller's context (so its log records
    carry the caller's job id), with ``job`` (only where the caller has none) and ``source`` set.
    Each call of the result enters the copy: call it from one thread at a time."""
    context = contextvars.copy_context()

    def in_context(*args: P.args, **kwargs: P.kwargs) -> R:
        def run() -> R:
            set_ids(None if _JOB.get() else job, source)
            return fn(*args, **kwargs)

        return context.run(run)

    return in_context


class ContextFilter(logging.Filter):
    """Puts ``job`` and ``source`` (or ``None``) on every record; attach it to the handler, so
    records of every logger that reach it get them."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Add the ids of the context the record was made in (never drops a record)."""
        if getattr(record, "job", None) is None:
            record.job = _JOB.get()
        if getattr(record, "source", None) is None:
            record.source = _SOURCE.get()
        return True


class TextFormatter(logging.Formatter):
    """``WARNING stream_pipeline.sources.av_source job=3f9c1a0b source=cam-1: message``; the ids
    that are not set are left out."""

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s%(ids)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """The line, credentials redacted."""
        ids = ""
        for key in ("job", "source"):
            value = getattr(record, key, None)
            if value is not None:
                ids += f" {key}={value}"
        record.ids = ids
        return redact_credentials(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, ``job``,
    ``source`` and, where there is one, ``exc`` (the traceback); credentials redacted."""

    def format(self, record: logging.LogRecord) -> str:
        """The record as one line of JSON."""
        ts = dt.datetime.fromtimestamp(record.created, dt.UTC)
        entry: dict[str, object] = {
            "ts": ts.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": redact_credentials(record.getMessage()),
            "job": getattr(record, "job", None),
            "source": getattr(record, "source", None),
        }
        if record.exc_info:
            record.exc_text = record.exc_text or self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = redact_credentials(record.exc_text)
        if record.stack_info:
            entry["stack"] = redact_credentials(self.formatStack(record.stack_info))
        return json.dumps(entry, ensure_ascii=False)


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure` installs (and replaces on a second call); with no stream
    given it writes to whatever ``sys.stderr`` is at the time of each record."""

    def __init__(self, stream: IO[str] | None) -> None:
        super().__init__(stream)
        self._follow = stream is None

    def flush(self) -> None:
        """Flush the stream written to."""
        if self._follow:
            self.stream = sys.stderr
        super().flush()

    def emit(self, record: logging.LogRecord) -> None:
        """Write the record to the stream (stderr now, when following it)."""
        if self._follow:
            self.stream = sys.stderr
        super().emit(record)


def make_handler(log_format: LogFormat = "text", stream: IO[str] | None = None) -> logging.Handler:
    """A handler writing ``log_format`` lines with the job and source ids to ``stream`` (default:
    whatever ``sys.stderr`` is when a record comes)."""
    if log_format not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, got {log_format!r}")
    handler = _Handler(stream)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    return handler


def configure(log_format: LogFormat = "text", level: int = logging.WARNING) -> bool:
    """Log every record of ``level`` and above to stderr in ``log_format``, with the job and
    source ids: one handler on the root logger (a second call replaces it). Like
    ``logging.basicConfig``, it leaves alone a root logger that already has handlers of someone
    else's (an application embedding the service, a test runner); False then."""
    handler = make_handler(log_format)
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _Handler)]
    if len(ours) != len(root.handlers):
        return False
    for old in ours:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level)
    return True
