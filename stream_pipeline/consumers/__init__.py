"""Consumers of results: the sink contract, mask visualisation and the sinks.

Each name is imported on first use: the sink contract (``consumers.base``) is needed everywhere,
while the remote sinks bring aiohttp and paho, the video sinks PyAV, the overlay numba.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stream_pipeline.lazy import lazy_exports

_EXPORTS = {
    "CallbackSink": "files",
    "Delivery": "base",
    "Failure": "base",
    "JsonlSink": "files",
    "MaskAnnotator": "visualize",
    "MasksSink": "files",
    "MqttSink": "mqtt",
    "Retention": "rotation",
    "RtspOutSink": "rtsp_out",
    "SegmentedVideoSink": "segments",
    "Sink": "base",
    "SinkContext": "base",
    "SinkStats": "base",
    "Spool": "spool",
    "VideoFileSink": "video",
    "WebhookSink": "webhook",
    "build_palette": "visualize",
}

__all__ = [
    "CallbackSink",
    "Delivery",
    "Failure",
    "JsonlSink",
    "MaskAnnotator",
    "MasksSink",
    "MqttSink",
    "Retention",
    "RtspOutSink",
    "SegmentedVideoSink",
    "Sink",
    "SinkContext",
    "SinkStats",
    "Spool",
    "VideoFileSink",
    "WebhookSink",
    "build_palette",
]

if TYPE_CHECKING:
    from stream_pipeline.consumers.base import Delivery, Failure, Sink, SinkContext, SinkStats
    from stream_pipeline.consumers.files import CallbackSink, JsonlSink, MasksSink
    from stream_pipeline.consumers.mqtt import MqttSink
    from stream_pipeline.consumers.rotation import Retention
    from stream_pipeline.consumers.rtsp_out import RtspOutSink
    from stream_pipeline.consumers.segments import SegmentedVideoSink
    from stream_pipeline.consumers.spool import Spool
    from stream_pipeline.consumers.video import VideoFileSink
    from stream_pipeline.consumers.visualize import MaskAnnotator, build_palette
    from stream_pipeline.consumers.webhook import WebhookSink


__getattr__ = lazy_exports(
    __name__, {name: f"stream_pipeline.consumers.{module}" for name, module in _EXPORTS.items()}
)
