"""A small typed client of the jobs API (docs/jobs.md), on httpx.

    from stream_pipeline.jobs.client import JobsClient

    with JobsClient("http://127.0.0.1:8080") as jobs:       # token: $STREAM_PIPELINE_TOKEN
        status = jobs.create({"name": "clip", "model": "default", "sources": [...]})
        for prediction in jobs.results(status.id):           # until the job ends
            print(prediction["frame_id"])

Every method returns the API's own pydantic models (:class:`JobStatus`). Every failure is a
:class:`JobsClientError` whose one-line message is the server's (a refused spec names the field)
with the HTTP status, or says why the service could not be reached. Specs given as plain
mappings are sent as they are: the service validates them, so a client older than the service
does not refuse the fields it has learnt since. The token is sent as ``Authorization: Bearer``
and appears in no message.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
from collections.abc import Generator, Iterable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from stream_pipeline.errors import StreamPipelineError
from stream_pipeline.jobs.spec import JobSpec, JobStatus, SourceSpecModel
from stream_pipeline.redact import redact_url

__all__ = ["DEFAULT_SERVER", "JobsClient", "JobsClientError", "sse_data"]

DEFAULT_SERVER = "http://127.0.0.1:8080"  # where `stream-pipeline serve` listens by default
SERVER_ENV = "STREAM_PIPELINE_SERVER"
TOKEN_ENV = "STREAM_PIPELINE_TOKEN"


class JobsClientError(StreamPipelineError):
    """A request to the jobs service failed: ``status`` is the HTTP status (``None`` when no
    answer came: unreachable, timed out, the stream broke)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class JobsClient:
    """A synchronous client of one jobs service.

    ``base_url``: ``http(s)://host:port`` (default ``$STREAM_PIPELINE_SERVER``, else
    :data:`DEFAULT_SERVER`); ``token``: the service's bearer token (default
    ``$STREAM_PIPELINE_TOKEN``; none on a loopback service without one); ``timeout``: seconds
    for each request (a results stream waits for its next event as long as it takes).
    """

    def __init__(
        self,
        base_url: str | None = None,
        token: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        url = (base_url or os.environ.get(SERVER_ENV) or DEFAULT_SERVER).rstrip("/")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise JobsClientError(f"the jobs server must be http(s)://host[:port], got {url!r}")
        if timeout <= 0:
            raise JobsClientError(f"timeout must be > 0 seconds, got {timeout}")
        self.base_url = url
        self.timeout = timeout
        token = token if token is not None else os.environ.get(TOKEN_ENV) or None
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)

    def __enter__(self) -> JobsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections (safe to call twice)."""
        self._http.close()

    # -- jobs ------------------------------------------------------------------------------

    def create(self, spec: JobSpec | Mapping[str, Any]) -> JobStatus:
        """``POST /jobs``: create a job and start it; its status (state ``queued`` or later)."""
        return JobStatus.model_validate(self._json("POST", "/jobs", _body(spec)))

    def list(self) -> builtins.list[JobStatus]:
        """``GET /jobs``: every job, oldest first."""
        return [JobStatus.model_validate(j) for j in self._json("GET", "/jobs")]

    def show(self, job_id: str) -> JobStatus:
        """``GET /jobs/{id}``: one job."""
        return self._status("GET", _job(job_id))

    def pause(self, job_id: str) -> JobStatus:
        """Pause the job: its sources stop, its sinks stay open."""
        return self._status("POST", _job(job_id) + "/pause")

    def resume(self, job_id: str) -> JobStatus:
        """Resume a paused job."""
        return self._status("POST", _job(job_id) + "/resume")

    def stop(self, job_id: str) -> JobStatus:
        """``DELETE /jobs/{id}``: stop the job; its sinks are flushed and closed on return."""
        return self._status("DELETE", _job(job_id))

    def add_source(self, job_id: str, source: SourceSpecModel | Mapping[str, Any]) -> JobStatus:
        """Hot-add a source (``{"id", "url", …}``) to a running job."""
        return self._status("POST", _job(job_id) + "/sources", _body(source))

    def remove_source(self, job_id: str, source_id: str) -> JobStatus:
        """Hot-remove a source from a job (its buffered frames finish)."""
        return self._status("DELETE", f"{_job(job_id)}/sources/{quote(source_id, safe='')}")

    def results(self, job_id: str, *, follow: bool = True) -> Generator[dict[str, Any], None, None]:
        """The job's predictions from now on, one dict per frame (the JSON of docs/outputs.md),
        from its server-sent events. ``follow``: until the job ends (else only the next one).

        A reader slower than the job gets the newest prediction, never a growing queue. Closing
        the iterator (or leaving a ``for`` loop) closes the stream.
        """
        path = _job(job_id) + "/results"
        # No read timeout: a paused job, or a camera that is down, sends nothing for a while.
        timeout = httpx.Timeout(self.timeout, read=None)
        with self._errors("GET", path), self._http.stream("GET", path, timeout=timeout) as resp:
            if resp.status_code >= 400:
                resp.read()
                raise self._refused("GET", path, resp)
            try:
                for data in sse_data(resp.iter_lines()):
                    yield json.loads(data)
                    if not follow:
                        return
            except httpx.RemoteProtocolError:
                raise JobsClientError(
                    f"the service at {self._where()} closed the results of job {job_id} "
                    "before the job ended (is it stopping?)"
                ) from None

    # -- plumbing --------------------------------------------------------------------------

    def _status(self, method: str, path: str, body: Any = None) -> JobStatus:
        return JobStatus.model_validate(self._json(method, path, body))

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        with self._errors(method, path):
            resp = self._http.request(method, path, json=body)
        if resp.status_code >= 400:
            raise self._refused(method, path, resp)
        try:
            return resp.json()
        except ValueError:
            raise JobsClientError(
                f"{self._where()} answered {method} {path} with no JSON "
                f"(HTTP {resp.status_code}): is it a stream-pipeline service?",
                resp.status_code,
            ) from None

    def _where(self) -> str:
        return redact_url(self.base_url)

    @contextlib.contextmanager
    def _errors(self, method: str, path: str) -> Iterator[None]:
        """httpx's transport errors as one line each, naming the service."""
        where = self._where()
        try:
            yield
        except httpx.ConnectError as exc:
            raise JobsClientError(
                f"cannot reach the jobs service at {where}: {_reason(exc)} "
                "(is `stream-pipeline serve --state-dir …` running there?)"
            ) from None
        except httpx.TimeoutException:
            raise JobsClientError(
                f"no answer from {where} to {method} {path} within {self.timeout:g} s"
            ) from None
        except httpx.HTTPError as exc:  # the connection broke mid-answer, a bad redirect, …
            raise JobsClientError(f"{method} {path} at {where} failed: {_reason(exc)}") from None

    def _refused(self, method: str, path: str, resp: httpx.Response) -> JobsClientError:
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = None
        message = None
        if isinstance(body, dict):
            message = body.get("error") or body.get("detail")
        if status == 404 and message == "Not Found":  # the framework's: no such route
            message = f"no jobs API at {self._where()} (serve it with --state-dir)"
        text = " ".join(str(message or resp.reason_phrase or "refused").split())
        if status == 401:
            text += f"; set ${TOKEN_ENV} to the service's token"
        return JobsClientError(f"{text} (HTTP {status} from {method} {path})", status)


