"""MQTT sink: one message per result, published from the spool and removed only on PUBACK.

The URL is ``mqtt://[user:pass@]host[:1883]/topic`` (``mqtts://``, port 8883, for TLS); the topic
may name ``{job}``, ``{source}`` and ``{model}``. The client (paho-mqtt 2) keeps a persistent
session (a fixed client id, ``clean_session=False`` / MQTT 5 ``clean_start=False``), and is driven
by the sink's own sender thread: it publishes only while connected, at most ``max_inflight``
unacknowledged messages, and reconnects with backoff. After a lost connection everything not
acknowledged is published again from the spool (the library's own queue dies with the process), so
a message can arrive twice around an outage, never zero times. With QoS 0 a message counts as
delivered once written to the socket (at most once, as MQTT defines it).
"""

from __future__ import annotations

import hashlib
import os
import ssl
import string
import time
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from stream_pipeline.consumers.remote import DEFAULT_POLICY, RemoteSink
from stream_pipeline.errors import ConfigError
from stream_pipeline.frames import SegResult
from stream_pipeline.retry import ReconnectPolicy

__all__ = ["PROTOCOLS", "MqttSink"]

PROTOCOLS = {"3.1.1": MQTTProtocolVersion.MQTTv311, "5": MQTTProtocolVersion.MQTTv5}
TOPIC_FIELDS = ("job", "source", "model")
SESSION_EXPIRY = 7 * 24 * 3600  # MQTT 5: the broker keeps the session this long after we leave
POLL = 0.02  # seconds the network loop waits on the socket before looking at the spool again


