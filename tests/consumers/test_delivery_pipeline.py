"""Remote sinks end to end through Pipeline: real decoding, a real network, real far ends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stream_pipeline.buffer import DropPolicy
from stream_pipeline.consumers import JsonlSink
from stream_pipeline.consumers.mqtt import MqttSink
from stream_pipeline.consumers.webhook import WebhookSink
from stream_pipeline.model import SegmentationModel
from stream_pipeline.pipeline import Pipeline, PipelineConfig
from stream_pipeline.retry import ReconnectPolicy
from stream_pipeline.sources import SourceSpec
from tests.support.mosquitto import Broker, Subscriber, mosquitto
from tests.support.webhook import Receiver, webhook_receiver

__all__ = ["mosquitto", "webhook_receiver"]

pytestmark = pytest.mark.timeout(60)
FAST = ReconnectPolicy(initial_delay=0.1, max_delay=0.5)


async def test_every_frame_reaches_webhook_and_mqtt_as_in_the_jsonl(
    tmp_path: Path,
    tiny_model: SegmentationModel,
    webhook_receiver: Receiver,
    mosquitto: Broker,
) -> None:
    webhook_receiver.script = [(503, {})] * 3  # the first answers fail: the run must not wait
    sub = Subscriber(mosquitto, "p/#")
    spec = SourceSpec(
        "synthetic://street?fps=30&frames=45&realtime=1&width=64&height=48",
        id="cam",
        buffer_policy=DropPolicy.BLOCK,
    )
    url = webhook_receiver.url.replace("http://", "http://u:secretpw@")
    hook = WebhookSink(url, tmp_path / "hook", max_batch=8, reconnect=FAST, drain_timeout=20)
    mq = MqttSink(mosquitto.url + "/p/{source}", tmp_path / "mq", reconnect=FAST)
    jsonl = JsonlSink(tmp_path / "pred.jsonl", with_masks=False)
    cfg = PipelineConfig(sources=(spec,), device="cpu")
    try:
        async with Pipeline(cfg, [jsonl, hook, mq], model=tiny_model) as p:
            await p.run()
        items = sub.wait_for(45)
    finally:
        sub.close()
    written = [
        json.loads(line)["inference_id"]
        for line in (tmp_path / "pred.jsonl").read_text().splitlines()
    ]
    assert len(written) == 45
    assert [i["inference_id"] for i in webhook_receiver.accepted()] == written
    assert [i["inference_id"] for i in items] == written
    sinks = {s.type: s for s in p.status().sinks}
    assert sinks["webhook"].delivered == 45 and sinks["webhook"].pending == 0
    assert sinks["webhook"].reconnects > 0 and sinks["webhook"].delivery == "spooled"
    assert sinks["mqtt"].delivered == 45 and sinks["mqtt"].dropped == 0
    assert "secretpw" not in repr(p.status())