def sse_data(lines: Iterable[str]) -> Iterator[str]:
    """The data of each ``message`` event of a server-sent event stream, given its lines.

    As the HTML standard has it: an event ends at a blank line; its ``data:`` lines are joined
    with newlines (one space after the colon dropped); ``:`` lines are comments; an event of
    another ``event:`` type, or without data, is skipped.
    """
    data: builtins.list[str] = []
    kind = "message"
    for line in lines:
        if not line:
            if data and kind == "message":
                yield "\n".join(data)
            data, kind = [], "message"
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            data.append(value)
        elif name == "event":
            kind = value or "message"
    # A stream that ends without the final blank line drops that event, as browsers do.


def _body(model: JobSpec | SourceSpecModel | Mapping[str, Any]) -> Any:
    if isinstance(model, JobSpec | SourceSpecModel):
        return model.model_dump(mode="json", exclude_unset=True)
    return dict(model)


def _job(job_id: str) -> str:
    return "/jobs/" + quote(job_id, safe="")


def _reason(exc: httpx.HTTPError) -> str:
    # "[Errno 111] Connection refused" → "connection refused"; httpx's own texts as they are.
    text = " ".join(str(exc).split()) or type(exc).__name__
    if text.startswith("[Errno"):
        text = text.partition("] ")[2] or text
    return text[:1].lower() + text[1:]