class MqttSink(RemoteSink):
    """Publish each result to an MQTT broker at ``qos`` 0 or 1 (default 1).

    ``protocol`` is ``"3.1.1"`` or ``"5"``; ``client_id`` defaults to one derived from the URL and
    the job, stable across restarts (a persistent session needs it). ``ca_file`` is a PEM bundle
    for ``mqtts://`` (default: the system's). See
    :class:`~stream_pipeline.consumers.remote.RemoteSink` for the spool and ``drain_timeout``.
    """

    name = "mqtt"

    def __init__(
        self,
        url: str,
        spool_dir: str | os.PathLike[str],
        qos: int = 1,
        protocol: str = "3.1.1",
        client_id: str | None = None,
        ca_file: str | None = None,
        keepalive: int = 30,
        max_inflight: int = 32,
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
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"MQTT URL {self.url}: {exc}") from None
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ConfigError(f"MQTT URL must be mqtt(s)://host[:port]/topic, got {self.url!r}")
        self.topic = unquote(parts.path.lstrip("/"))
        if not self.topic or "+" in self.topic or "#" in url:  # "#" would parse as a fragment
            raise ConfigError(f"MQTT URL {self.url}: needs a topic without + or # wildcards")
        names = {f for _, f, _, _ in string.Formatter().parse(self.topic) if f is not None}
        if not names <= set(TOPIC_FIELDS):
            unknown = ", ".join(sorted(names - set(TOPIC_FIELDS)))
            raise ConfigError(f"MQTT topic may use {{job}}, {{source}}, {{model}}; not {unknown}")
        if qos not in (0, 1):
            raise ConfigError(f"MQTT qos must be 0 or 1, got {qos!r}")
        if protocol not in PROTOCOLS:
            raise ConfigError(f"MQTT protocol must be one of {', '.join(PROTOCOLS)}")
        if max_inflight < 1 or keepalive < 5:
            raise ConfigError("MQTT max_inflight must be >= 1 and keepalive >= 5 s")
        self.host = parts.hostname
        self.tls = parts.scheme == "mqtts"
        self.port = port or (8883 if self.tls else 1883)
        self._username = unquote(parts.username) if parts.username is not None else None
        self._password = unquote(parts.password) if parts.password is not None else None
        self.qos = qos
        self.protocol = protocol
        self.client_id = client_id
        self.ca_file = ca_file
        self.keepalive = keepalive
        self.max_inflight = max_inflight
        self._connected = False
        self._inflight: dict[int, int] = {}  # message id -> spool seq
        self._attempt = 0
        self._next_try = 0.0

    def _topic(self, result: SegResult) -> str:
        source = result.frame.meta.source_id if result.frame is not None else ""
        job = self.context.job_id or "job"
        return self.topic.format(job=job, source=source, model=self.context.model_id)

    # -- the sender thread -------------------------------------------------------------------

    def _client(self) -> mqtt.Client:
        v5 = self.protocol == "5"
        ident = (
            self.client_id
            or "stream-pipeline-"
            + hashlib.sha256(f"{self.url}|{self.context.job_id}".encode()).hexdigest()[:16]
        )
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=ident,
            clean_session=None if v5 else False,
            protocol=PROTOCOLS[self.protocol],
            reconnect_on_failure=False,  # we reconnect ourselves, with our backoff
        )
        if self._username is not None:
            client.username_pw_set(self._username, self._password)
        if self.tls:
            client.tls_set(ca_certs=self.ca_file, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.max_inflight_messages_set(self.max_inflight)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        return client

    def _serve(self) -> None:
        client = self._client()
        try:
            while not self._finished():
                if not self._connected and not self._connect(client):
                    self._closing.wait(min(0.1, max(0.0, self._next_try - time.monotonic())))
                    continue
                client.loop(timeout=POLL)
                if self._connected:
                    self._publish(client)
                self._maybe_sync()
        finally:
            if self._connected:
                client.disconnect()
                client.loop(timeout=0.1)

    def _connect(self, client: mqtt.Client) -> bool:
        """Start a connection attempt when its backoff is over; True while one is under way."""
        if client.is_connected() or client.socket() is not None:
            return True  # CONNACK pending: the loop will call _on_connect
        if time.monotonic() < self._next_try:
            return False
        self.stats.set_state("connecting")
        try:
            props = None
            if self.protocol == "5":
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = SESSION_EXPIRY
                client.connect(
                    self.host, self.port, self.keepalive, clean_start=False, properties=props
                )
            else:
                client.connect(self.host, self.port, self.keepalive)
        except (OSError, ValueError) as exc:
            self._failed(f"cannot connect to {self.host}:{self.port}: {exc}")
            return False
        return True

    def _failed(self, why: str) -> None:
        self._attempt += 1
        self._next_try = time.monotonic() + self.reconnect.delay(self._attempt)
        self.stats.count_reconnect()
        self.stats.set_state("reconnecting")
        self._report(why)

    def _publish(self, client: mqtt.Client) -> None:
        room = self.max_inflight - len(self._inflight)
        if room <= 0:
            return
        for seq, payload in self.spool.take(room):
            _key, topic, body = self._fields(payload)
            info = client.publish(topic, body, qos=self.qos)
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self._rewind()  # the connection went away under us: send again on reconnect
                return
            if self.qos == 0:
                self._delivered([seq])
            else:
                self._inflight[info.mid] = seq

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason.is_failure:
            self._failed(f"broker refused the connection: {reason}")
            client.disconnect()
            return
        self._connected = True
        self._attempt = 0
        self._inflight.clear()
        self._rewind()  # whatever was out before the outage goes again
        self.stats.set_state("connected")

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: Any,
        flags: Any,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was = self._connected
        self._connected = False
        self._inflight.clear()
        if was and not (self._closing.is_set() and self.spool.pending == 0):
            self._failed(f"connection lost: {reason}")

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: Any,
        mid: int,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        seq = self._inflight.pop(mid, None)
        if seq is None:
            return  # a message of an earlier connection; it goes again from the spool
        if reason.is_failure:
            self._rejected([seq], f"broker refused a message: {reason}")
        else:
            self._delivered([seq])
