"""Webhook sink: POSTs batches of prediction objects as a JSON list, at least once.

Each request carries ``Idempotency-Key`` (derived from the batch's ``inference_id``\\ s, so a
retried batch keeps its key) and, with a ``secret``, ``X-Signature-256: sha256=<hex HMAC of the
body>`` as GitHub webhooks do. Credentials in the URL become basic auth and never appear in
status, logs or errors. Connection errors, timeouts, 5xx, 408 and 429 are retried with backoff
and jitter (``Retry-After`` honoured); any other 4xx drops the batch, counted, with the response
in the sink's last error. One batch is in flight at a time, so order is kept.

The sender is an asyncio loop with one ``aiohttp`` session in the sink's own thread.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import os
import time
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from stream_pipeline.consumers.remote import DEFAULT_POLICY, RemoteSink
from stream_pipeline.errors import ConfigError
from stream_pipeline.retry import ReconnectPolicy

__all__ = ["WebhookSink", "signature"]

RETRY_STATUSES = frozenset({408, 429})
MAX_RETRY_AFTER = 600.0  # a far end asking for longer is asking for too much; retry sooner


def signature(secret: str | bytes, body: bytes) -> str:
    """The ``X-Signature-256`` value for ``body``: ``sha256=<hex HMAC-SHA256>``."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class WebhookSink(RemoteSink):
    """POST results to ``url`` (http or https) in batches of up to ``max_batch`` results.

    A batch is sent when it is full or ``max_delay_ms`` after its first result. ``timeout`` bounds
    each request. See :class:`~stream_pipeline.consumers.remote.RemoteSink` for the spool and
    ``drain_timeout``.
    """

    name = "webhook"

    def __init__(
        self,
        url: str,
        spool_dir: str | os.PathLike[str],
        secret: str | bytes | None = None,
        max_batch: int = 16,
        max_delay_ms: float = 200.0,
        timeout: float = 10.0,
        spool_bytes: int = 256 * 1024 * 1024,
        drain_timeout: float = 60.0,
        payload: str = "full",
        with_masks: bool = True,
        reconnect: ReconnectPolicy = DEFAULT_POLICY,
        source_id: str | None = None,
    ) -> None:
        super().__init__(
            url, spool_dir, spool_bytes, drain_timeout, payload, with_masks, reconnect, source_id
        )
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ConfigError(f"webhook URL {self.url}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"webhook URL must be http(s)://host/..., got {self.url!r}")
        if max_batch < 1:
            raise ConfigError(f"webhook max_batch must be >= 1, got {max_batch}")
        if not max_delay_ms >= 0 or not timeout > 0:
            raise ConfigError("webhook max_delay_ms must be >= 0 and timeout > 0")
        host = parts.netloc.rsplit("@", 1)[-1]
        self._target = urlunsplit((parts.scheme, host, parts.path or "/", parts.query, ""))
        self._headers: dict[str, str] = {"Content-Type": "application/json"}
        if parts.username is not None:
            userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            self._headers["Authorization"] = "Basic " + base64.b64encode(userinfo.encode()).decode()
        self.secret = secret
        self.max_batch = max_batch
        self.max_delay = max_delay_ms / 1000.0
        self.timeout = timeout
        self._loop: asyncio.AbstractEventLoop | None = None
        self._main: asyncio.Task[None] | None = None

    def _serve(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(self._run())

    def _abort(self) -> None:
        loop, main = self._loop, self._main
        if loop is not None and main is not None:
            with contextlib.suppress(RuntimeError):  # the loop just ended by itself
                loop.call_soon_threadsafe(main.cancel)

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._main = asyncio.current_task()
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self.stats.set_state("open")
            while not self._finished():
                batch = await asyncio.to_thread(self._next_batch)
                if batch:
                    await self._deliver(session, batch)
                await asyncio.to_thread(self._maybe_sync)

    def _next_batch(self) -> list[tuple[int, bytes]]:
        """Up to ``max_batch`` entries: the first waited for briefly, the rest up to max_delay."""
        if not self.spool.wait(0.1):
            return []
        batch = self.spool.take(self.max_batch)
        until = time.monotonic() + (0.0 if self._closing.is_set() else self.max_delay)
        while len(batch) < self.max_batch and (left := until - time.monotonic()) > 0:
            if self.spool.wait(left):
                batch += self.spool.take(self.max_batch - len(batch))
        return batch

    async def _deliver(
        self, session: aiohttp.ClientSession, batch: list[tuple[int, bytes]]
    ) -> None:
        seqs = [seq for seq, _ in batch]
        keys, bodies = [], []
        for _, payload in batch:
            key, _topic, body = self._fields(payload)
            keys.append(key)
            bodies.append(body)
        data = b"[" + b",".join(bodies) + b"]"
        headers = {
            **self._headers,
            "Idempotency-Key": hashlib.sha256("\n".join(keys).encode()).hexdigest()[:32],
        }
        if self.secret is not None:
            headers["X-Signature-256"] = signature(self.secret, data)
        attempt = 0
        while True:
            wait: float | None
            try:
                async with session.post(self._target, data=data, headers=headers) as resp:
                    text = (await resp.text(errors="replace"))[:200]
                    status = resp.status
                    wait = _retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                status, text, wait = 0, f"{type(exc).__name__}: {exc}", None
            if 200 <= status < 300:
                self._delivered(seqs)
                self.stats.set_state("open")
                return
            if 400 <= status < 500 and status not in RETRY_STATUSES:
                self._rejected(seqs, f"HTTP {status} (not retried): {text}")
                return
            attempt += 1
            self._report(f"HTTP {status}: {text}" if status else text)
            self.stats.set_state("retrying")
            self.stats.count_reconnect()
            delay = self.reconnect.delay(attempt) if wait is None else min(wait, MAX_RETRY_AFTER)
            if self._closing.is_set() and delay >= self._remaining():
                self._rewind()  # out of drain time: these stay in the spool
                self._drain_deadline = time.monotonic()
                return
            await asyncio.sleep(delay)
