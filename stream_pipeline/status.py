"""Human-readable status lines and the end-of-run summary, from the typed
:class:`~stream_pipeline.engine.EngineStatus` snapshot."""

from __future__ import annotations

from stream_pipeline.engine.status import EngineStatus

__all__ = ["progress_line", "summary_text"]


def _bar(fraction: float, width: int = 20) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "#" * filled + "." * (width - filled)


def progress_line(status: EngineStatus) -> str:
    """One line: a progress bar for files of known length, per-source state for live ones."""
    parts = []
    total_latency = status.latency_ms.get("total")
    for s in status.sources:
        if s.total_frames:
            frac = s.results / s.total_frames
            parts.append(f"{s.id} [{_bar(frac)}] {s.results}/{s.total_frames} {s.fps:.1f} fps")
        else:
            text = f"{s.id} {s.state} {s.fps:.1f} fps drops {s.dropped}"
            if s.latency_ms.p50:
                text += f" lat {s.latency_ms.p50:.0f} ms"
            if s.reconnects:
                text += f" reconnects {s.reconnects}"
            if s.state in ("reconnecting", "failed") and s.last_error:
                text += f" ({s.last_error[:80]})"
            parts.append(text)
    for k in status.sinks:
        # Local files keep up or hold the job back; remote sinks and failures are worth a look.
        if k.delivery == "spooled" or k.dropped or k.last_error:
            text = f"{k.type} {k.state} sent {k.delivered} pending {k.pending} dropped {k.dropped}"
            if k.last_error:
                text += f" ({k.last_error[:60]})"
            parts.append(text)
    tail = f" | latency p50 {total_latency.p50:.0f} ms" if total_latency else ""
    return " | ".join(parts) + tail


def summary_text(status: EngineStatus) -> str:
    """The end-of-run summary: frames, fps, latency per stage, drops and errors per source."""
    lines = [
        f"{status.results} frames in {status.elapsed:.1f} s ({status.fps:.1f} fps)",
        "latency (ms)      p50      p99",
    ]
    for stage in ("queue", "preprocess", "infer", "postprocess", "total"):
        if stage in status.latency_ms:
            v = status.latency_ms[stage]
            lines.append(f"  {stage:<12} {v.p50:8.1f} {v.p99:8.1f}")
    lines.extend(
        f"worker {w.model_id} on {w.device}: {w.frames} frames in {w.batches} batches "
        f"(mean {w.mean_batch:.2f}, max {w.max_batch_seen})"
        for w in status.workers
    )
    for s in status.sources:
        line = (
            f"source {s.id} ({s.url}): {s.state}, {s.results} frames, "
            f"{s.dropped} dropped, {s.reconnects} reconnects"
        )
        if s.last_error:
            line += f"; last error: {s.last_error}"
        lines.append(line)
    for k in status.sinks:
        line = f"sink {k.type}" + (f" [{k.source_id}]" if k.source_id else "")
        line += f": {k.delivered} written"
        if k.pending:
            line += f", {k.pending} pending"
        if k.dropped:
            line += f", {k.dropped} dropped"
        if k.last_error:
            line += f"; error: {k.last_error}"
        lines.append(line)
    return "\n".join(lines)
