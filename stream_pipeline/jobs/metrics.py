"""``/metrics``: Prometheus text read from the jobs' and the engine's typed status at scrape time.

Counters and gauges are read from the status snapshots when scraped; the latency and batch-size
histograms are fixed-bucket counters that each worker's postprocess thread updates once per batch
(:class:`~stream_pipeline.stats.WorkerMeters`), so the hot path pays one lock and a bisect per
value. Names are prefixed ``stream_pipeline_``; labels are job, source, sink and model ids (never
URLs, so no credential can reach a label).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from stream_pipeline.engine import EngineStatus
from stream_pipeline.jobs.supervisor import JobRunner, Supervisor
from stream_pipeline.stats import HistogramSnapshot

__all__ = ["JobsCollector", "render_metrics"]

P = "stream_pipeline_"


class JobsCollector(Collector):
    """Metric families of every job, its sources and sinks, and the engine's workers."""

    def __init__(self, supervisor: Supervisor) -> None:
        self.supervisor = supervisor

    def collect(self) -> Iterator[Metric]:
        """One snapshot of everything, as metric families."""
        yield from _job_families(self.supervisor)
        yield from _worker_families(self.supervisor)


def _views(supervisor: Supervisor) -> list[tuple[JobRunner, EngineStatus]]:
    """Each job with its part of the engine's status, as ``JobRunner.status`` reads it (the kept
    snapshot of an ended run), from one engine snapshot for all the others: the per-stage
    percentiles a snapshot computes are not free."""
    jobs = list(supervisor.jobs.values())
    kept = {j.id: _kept(j) for j in jobs}
    live = [j for j in jobs if kept[j.id] is None]
    whole = supervisor.engine.status(
        [h for j in live for h in j.handles.values()], [k for j in live for k in j.runners]
    )
    return [(j, kept[j.id] or whole.for_job(j.engine_job)) for j in jobs]


def _kept(job: JobRunner) -> EngineStatus | None:
    return job.last if not (job.handles or job.runners) else None


def _job_families(supervisor: Supervisor) -> Iterator[Metric]:
    src = ["job", "source"]
    frames = CounterMetricFamily(P + "source_frames", "Frames decoded", labels=src)
    results = CounterMetricFamily(P + "source_results", "Frames segmented", labels=src)
    dropped = CounterMetricFamily(P + "source_dropped_frames", "Frames dropped", labels=src)
    reconn = CounterMetricFamily(P + "source_reconnects", "Reconnection attempts", labels=src)
    restarts = CounterMetricFamily(
        P + "source_decoder_restarts", "Decoder processes restarted", labels=src
    )
    outages = CounterMetricFamily(
        P + "source_outages", "Outages across restarts of the service", labels=src
    )
    outage_s = CounterMetricFamily(
        P + "source_outage_seconds", "Seconds out across restarts of the service", labels=src
    )
    depth = GaugeMetricFamily(P + "source_ring_depth", "Frames waiting in the ring", labels=src)
    fps = GaugeMetricFamily(P + "source_fps", "Results per second", labels=src)
    snk = ["job", "sink", "type"]
    delivered = CounterMetricFamily(P + "sink_delivered", "Results delivered", labels=snk)
    pending = GaugeMetricFamily(P + "sink_pending", "Results held, not delivered", labels=snk)
    sdropped = CounterMetricFamily(P + "sink_dropped", "Results a sink gave up", labels=snk)
    state = GaugeMetricFamily(P + "job_state", "1 for the job's state", labels=["job", "state"])
    job_restarts = CounterMetricFamily(P + "job_restarts", "Restarts by policy", labels=["job"])
    for job, es in _views(supervisor):
        state.add_metric([job.id, job.state], 1.0)
        job_restarts.add_metric([job.id], job.restarts)
        for s in es.sources:
            labels = [job.id, s.id]
            frames.add_metric(labels, s.frames)
            results.add_metric(labels, s.results)
            dropped.add_metric(labels, s.dropped)
            reconn.add_metric(labels, s.reconnects)
            restarts.add_metric(labels, s.decoder_restarts)
            depth.add_metric(labels, s.buffered)
            fps.add_metric(labels, s.fps)
        for source in job.spec.sources:
            count, seconds = job.outages.of(source.id)
            outages.add_metric([job.id, source.id], count)
            outage_s.add_metric([job.id, source.id], seconds)
        for i, (spec, k) in enumerate(zip(job.spec.sinks, es.sinks, strict=False)):
            labels = [job.id, str(i), spec.type]
            delivered.add_metric(labels, k.delivered)
            pending.add_metric(labels, k.pending)
            sdropped.add_metric(labels, k.dropped)
    yield from (frames, results, dropped, reconn, restarts, outages, outage_s, depth, fps)
    yield from (delivered, pending, sdropped, state, job_restarts)


def _worker_families(supervisor: Supervisor) -> Iterator[Metric]:
    engine = supervisor.engine
    sources = GaugeMetricFamily(
        P + "worker_sources", "Sources a worker batches now", labels=["model", "device"]
    )
    for entry in engine.models.entries():
        ws = entry.status()
        sources.add_metric([ws.model_id, ws.device], ws.sources)
    latency = HistogramMetricFamily(
        P + "stage_latency_seconds",
        "Seconds per frame by stage (queue, preprocess, infer, postprocess; total: arrival to "
        "result)",
        labels=["model", "device", "stage"],
    )
    batch = HistogramMetricFamily(P + "batch_size", "Frames per batch", labels=["model", "device"])
    for (model, device), meters in sorted(engine.models.meters().items()):
        for stage, snap in meters.latency().items():
            latency.add_metric([model, device, stage], _buckets(snap), snap.sum)
        snap = meters.batch_sizes()
        batch.add_metric([model, device], _buckets(snap), snap.sum)
    yield from (sources, latency, batch)


def _buckets(snap: HistogramSnapshot) -> list[tuple[str, float]]:
    bounds: Iterable[str] = (repr(float(b)) for b in snap.bounds)
    return list(zip([*bounds, "+Inf"], map(float, snap.cumulative), strict=True))


def render_metrics(supervisor: Supervisor) -> bytes:
    """The Prometheus text exposition of ``supervisor``'s jobs now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(supervisor))
    return generate_latest(registry)
