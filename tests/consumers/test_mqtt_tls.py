"""The MQTT sink over TLS (mqtts://) with a username and password, against a real mosquitto.

The broker gets a throw-away CA and a server certificate for 127.0.0.1 (openssl) and a password
file (mosquitto_passwd); anonymous clients are refused.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from stream_pipeline.consumers.mqtt import MqttSink
from stream_pipeline.model import SegmentationModel
from stream_pipeline.retry import ReconnectPolicy
from tests.support.mosquitto import Broker
from tests.support.results import context_for, real_results

pytestmark = pytest.mark.timeout(60)

USER, PASSWORD = "alice", "s3cr3t-pw"


def _certificates(folder: Path) -> None:
    def ssl_cmd(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    ssl_cmd(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "1",
        "-subj",
        "/CN=test-ca",
    )
    ssl_cmd(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    ssl_cmd("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.ext")  # fmt: skip


@pytest.fixture
def secure_broker(tmp_path: Path) -> Iterator[Broker]:
    if not (shutil.which("openssl") and shutil.which("mosquitto_passwd")):
        pytest.skip("needs openssl and mosquitto_passwd (Debian: openssl, mosquitto)")
    broker = Broker(tmp_path / "broker")
    folder = broker.directory
    _certificates(folder)
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(folder / "passwd"), USER, PASSWORD], check=True, capture_output=True)  # fmt: skip
    (folder / "passwd").chmod(0o600)
    broker.config.write_text(
        f"listener {broker.port} 127.0.0.1\n"
        f"cafile {folder / 'ca.pem'}\ncertfile {folder / 'server.pem'}\nkeyfile {folder / 'server.key'}\n"
        f"allow_anonymous false\npassword_file {folder / 'passwd'}\n"
        "persistence false\nlog_dest stderr\nuser root\n"
    )
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _subscribe(broker: Broker, topic: str, got: list[dict[str, Any]]) -> mqtt.Client:
    ready = threading.Event()
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tls-subscriber")
    client.username_pw_set(USER, PASSWORD)
    client.tls_set(ca_certs=str(broker.directory / "ca.pem"), tls_version=ssl.PROTOCOL_TLS_CLIENT)

    def on_connect(c: mqtt.Client, *_: Any) -> None:
        c.subscribe(topic, qos=1)
        ready.set()

    client.on_connect = on_connect
    client.on_message = lambda c, u, msg: got.append(json.loads(msg.payload))
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    assert ready.wait(10), "the subscriber could not connect over TLS"
    time.sleep(0.2)  # the SUBACK
    return client


def test_tls_with_credentials_delivers_every_frame(
    tmp_path: Path, tiny_model: SegmentationModel, secure_broker: Broker
) -> None:
    got: list[dict[str, Any]] = []
    sub = _subscribe(secure_broker, "secure/#", got)
    try:
        url = f"mqtts://{USER}:{PASSWORD}@127.0.0.1:{secure_broker.port}/secure/{{source}}"
        sink = MqttSink(url, tmp_path / "spool", ca_file=str(secure_broker.directory / "ca.pem"))
        sink.open(context_for(tiny_model))
        results = real_results(tiny_model, range(10))
        for r in results:
            sink.write(r)
        sink.close()
        deadline = time.monotonic() + 15
        while len(got) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sub.disconnect()
        sub.loop_stop()
    assert [g["inference_id"] for g in got] == [r.inference_id for r in results]
    snap = sink.stats.snapshot()
    assert (snap.delivered, snap.pending, snap.dropped) == (10, 0, 0)
    assert PASSWORD not in sink.url + str(snap)


def test_wrong_password_is_reported_and_kept_in_the_spool(
    tmp_path: Path, tiny_model: SegmentationModel, secure_broker: Broker
) -> None:
    url = f"mqtts://{USER}:not-{PASSWORD}@127.0.0.1:{secure_broker.port}/secure/x"
    sink = MqttSink(
        url,
        tmp_path / "spool",
        ca_file=str(secure_broker.directory / "ca.pem"),
        reconnect=ReconnectPolicy(initial_delay=0.1, max_delay=0.3),
        drain_timeout=1.0,
    )
    sink.open(context_for(tiny_model))
    for r in real_results(tiny_model, range(3)):
        sink.write(r)
    deadline = time.monotonic() + 10
    while not sink.stats.last_error and time.monotonic() < deadline:
        time.sleep(0.05)
    sink.close()
    snap = sink.stats.snapshot()
    assert snap.delivered == 0 and snap.pending == 3  # nothing lost: still spooled
    assert snap.last_error and PASSWORD not in snap.last_error and PASSWORD not in sink.url
