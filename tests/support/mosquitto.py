"""A real MQTT broker for tests: Debian's mosquitto 2 on a free 127.0.0.1 port.

It runs with its own config (``listener PORT 127.0.0.1``, anonymous, persistence in its own
folder), so a SIGTERM saves its state and a restart on the same port keeps persistent sessions and
their queued QoS 1 messages. A subscriber with a fixed client id and ``clean_session=False``
collects what arrived, outages included.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on (right now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Broker:
    """One mosquitto process that can be stopped and started again on the same port and state."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        (directory / "data").mkdir(parents=True, exist_ok=True)
        self.config = directory / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {directory / 'data'}/\n"
            "log_dest stderr\n"
            "max_queued_messages 100000\n" + ("user root\n" if os.geteuid() == 0 else "")
            # As root, mosquitto would drop to the "mosquitto" user, who cannot write in a
            # test's private temporary folder: persistence would silently fail.
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None
        with (self.directory / "mosquitto.log").open("ab") as log:  # the child keeps its copy
            self.proc = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stderr=log, stdout=log
            )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2),
            ):
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited: {(self.directory / 'mosquitto.log').read_text()}"
                )
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening")

    def stop(self) -> None:
        """SIGTERM: mosquitto saves sessions and queued messages before it exits."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


class Subscriber:
    """A persistent-session QoS 1 subscriber that collects JSON payloads per topic."""

    def __init__(self, broker: Broker, topic: str, client_id: str = "test-subscriber") -> None:
        self.broker = broker
        self.topic = topic
        self.messages: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False
        )
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()
        # Until the broker acknowledged the subscription, what is published is not for us: wait
        # for the SUBACK so a test never races its own subscriber (seen on a loaded machine).
        if not self.subscribed.wait(10):
            self.close()
            raise RuntimeError("the test subscriber got no SUBACK within 10 s")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, json.loads(msg.payload)))

    def items(self) -> list[dict[str, Any]]:
        with self.lock:
            return [m for _, m in self.messages]

    def wait_for(self, n: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            items = self.items()
            if len({i["inference_id"] for i in items}) >= n:
                return items
            time.sleep(0.05)
        return self.items()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Broker]:
    """A running broker, stopped after the test whatever happens."""
    broker = Broker(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
