"""Consumers of results: the sink contract, mask visualisation and the sinks."""

from stream_pipeline.consumers.base import Sink, SinkContext, SinkStats
from stream_pipeline.consumers.files import CallbackSink, JsonlSink, MasksSink
from stream_pipeline.consumers.rtsp_out import RtspOutSink
from stream_pipeline.consumers.video import VideoFileSink
from stream_pipeline.consumers.visualize import MaskAnnotator, build_palette

__all__ = [
    "CallbackSink",
    "JsonlSink",
    "MaskAnnotator",
    "MasksSink",
    "RtspOutSink",
    "Sink",
    "SinkContext",
    "SinkStats",
    "VideoFileSink",
    "build_palette",
]
