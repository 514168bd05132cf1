"""The webhook sink against a real HTTP server on loopback: retries, auth, signature, bounds."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import socket
import time
import tracemalloc
from pathlib import Path

import pytest

from stream_pipeline.consumers.webhook import WebhookSink
from stream_pipeline.model import SegmentationModel
from stream_pipeline.retry import ReconnectPolicy
from tests.support.results import context_for, real_results
from tests.support.webhook import Receiver, webhook_receiver

__all__ = ["webhook_receiver"]

pytestmark = pytest.mark.timeout(60)
FAST = ReconnectPolicy(initial_delay=0.05, max_delay=0.3)


def _with_credentials(url: str, user: str, password: str) -> str:
    return url.replace("http://", f"http://{user}:{password}@")


def test_every_frame_arrives_after_503s_with_basic_auth_and_a_valid_signature(
    tmp_path: Path, tiny_model: SegmentationModel, webhook_receiver: Receiver
) -> None:
    sink = WebhookSink(
        _with_credentials(webhook_receiver.url, "cam", "s3cr%40t"),
        tmp_path / "spool",
        secret="topsecret",
        max_batch=4,
        max_delay_ms=50,
        reconnect=FAST,
        drain_timeout=20,
    )
    results = real_results(tiny_model, range(30))
    sink.open(context_for(tiny_model))
    webhook_receiver.down_until = time.monotonic() + 1.0
    for r in results:
        sink.write(r)
        time.sleep(0.03)
    sink.close()
    items = webhook_receiver.accepted()
    ids = [i["inference_id"] for i in items]
    assert set(ids) == {r.inference_id for r in results}
    assert [i["frame_id"] for i in items] == sorted(i["frame_id"] for i in items)  # order kept
    assert 503 in webhook_receiver.answered
    expected_auth = "Basic " + base64.b64encode(b"cam:s3cr@t").decode()
    for req in webhook_receiver.requests:
        assert req.headers["Authorization"] == expected_auth
        mac = hmac.new(b"topsecret", req.body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(req.headers["X-Signature-256"], "sha256=" + mac)
        assert len(req.headers["Idempotency-Key"]) == 32
        assert len(req.items) <= 4
    # A retried batch keeps its idempotency key.
    keys = [r.headers["Idempotency-Key"] for r in webhook_receiver.requests]
    assert len(set(keys)) < len(keys)
    snap = sink.stats.snapshot()
    assert (snap.delivered, snap.pending, snap.dropped) == (30, 0, 0)
    assert snap.reconnects > 0 and "503" in (snap.last_error or "")
    assert "s3cr" not in sink.url and "s3cr" not in str(snap)


def test_429_retry_after_is_honoured_and_400_is_not_retried(
    tmp_path: Path, tiny_model: SegmentationModel, webhook_receiver: Receiver
) -> None:
    webhook_receiver.script = [(429, {"Retry-After": "1"}), (200, {}), (400, {})]
    sink = WebhookSink(webhook_receiver.url, tmp_path, max_batch=1, max_delay_ms=0, reconnect=FAST)
    first, second, third = real_results(tiny_model, range(3))
    sink.open(context_for(tiny_model))
    sink.write(first)
    deadline = time.monotonic() + 10
    while sink.stats.delivered < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    sink.write(second)  # answered 400: dropped, reported, never sent again
    while sink.stats.dropped < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    sink.write(third)
    sink.close()
    reqs = webhook_receiver.requests
    assert webhook_receiver.answered == [429, 200, 400, 200]
    assert reqs[1].at - reqs[0].at >= 0.95  # waited as told, not the 50 ms backoff
    assert [r.items[0]["inference_id"] for r in reqs] == [
        first.inference_id,
        first.inference_id,
        second.inference_id,
        third.inference_id,
    ]
    snap = sink.stats.snapshot()
    assert (snap.delivered, snap.dropped, snap.pending) == (2, 1, 0)
    assert snap.last_error is not None and "HTTP 400" in snap.last_error
    assert "answer 400" in snap.last_error  # the response is reported


def test_full_spool_keeps_memory_flat_drops_oldest_and_the_newest_arrive(
    tmp_path: Path, tiny_model: SegmentationModel, webhook_receiver: Receiver
) -> None:
    webhook_receiver.down_until = time.monotonic() + 3600
    bound = 64 * 1024
    sink = WebhookSink(
        webhook_receiver.url, tmp_path, max_batch=8, reconnect=FAST, spool_bytes=bound
    )
    results = real_results(tiny_model, range(40))
    sink.open(context_for(tiny_model))
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    for _ in range(15):  # 600 results through a spool that holds a few dozen
        for r in results:
            sink.write(r)
        assert sink.spool.size <= bound
    grown = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert grown < 512 * 1024, f"memory grew by {grown} bytes"
    held = sink.stats.snapshot()
    assert held.dropped > 400 and held.pending < 100
    webhook_receiver.down_until = 0.0
    sink.close()
    snap = sink.stats.snapshot()
    assert snap.pending == 0 and snap.delivered + snap.dropped == 600
    items = webhook_receiver.accepted()
    # The newest arrive: the last result written is among them, and nothing older than what the
    # spool could hold.
    assert items[-1]["frame_id"] == 39 and len(items) == snap.delivered


def test_no_password_in_status_errors_or_logs(
    tmp_path: Path, tiny_model: SegmentationModel, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://user:hunter2@127.0.0.1:{port}/x"
    caplog.set_level(logging.DEBUG)
    sink = WebhookSink(url, tmp_path, reconnect=FAST, drain_timeout=0.5)
    sink.open(context_for(tiny_model))
    sink.write(real_results(tiny_model, range(1))[0])
    time.sleep(0.5)
    sink.close()
    snap = sink.stats.snapshot()
    assert snap.reconnects > 0 and snap.last_error and snap.pending == 1
    text = " ".join([str(snap), sink.url, caplog.text, *(p.name for p in tmp_path.rglob("*"))])
    assert "hunter2" not in text
    assert "user:***@" in sink.url


def test_what_a_closed_sink_kept_is_sent_by_the_next_start(
    tmp_path: Path, tiny_model: SegmentationModel, webhook_receiver: Receiver
) -> None:
    webhook_receiver.down_until = time.monotonic() + 3600
    results = real_results(tiny_model, range(10))
    sink = WebhookSink(webhook_receiver.url, tmp_path, reconnect=FAST, drain_timeout=0.3)
    sink.open(context_for(tiny_model))
    for r in results:
        sink.write(r)
    sink.close()
    assert sink.stats.snapshot().pending == 10
    webhook_receiver.down_until = 0.0
    again = WebhookSink(webhook_receiver.url, tmp_path, reconnect=FAST)
    again.open(context_for(tiny_model))
    again.close()
    assert {i["inference_id"] for i in webhook_receiver.accepted()} == {
        r.inference_id for r in results
    }
    assert again.stats.snapshot().delivered == 10
