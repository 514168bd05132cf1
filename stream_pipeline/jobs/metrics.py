"""``/metrics``: Prometheus text read from the jobs' and the engine's typed status at scrape time.

Nothing is counted per frame for Prometheus: a collector turns the snapshot into metric families
when scraped, so the hot path pays nothing. Names are prefixed ``stream_pipeline_``; labels are
job and source ids (never URLs, so no credential can reach a label).
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from stream_pipeline.jobs.supervisor import Supervisor

__all__ = ["JobsCollector", "render_metrics"]


class JobsCollector(Collector):
    """Metric families of every job, its sources and sinks, and the engine's workers."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """One snapshot of everything, as metric families."""
        p = "stream_pipeline_"
        src = ["job", "source"]
        frames = CounterMetricFamily(p + "source_frames", "Frames decoded", labels=src)
        dropped = CounterMetricFamily(p + "source_dropped_frames", "Frames dropped", labels=src)
        reconn = CounterMetricFamily(p + "source_reconnects", "Reconnection attempts", labels=src)
        fps = GaugeMetricFamily(p + "source_fps", "Results per second", labels=src)
        snk = ["job", "sink", "type"]
        delivered = CounterMetricFamily(p + "sink_delivered", "Results delivered", labels=snk)
        pending = GaugeMetricFamily(p + "sink_pending", "Results held, not delivered", labels=snk)
        sdropped = CounterMetricFamily(p + "sink_dropped", "Results a sink gave up", labels=snk)
        state = GaugeMetricFamily(p + "job_state", "1 for the job's state", labels=["job", "state"])
        for job in list(self.supervisor.jobs.values()):
            status = job.status()
            state.add_metric([job.id, status.state], 1.0)
            for s in status.sources:
                frames.add_metric([job.id, s.id], s.frames)
                dropped.add_metric([job.id, s.id], s.dropped)
                reconn.add_metric([job.id, s.id], s.reconnects)
                fps.add_metric([job.id, s.id], s.fps)
            for i, k in enumerate(status.sinks):
                labels = [job.id, str(i), k.type]
                delivered.add_metric(labels, k.delivered)
                pending.add_metric(labels, k.pending)
                sdropped.add_metric(labels, k.dropped)
        engine = self.supervisor.engine.status()
        wl = ["model"]
        batch = GaugeMetricFamily(p + "worker_mean_batch", "Mean batch size", labels=wl)
        batches = CounterMetricFamily(p + "worker_batches", "Batches run", labels=wl)
        for w in engine.workers:
            batch.add_metric([w.model_id], w.mean_batch)
            batches.add_metric([w.model_id], w.batches)
        latency = GaugeMetricFamily(
            p + "latency_ms", "Latency per stage (recent window)", labels=["stage", "quantile"]
        )
        for stage, pct in engine.latency_ms.items():
            latency.add_metric([stage, "0.5"], pct.p50)
            latency.add_metric([stage, "0.99"], pct.p99)
        yield from (frames, dropped, reconn, fps, delivered, pending, sdropped, state)
        yield from (batch, batches, latency)


def render_metrics(supervisor: Supervisor) -> bytes:
    """The Prometheus text exposition of ``supervisor``'s jobs now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(supervisor))
    return generate_latest(registry)
