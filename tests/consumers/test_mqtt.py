"""The MQTT sink against a real mosquitto on loopback: per-frame messages, outages, summaries."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from stream_pipeline.consumers.mqtt import MqttSink
from stream_pipeline.errors import ConfigError
from stream_pipeline.model import SegmentationModel
from stream_pipeline.retry import ReconnectPolicy
from tests.support.mosquitto import Broker, Subscriber, mosquitto
from tests.support.results import context_for, real_results

__all__ = ["mosquitto"]

pytestmark = pytest.mark.timeout(60)
FAST = ReconnectPolicy(initial_delay=0.1, max_delay=0.5)


def _run_frames(sink: MqttSink, model: SegmentationModel, n: int, every: float = 0.02) -> list[str]:
    results = real_results(model, range(n))
    for r in results:
        sink.write(r)
        time.sleep(every)
    return [r.inference_id for r in results]


@pytest.mark.parametrize(("protocol", "qos"), [("3.1.1", 1), ("5", 1), ("3.1.1", 0)])
def test_one_message_per_frame_on_the_templated_topic(
    tmp_path: Path, tiny_model: SegmentationModel, mosquitto: Broker, protocol: str, qos: int
) -> None:
    sub = Subscriber(mosquitto, "jobs/#")
    try:
        sink = MqttSink(
            mosquitto.url + "/jobs/{job}/{source}/predictions",
            tmp_path / "spool",
            protocol=protocol,
            qos=qos,
            reconnect=FAST,
        )
        sink.open(context_for(tiny_model, job_id="gate"))
        ids = _run_frames(sink, tiny_model, 20, every=0)
        sink.close()
        items = sub.wait_for(20)
    finally:
        sub.close()
    assert [i["inference_id"] for i in items] == ids  # one each, in order
    assert {t for t, _ in sub.messages} == {"jobs/gate/cam-1/predictions"}
    assert all("rle_mask" in p for i in items for p in i["predictions"]["predictions"])
    snap = sink.stats.snapshot()
    assert (snap.delivered, snap.pending, snap.dropped) == (20, 0, 0)


def test_broker_restarted_mid_run_every_frame_arrives(
    tmp_path: Path, tiny_model: SegmentationModel, mosquitto: Broker
) -> None:
    sub = Subscriber(mosquitto, "t/#")
    sink = MqttSink(mosquitto.url + "/t/{source}", tmp_path / "spool", reconnect=FAST)
    sink.open(context_for(tiny_model))
    results = real_results(tiny_model, range(90))
    outage: list[int] = []

    def bounce() -> None:
        time.sleep(0.6)
        mosquitto.stop()
        time.sleep(2.0)
        mosquitto.start()

    bouncer = threading.Thread(target=bounce)
    bouncer.start()
    try:
        for r in results:
            sink.write(r)
            if mosquitto.proc is None:
                outage.append(r.frame.meta.frame_id if r.frame else -1)
            time.sleep(0.04)
        bouncer.join()
        sink.close()
        items = sub.wait_for(90)
    finally:
        bouncer.join()
        sub.close()
    counts = Counter(i["frame_id"] for i in items)
    assert set(counts) == set(range(90)), f"missing {set(range(90)) - set(counts)}"
    assert outage, "the broker was never down while frames were written"
    # Duplicates only around the outage: frames written long before it or after it came once.
    dupes = sorted(f for f, c in counts.items() if c > 1)
    window = range(outage[0] - 40, outage[-1] + 40)
    assert all(f in window for f in dupes), (
        f"duplicates {dupes} outside outage {outage[0]}..{outage[-1]}"
    )
    snap = sink.stats.snapshot()
    assert snap.reconnects >= 1 and snap.pending == 0 and snap.dropped == 0


def test_broker_down_at_start_then_up(tmp_path: Path, tiny_model: SegmentationModel) -> None:
    broker = Broker(tmp_path / "broker")
    # The subscriber's persistent session exists before the outage (and survives the broker's
    # restart), so what the sink sends the moment the broker is back is queued for it: no race
    # between the sink's reconnect and the subscriber's SUBSCRIBE.
    broker.start()
    Subscriber(broker, "late").close()
    broker.stop()  # down at the sink's start
    sink = MqttSink(broker.url + "/late", tmp_path / "spool", reconnect=FAST)
    sink.open(context_for(tiny_model))
    try:
        ids = _run_frames(sink, tiny_model, 30, every=0.02)
        snap = sink.stats.snapshot()
        assert snap.delivered == 0 and snap.pending == 30 and snap.reconnects >= 1
        assert snap.state == "reconnecting"
        broker.start()
        sub = Subscriber(broker, "late")
        try:
            sink.close()
            items = sub.wait_for(30)
        finally:
            sub.close()
    finally:
        broker.stop()
    assert [i["inference_id"] for i in items] == ids
    assert sink.stats.snapshot().delivered == 30


def test_summary_payload_and_credentials_are_redacted(
    tmp_path: Path, tiny_model: SegmentationModel, mosquitto: Broker
) -> None:
    sub = Subscriber(mosquitto, "sum")
    try:
        url = f"mqtt://someone:pa55word@127.0.0.1:{mosquitto.port}/sum"
        sink = MqttSink(url, tmp_path / "spool", payload="summary", reconnect=FAST)
        sink.open(context_for(tiny_model))
        _run_frames(sink, tiny_model, 3, every=0)
        sink.close()
        items = sub.wait_for(3)
    finally:
        sub.close()
    assert len(items) == 3
    for item in items:
        assert "predictions" not in item and item["image"] == {"width": 64, "height": 48}
        assert all(0 < c["coverage"] <= 1 and 0 <= c["confidence"] <= 1 for c in item["classes"])
        assert all(c["class"] != "background" for c in item["classes"])
    assert "pa55word" not in sink.url + str(sink.stats.snapshot())


@pytest.mark.parametrize(
    ("url", "needle"),
    [
        ("http://h/t", "mqtt\\(s\\)://"),
        ("mqtt://h", "topic"),
        ("mqtt://h/a/#", "wildcards"),
        ("mqtt://h/{camera}", "camera"),
    ],
)
def test_bad_urls_are_config_errors(tmp_path: Path, url: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        MqttSink(url, tmp_path)
