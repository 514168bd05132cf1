"""Consumers of results: the sink contract, mask visualisation and the sinks."""

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
