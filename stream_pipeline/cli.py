"""``stream-pipeline``: run / models. Parses flags, builds config and sinks, and nothing else.

Bad input exits with status 2 and one line on stderr (no traceback).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

from stream_pipeline.buffer import DropPolicy
from stream_pipeline.config import read_environment
from stream_pipeline.errors import ConfigError, StreamPipelineError
from stream_pipeline.jobs.commands import add_jobs_parser, run_jobs_command
from stream_pipeline.model.thresholds import CONFIDENCE_MODES

__all__ = ["main"]

DEFAULT_SOURCE = "synthetic://street?seed=7&frames=300&fps=30"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="stream-pipeline", description="Live semantic segmentation on video streams.")
    sub = p.add_subparsers(dest="command", parser_class=_Parser)

    run = sub.add_parser("run", help="run a pipeline in the foreground (default: a demo)")
    src = run.add_argument_group("sources")
    src.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="[ID=]URL",
        help="file, URL, rtsp://, /dev/videoN or synthetic://street?...; repeatable",
    )
    src.add_argument(
        "--buffer-policy",
        choices=[p.value for p in DropPolicy],
        help="ring policy (default: drop_oldest for live sources, block for files)",
    )
    src.add_argument("--buffer-size", type=int, default=8, help="ring slots per source")
    src.add_argument("--realtime", action="store_true", help="pace files at their frame rate")
    src.add_argument("--transport", choices=["tcp", "udp"], default="tcp", help="RTSP transport")
    src.add_argument("--open-timeout", type=float, default=10.0, help="seconds to open a source")
    src.add_argument(
        "--read-timeout",
        type=float,
        default=5.0,
        help="seconds without data before a live source reconnects",
    )
    src.add_argument(
        "--max-reconnects",
        type=int,
        default=None,
        help="give a live source up after N failed attempts in a row (default: never)",
    )
    src.add_argument(
        "--retry-at-start",
        action="store_true",
        help="keep retrying a live source that cannot be opened at start",
    )
    mdl = run.add_argument_group("model")
    _add_model_args(mdl)
    mdl.add_argument("--workflow", default=None, metavar="FILE", help="Roboflow workflow JSON")
    mdl.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="workflow parameter (value parsed as JSON when it can be)",
    )
    out = run.add_argument_group("outputs")
    out.add_argument(
        "--output-dir",
        default=None,
        help="where default outputs go (default: ./stream-pipeline-out/<time>)",
    )
    out.add_argument("--video-out", default=None, help="annotated H.264 mp4")
    out.add_argument("--predictions-out", default=None, help="predictions, one JSON line per frame")
    out.add_argument("--masks-out", default=None, help="folder for class-map/confidence PNGs")
    out.add_argument(
        "--rtsp-out",
        default=None,
        metavar="URL",
        help="push the annotated stream to an RTSP server (reconnects)",
    )
    out.add_argument("--raw", action="store_true", help="add the raw PNG form to each JSON line")
    out.add_argument(
        "--workflow-images",
        action="store_true",
        help="with --workflow: include its image outputs in each JSON line (base64 JPEG)",
    )
    out.add_argument("--no-masks-in-json", action="store_true", help="leave out rle_mask")
    out.add_argument("--opacity", type=float, default=None, help="overlay opacity (0-1)")
    out.add_argument("--legend", action="store_true", help="draw a legend of present classes")
    _add_delivery_args(run.add_argument_group("delivery and retention"))
    ctl = run.add_argument_group("control")
    ctl.add_argument("--max-frames", type=int, default=None, help="stop each source after N frames")
    ctl.add_argument("--duration", type=float, default=None, help="stop after S seconds")
    ctl.add_argument("--json-status", action="store_true", help="status and summary as JSON lines")
    ctl.add_argument("--quiet", action="store_true", help="no status line or summary")

    models = sub.add_parser("models", help="manage the local model registry")
    msub = models.add_subparsers(dest="models_command", parser_class=_Parser)
    msub.add_parser("list", help="list registered models and where each came from")
    pull = msub.add_parser("pull", help="download a hosted Roboflow model into the registry")
    pull.add_argument("model", metavar="project/version")
    pull.add_argument("--api-key", default=None, help="Roboflow API key ($ROBOFLOW_API_KEY)")
    show = msub.add_parser("show", help="show a model's package and network")
    show.add_argument("model")
    imp = msub.add_parser("import", help="validate a package dir and copy it into the registry")
    imp.add_argument("path")
    imp.add_argument("--id", default=None, help="register under this project/version")
    imp.add_argument("--replace", action="store_true")
    _add_serve_parser(sub)
    add_jobs_parser(sub)
    return p


def _add_model_args(group: Any) -> None:
    """The model and threshold flags, shared by ``run`` and ``serve``."""
    group.add_argument(
        "--model", default=None, help="model id, package dir or .onnx (default: shipped)"
    )
    group.add_argument("--class-names", default=None, help="comma-separated, for a bare .onnx")
    group.add_argument("--input-size", default=None, metavar="WxH", help="for a bare dynamic .onnx")
    group.add_argument(
        "--api-key", default=None, help="Roboflow API key for hosted models ($ROBOFLOW_API_KEY)"
    )
    group.add_argument("--offline", action="store_true", help="never download: cached models only")
    group.add_argument("--confidence-mode", choices=CONFIDENCE_MODES, default=None)
    group.add_argument("--custom-confidence", type=float, default=None)
    group.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    group.add_argument("--max-batch", type=int, default=4)
    group.add_argument("--max-wait-ms", type=float, default=5.0)
    group.add_argument("--threads", type=int, default=None, help="onnxruntime threads")


def _add_serve_parser(sub: Any) -> None:
    """``serve``: the HTTP app (WHIP ingest, WHEP preview, the page) around one engine."""
    serve = sub.add_parser("serve", help="serve WHIP ingest, WHEP preview and the page over HTTP")
    net = serve.add_argument_group("server")
    net.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: 127.0.0.1)"
    )
    net.add_argument("--port", type=int, default=8080, help="TCP port (default: 8080)")
    net.add_argument(
        "--token",
        default=None,
        help="bearer token clients must send ($STREAM_PIPELINE_TOKEN); required beyond loopback",
    )
    net.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="[ID=]URL",
        help="camera, file or synthetic:// stream to run from the start; repeatable",
    )
    net.add_argument(
        "--ice-server",
        action="append",
        default=[],
        metavar="URL",
        help="STUN/TURN server: stun:host:port or turn:user:pass@host:port; repeatable",
    )
    net.add_argument("--opacity", type=float, default=0.5, help="overlay opacity (0-1)")
    net.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr logs as text or one JSON object a line (default: text)",
    )
    jobs = serve.add_argument_group("jobs (docs/jobs.md)")
    jobs.add_argument(
        "--state-dir", default=None, help="serve the jobs API; its SQLite state lives here (0700)"
    )
    jobs.add_argument(
        "--output-dir", default=None, help="jobs' file sinks write under here (default: ./outputs)"
    )
    jobs.add_argument(
        "--jobs", default=None, metavar="FILE", help="JSON/YAML job specs to create if absent"
    )
    jobs.add_argument(
        "--max-sources", type=int, default=None, help="most sources over all running jobs"
    )
    cluster = serve.add_argument_group("scale-out on Ray (docs/scale-out.md)")
    cluster.add_argument(
        "--ray",
        default=None,
        metavar="ADDRESS",
        help="run the jobs' sources on the actors of this Ray cluster (host:port or auto)",
    )
    cluster.add_argument(
        "--ray-namespace", default="stream-pipeline", help="the actors' Ray namespace"
    )
    cluster.add_argument(
        "--ray-max-sources", type=int, default=None, help="most sources per actor (per GPU)"
    )
    cluster.add_argument(
        "--ray-utilization",
        type=float,
        default=0.8,
        help="share of an actor's worker time its sources may take, from the model's measured "
        "cost per frame (default: 0.8; 0: only --ray-max-sources limits)",
    )
    cluster.add_argument(
        "--ray-liveness-timeout",
        type=float,
        default=10.0,
        help="seconds without a status answer before an actor's sources move (default: 10)",
    )
    cluster.add_argument(
        "--ray-controller-url",
        default=None,
        metavar="URL",
        help="this service as the actors reach it, to fetch their assignment "
        "(default: http://HOST:PORT)",
    )
    _add_model_args(serve.add_argument_group("model"))


def _add_delivery_args(group: Any) -> None:
    """Flags of the remote sinks (webhook, MQTT), their spool, segments, rotation, retention."""
    group.add_argument(
        "--webhook-out",
        action="append",
        default=[],
        metavar="URL",
        help="POST prediction batches to http(s)://[user:pass@]host/path; repeatable",
    )
    group.add_argument(
        "--webhook-secret", metavar="SECRET", default=None, help="sign bodies (X-Signature-256)"
    )
    group.add_argument(
        "--webhook-batch", metavar="N", type=int, default=16, help="results per request"
    )
    group.add_argument(
        "--webhook-delay-ms", metavar="MS", type=float, default=200.0, help="batching window"
    )
    group.add_argument(
        "--webhook-timeout", metavar="S", type=float, default=10.0, help="seconds per request"
    )
    group.add_argument(
        "--mqtt-out",
        action="append",
        default=[],
        metavar="URL",
        help="publish to mqtt(s)://[user:pass@]host:port/topic ({job}, {source}); repeatable",
    )
    group.add_argument("--mqtt-qos", type=int, choices=[0, 1], default=1)
    group.add_argument("--mqtt-protocol", choices=["3.1.1", "5"], default="3.1.1")
    group.add_argument(
        "--mqtt-payload", choices=["full", "summary"], default="full", help="summary: no masks"
    )
    group.add_argument("--mqtt-ca", default=None, metavar="PEM", help="CA bundle for mqtts://")
    group.add_argument(
        "--spool-dir",
        metavar="DIR",
        default=None,
        help="remote sinks' spool (default: OUTPUT_DIR/spool)",
    )
    group.add_argument(
        "--spool-size", metavar="SIZE", default="256M", help="bound of each spool on disk"
    )
    group.add_argument(
        "--drain-timeout",
        metavar="S",
        type=float,
        default=60.0,
        help="seconds to deliver what is pending at end",
    )
    group.add_argument(
        "--segment-seconds",
        metavar="S",
        type=float,
        default=None,
        help="record --video-out as a folder of segments this long (with an index)",
    )
    group.add_argument(
        "--rotate-size", metavar="SIZE", default=None, help="rotate --predictions-out at SIZE"
    )
    group.add_argument(
        "--rotate-interval", metavar="DUR", default=None, help="rotate --predictions-out every DUR"
    )
    group.add_argument(
        "--retention-age", metavar="DUR", default=None, help="delete segments/rotated files older"
    )
    group.add_argument(
        "--retention-size", metavar="SIZE", default=None, help="keep at most SIZE per sink"
    )


def _delivery_sinks(
    args: argparse.Namespace, specs: Sequence[Any], sinks: list[Any], output_dir: Path | None
) -> list[Any]:
    """``sinks`` with recordings in segments and rotated JSONL where asked, plus remote sinks."""
    from stream_pipeline.consumers import JsonlSink, Retention, SegmentedVideoSink, VideoFileSink
    from stream_pipeline.consumers.remote import spool_directory
    from stream_pipeline.consumers.rotation import parse_duration, parse_size

    for flag in ("segment_seconds", "drain_timeout", "webhook_batch", "webhook_timeout"):
        _positive("--" + flag.replace("_", "-"), getattr(args, flag))
    if args.drain_timeout < 0 or args.webhook_delay_ms < 0:
        raise ConfigError("--drain-timeout and --webhook-delay-ms must be >= 0")
    if args.webhook_secret is not None and not args.webhook_out:
        raise ConfigError("--webhook-secret signs webhook bodies: it needs --webhook-out")
    retention = Retention(
        parse_duration(args.retention_age, "--retention-age") if args.retention_age else None,
        parse_size(args.retention_size, "--retention-size") if args.retention_size else None,
    )
    rotate_bytes = parse_size(args.rotate_size, "--rotate-size") if args.rotate_size else None
    rotate_every = (
        parse_duration(args.rotate_interval, "--rotate-interval") if args.rotate_interval else None
    )
    videos = [s for s in sinks if isinstance(s, VideoFileSink)]
    jsonl = [s for s in sinks if isinstance(s, JsonlSink)]
    if args.segment_seconds is not None and not videos:
        raise ConfigError("--segment-seconds records --video-out in segments: give --video-out")
    if (rotate_bytes or rotate_every) and not jsonl:
        raise ConfigError("--rotate-size/--rotate-interval rotate --predictions-out: give it")
    if retention.active and args.segment_seconds is None and not (rotate_bytes or rotate_every):
        raise ConfigError("--retention-* applies to --segment-seconds or a rotated JSONL")
    out: list[Any] = []
    for sink in sinks:
        if isinstance(sink, VideoFileSink) and args.segment_seconds is not None:
            # With segments, --video-out names a folder: rec.mp4 -> rec/.
            sink = SegmentedVideoSink(
                sink.path.with_suffix(""),
                args.segment_seconds,
                sink.annotator,
                retention,
                source_id=sink.source_id,
            )
        elif isinstance(sink, JsonlSink) and (rotate_bytes or rotate_every):
            sink = JsonlSink(
                sink.path, sink.with_masks, sink.raw, sink.source_id,
                rotate_bytes, rotate_every, retention, record=sink.record,
            )  # fmt: skip
        out.append(sink)
    spool_base = (
        Path(args.spool_dir)
        if args.spool_dir
        else (output_dir / "spool" if output_dir else Path("stream-pipeline-spool"))
    )
    spool_bytes = parse_size(args.spool_size, "--spool-size")
    common: dict[str, Any] = {
        "spool_bytes": spool_bytes,
        "drain_timeout": args.drain_timeout,
        "with_masks": not args.no_masks_in_json,
    }
    if not (args.webhook_out or args.mqtt_out):
        return out
    # Only now: the remote sinks bring aiohttp and paho (~0.3 s of start-up) with them.
    from stream_pipeline.consumers import MqttSink, WebhookSink

    out += [
        WebhookSink(
            url,
            spool_directory(spool_base, "webhook", url),
            secret=args.webhook_secret,
            max_batch=args.webhook_batch,
            max_delay_ms=args.webhook_delay_ms,
            timeout=args.webhook_timeout,
            **common,
        )
        for url in args.webhook_out
    ]
    out += [
        MqttSink(
            url,
            spool_directory(spool_base, "mqtt", url),
            qos=args.mqtt_qos,
            protocol=args.mqtt_protocol,
            ca_file=args.mqtt_ca,
            payload=args.mqtt_payload,
            **common,
        )
        for url in args.mqtt_out
    ]
    return out


def _fail(message: str, code: int = 2) -> NoReturn:
    sys.stderr.write(f"stream-pipeline: error: {message}\n")
    raise SystemExit(code)


def _positive(name: str, value: float | None) -> None:
    if value is not None and value <= 0:
        raise ConfigError(f"{name} must be positive, got {value}")


def _build_run(args: argparse.Namespace) -> tuple[Any, list[Any], Path | None]:
    from stream_pipeline.consumers import (
        JsonlSink,
        MaskAnnotator,
        MasksSink,
        RtspOutSink,
        VideoFileSink,
    )
    from stream_pipeline.model import load_model
    from stream_pipeline.pipeline import Pipeline, PipelineConfig
    from stream_pipeline.sources import ReconnectPolicy, SourceSpec, parse_source_arg
    from stream_pipeline.workflow import load_workflow

    if args.workflow and (args.model or args.confidence_mode or args.custom_confidence is not None):
        raise ConfigError("--workflow sets the model and thresholds: drop --model/--confidence-*")
    if args.custom_confidence is not None and args.confidence_mode not in (None, "custom"):
        raise ConfigError("--custom-confidence only applies with --confidence-mode custom")
    if args.param and not args.workflow:
        raise ConfigError("--param binds workflow inputs: it needs --workflow")
    if args.workflow_images and not args.workflow:
        raise ConfigError(
            "--workflow-images includes a workflow's image outputs: it needs --workflow"
        )
    for name in (
        "max_frames",
        "duration",
        "buffer_size",
        "max_batch",
        "open_timeout",
        "read_timeout",
    ):
        _positive("--" + name.replace("_", "-"), getattr(args, name))
    if args.opacity is not None and not 0.0 <= args.opacity <= 1.0:
        raise ConfigError(f"--opacity must be in [0, 1], got {args.opacity}")

    mode = args.confidence_mode or ("custom" if args.custom_confidence is not None else "best")
    model_ref = args.model or "default"
    opacity = args.opacity if args.opacity is not None else 0.5
    if args.workflow:
        params = {}
        for item in args.param:
            name, sep, value = item.partition("=")
            if not sep:
                raise ConfigError(f"--param wants NAME=VALUE, got {item!r}")
            try:
                params[name] = json.loads(value)
            except json.JSONDecodeError:
                params[name] = value
        bound = load_workflow(Path(args.workflow)).bind(params)
        model_ref, mode, custom = bound.model_id, bound.confidence_mode, bound.custom_confidence
        if args.opacity is None:
            opacity = bound.opacity
    else:
        custom = args.custom_confidence
    class_names = (
        tuple(n.strip() for n in args.class_names.split(",")) if args.class_names else None
    )
    input_size = None
    if args.input_size:
        w, sep, h = args.input_size.lower().partition("x")
        if not (sep and w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
            raise ConfigError(f"--input-size wants WxH, got {args.input_size!r}")
        input_size = (int(w), int(h))

    default_run = not args.source
    raw_sources = args.source or [DEFAULT_SOURCE]
    policy = DropPolicy(args.buffer_policy) if args.buffer_policy else None
    reconnect = ReconnectPolicy(
        max_attempts=args.max_reconnects, retry_first_open=args.retry_at_start
    )
    specs = []
    for i, arg in enumerate(raw_sources):
        sid, url = parse_source_arg(arg, i)
        specs.append(
            SourceSpec(
                url=url,
                id=sid,
                buffer_policy=policy,
                buffer_size=args.buffer_size,
                realtime=args.realtime,
                transport=args.transport,
                open_timeout=args.open_timeout,
                read_timeout=args.read_timeout,
                max_frames=args.max_frames,
                reconnect=reconnect,
            )
        )
    config = PipelineConfig(
        sources=tuple(specs),
        model=model_ref,
        confidence_mode=mode,
        custom_confidence=custom,
        device=args.device,
        threads=args.threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        duration=args.duration,
        class_names=class_names,
        input_size=input_size,
    )
    config.validate()

    output_dir: Path | None = None
    video_out, predictions_out, masks_out = args.video_out, args.predictions_out, args.masks_out
    if args.output_dir or (default_run and not (video_out or predictions_out or masks_out)):
        output_dir = Path(
            args.output_dir or Path("stream-pipeline-out") / time.strftime("%Y%m%d-%H%M%S")
        )
        video_out = video_out or str(output_dir / "annotated.mp4")
        predictions_out = predictions_out or str(output_dir / "predictions.jsonl")
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create output folder {output_dir}: {exc.strerror}") from None
    if (
        not (video_out or predictions_out or masks_out or args.rtsp_out or args.webhook_out)
        and not args.mqtt_out
    ):
        raise ConfigError(
            "no output: give --video-out, --predictions-out, --masks-out, --rtsp-out, "
            "--webhook-out, --mqtt-out or --output-dir"
        )
    if args.rtsp_out and len(specs) > 1:
        raise ConfigError("--rtsp-out publishes one source: run one pipeline per camera")

    model = load_model(
        model_ref,
        device=args.device,
        threads=args.threads,
        class_names=class_names,
        input_size=input_size,
        registry=read_environment().models_dir,
        api_key=args.api_key,
        offline=True if args.offline else None,
    )
    sinks: list[Any] = []
    many = len(specs) > 1
    # One annotator serves every sink: it holds only its palette, and annotate() writes a new
    # image each call, so sink threads can share it.
    annotator = MaskAnnotator.for_classes(
        model.class_names,
        model.package.colors,
        model.package.background_id,
        opacity=opacity,
        legend=args.legend,
    )
    if video_out:
        for spec in specs:
            path = Path(video_out)
            if many:
                path = path.with_name(f"{path.stem}.{spec.id}{path.suffix or '.mp4'}")
            sinks.append(VideoFileSink(path, annotator, source_id=spec.id))
    if args.rtsp_out:
        sinks.append(
            RtspOutSink(args.rtsp_out, annotator, source_id=specs[0].id, transport=args.transport)
        )
    if predictions_out:
        record = _workflow_record(bound, annotator, args.workflow_images) if args.workflow else None
        sinks.append(
            JsonlSink(
                predictions_out, with_masks=not args.no_masks_in_json, raw=args.raw, record=record
            )
        )
    if masks_out:
        sinks.append(MasksSink(masks_out))
    sinks = _delivery_sinks(args, specs, sinks, output_dir)
    return Pipeline(config, sinks, model=model), sinks, output_dir


def _workflow_record(bound: Any, annotator: Any, images: bool) -> Any:
    """The JSONL record maker of a workflow run: its `outputs` by name, as Roboflow has them."""
    from stream_pipeline.workflow.outputs import workflow_record

    def record(prediction: dict[str, Any], result: Any) -> dict[str, Any]:
        frame = result.frame

        def visualization() -> Any:
            return annotator.annotate(frame.rgb, result.class_map, result.present_class_ids)

        has_pixels = frame is not None and frame.rgb is not None
        return workflow_record(bound, prediction, visualization if has_pixels else None, images)

    return record


def _cmd_run(args: argparse.Namespace) -> int:
    from stream_pipeline.engine.status import EngineStatus
    from stream_pipeline.runner import run_pipeline, run_with_loop

    pipeline, _, output_dir = _build_run(args)
    if output_dir is not None and not args.quiet and not args.json_status:
        sys.stderr.write(f"writing outputs to {output_dir}/\n")
    status = run_with_loop(lambda: run_pipeline(pipeline, args.json_status, args.quiet))
    assert isinstance(status, EngineStatus)
    failed = [s for s in status.sources if s.state == "failed"]
    return 1 if failed and len(failed) == len(status.sources) else 0


def _cmd_serve(args: argparse.Namespace) -> int:
    from stream_pipeline.engine import Thresholds
    from stream_pipeline.logs import configure
    from stream_pipeline.model import load_model
    from stream_pipeline.server.serve import ServeConfig, serve
    from stream_pipeline.sources import SourceSpec, parse_source_arg

    configure(args.log_format)  # before the model loads: its warnings are formatted too
    env = read_environment()
    if args.custom_confidence is not None and args.confidence_mode not in (None, "custom"):
        raise ConfigError("--custom-confidence only applies with --confidence-mode custom")
    if not 0.0 <= args.opacity <= 1.0:
        raise ConfigError(f"--opacity must be in [0, 1], got {args.opacity}")
    mode = args.confidence_mode or ("custom" if args.custom_confidence is not None else "best")
    # realtime: a file or synthetic stream is paced like a camera, so its preview plays live.
    specs = tuple(
        SourceSpec(url=url, id=sid, realtime=True)
        for sid, url in (parse_source_arg(arg, i) for i, arg in enumerate(args.source))
    )
    config = ServeConfig(
        host=args.host,
        port=args.port,
        token=args.token or env.token,
        sources=specs,
        ice_servers=tuple(args.ice_server),
        thresholds=Thresholds(mode, args.custom_confidence),
        device=args.device,
        threads=args.threads,
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        opacity=args.opacity,
        jobs=_jobs_config(args),
        log_format=args.log_format,
    )
    config.validate()  # before the model loads: a missing token fails at once
    names = tuple(n.strip() for n in args.class_names.split(",")) if args.class_names else None
    size = None
    if args.input_size:
        w, _, h = args.input_size.lower().partition("x")
        if not (w.isdigit() and h.isdigit() and int(w) > 0 and int(h) > 0):
            raise ConfigError(f"--input-size wants WxH, got {args.input_size!r}")
        size = (int(w), int(h))
    model = load_model(
        args.model or "default",
        device=args.device,
        threads=args.threads,
        class_names=names,
        input_size=size,
        registry=env.models_dir,
        api_key=args.api_key,
        offline=True if args.offline else None,
    )
    return serve(config, model)


def _jobs_config(args: argparse.Namespace) -> Any:
    """The jobs service's config from ``--state-dir``/``--output-dir`` (None: no jobs API)."""
    if args.max_sources is not None and args.max_sources < 1:
        raise ConfigError(f"--max-sources must be ≥ 1, got {args.max_sources}")
    if args.state_dir is None:
        if args.output_dir is not None or args.jobs is not None or args.ray is not None:
            raise ConfigError(
                "--output-dir, --jobs and --ray are for the jobs API: give --state-dir too"
            )
        return None
    from stream_pipeline.jobs.declare import load_jobs_file
    from stream_pipeline.jobs.supervisor import JobsConfig

    declared = load_jobs_file(Path(args.jobs)) if args.jobs else ()
    return JobsConfig(
        Path(args.state_dir),
        Path(args.output_dir or "outputs"),
        declared=declared,
        max_sources=args.max_sources,
        cluster=_ray_config(args),
    )


