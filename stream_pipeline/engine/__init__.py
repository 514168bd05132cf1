"""The engine: models, one batching worker per (model, device), sources and consumers attached
while it runs, fan-out by delivery mode, typed status. See ``docs/architecture.md``."""

from stream_pipeline.consumers.base import Delivery, Failure
from stream_pipeline.engine.engine import Engine, SourceHandle
from stream_pipeline.engine.fanout import Subscription
from stream_pipeline.engine.sinks import SinkRunner
from stream_pipeline.engine.status import (
    EngineStatus,
    JobStatusView,
    Percentiles,
    SinkStatus,
    SourceStatus,
    WorkerStatus,
)
from stream_pipeline.worker import HostNeeds, Thresholds

__all__ = [
    "Delivery",
    "Engine",
    "EngineStatus",
    "Failure",
    "HostNeeds",
    "JobStatusView",
    "Percentiles",
    "SinkRunner",
    "SinkStatus",
    "SourceHandle",
    "SourceStatus",
    "Subscription",
    "Thresholds",
    "WorkerStatus",
]