def _ray_config(args: argparse.Namespace) -> Any:
    """``--ray``'s settings (None without it); Ray itself is imported only once serving."""
    if args.ray is None:
        return None
    import os

    from stream_pipeline.cluster.config import RayConfig

    if os.environ.get("RAY_AUTH_MODE") != "token":
        raise ConfigError(
            "--ray: set RAY_AUTH_MODE=token (and RAY_AUTH_TOKEN) for the service, as for every "
            "node of the cluster: an unauthenticated cluster runs whatever reaches its ports"
        )
    config = RayConfig(
        address=args.ray,
        namespace=args.ray_namespace,
        max_sources=args.ray_max_sources,
        utilization=args.ray_utilization,
        liveness_timeout=args.ray_liveness_timeout,
        fetch_url=args.ray_controller_url,  # None: this service's bound address (serve.py)
        token=args.token or read_environment().token,
    )
    try:
        config.validate()
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return config


def _cmd_models(args: argparse.Namespace) -> int:
    from stream_pipeline.model.registry import import_package, list_packages, resolve_package
    from stream_pipeline.model.session import OnnxSession

    env = read_environment()
    registry = env.models_dir
    if args.models_command == "list":
        from stream_pipeline.hub.cache import hosted_source
        from stream_pipeline.model.roboflow import detect_format

        print(f"registry: {registry}")
        for model_id, path in list_packages(registry):
            hosted = hosted_source(path)
            source = (
                f"roboflow {hosted.get('api_host')} (pulled {hosted.get('pulled_at')})"
                if hosted
                else f"local ({detect_format(path)})"
            )
            print(f"{model_id}\t{source}\t{path}")
        return 0
    if args.models_command == "pull":
        from stream_pipeline.hub.cache import pull
        from stream_pipeline.model.registry import is_model_id

        if not is_model_id(args.model):
            raise ConfigError(f"models pull needs project/version, got {args.model!r}")
        path = pull(args.model, registry, args.api_key or env.api_key, env.api_host, env.offline)
        print(f"{args.model}\t{path}")
        return 0
    if args.models_command == "show":
        package = resolve_package(args.model, registry)
        session = OnnxSession(package, device="cpu", threads=1)
        info = {
            "model_id": package.model_id,
            "format": package.source,
            "path": str(package.onnx_path.parent),
            "class_names": list(package.class_names),
            "input": asdict(package.input),
            "activation": package.activation,
            "default_confidence": package.default_confidence,
            "recommended": {
                "confidence": package.recommended.confidence,
                "per_class_confidence": dict(package.recommended.per_class_confidence),
            },
            "onnx": {
                "input": session.input_name,
                "output_channels": session.channels,
                "static_batch": session.static_batch,
            },
        }
        print(json.dumps(info, indent=2))
        return 0
    if args.models_command == "import":
        model_id, dest = import_package(Path(args.path), registry, args.id, args.replace)
        print(f"imported {model_id} into {dest}")
        return 0
    _fail("models needs a command: list, pull, show or import")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``stream-pipeline`` command."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        if args.command == "run":
            return _cmd_run(args)
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "jobs":
            return run_jobs_command(args)
        return _cmd_models(args)
    except StreamPipelineError as exc:
        _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
