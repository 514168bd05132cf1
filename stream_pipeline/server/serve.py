"""``stream-pipeline serve``: the app on uvicorn (uvloop where installed), with its engine and the
``--source`` streams running from the start, until SIGINT or SIGTERM.

Startup: load nothing on the loop (the CLI loads the model), open the engine, add the sources
(a camera that cannot be opened is an error before anything listens), bind the socket (a port in
use is a :class:`ConfigError`), serve. Shutdown: uvicorn stops taking requests, the app's
lifespan ends every WebRTC session, then the engine stops every source and worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stream_pipeline.config import read_environment
from stream_pipeline.engine import Engine, HostNeeds, Thresholds
from stream_pipeline.errors import ConfigError
from stream_pipeline.logs import LOG_FORMATS, LogFormat, configure
from stream_pipeline.model.segmenter import SegmentationModel
from stream_pipeline.server.app import ServerSettings, create_app
from stream_pipeline.server.auth import is_loopback
from stream_pipeline.server.signalling import ice_server
from stream_pipeline.sources import SourceSpec

__all__ = ["SERVE_JOB", "ServeConfig", "serve", "serve_forever"]

SERVE_JOB = "serve"  # the job of the --source streams

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ServeConfig:
    """Everything ``serve`` needs, built by the CLI."""

    host: str = "127.0.0.1"
    port: int = 8080
    token: str | None = field(default=None, repr=False)
    sources: tuple[SourceSpec, ...] = ()
    ice_servers: tuple[str, ...] = ()
    thresholds: Thresholds = field(default_factory=Thresholds)
    device: str = "auto"
    threads: int | None = None
    max_batch: int = 4
    max_wait_ms: float = 5.0
    opacity: float = 0.5
    jobs: Any = None  # a JobsConfig (--state-dir, --output-dir): serve the jobs API too
    log_format: LogFormat = "text"  # stderr: text, or one JSON object a line

    def validate(self) -> None:
        """Raise :class:`ConfigError` for a configuration that must not run."""
        if not is_loopback(self.host) and not self.token:
            raise ConfigError(
                f"serve: a token is required when listening on {self.host} (beyond loopback): "
                "give --token or set STREAM_PIPELINE_TOKEN"
            )
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"--port must be in 0..65535, got {self.port}")
        for spec in self.sources:
            spec.validate()
        for url in self.ice_servers:
            try:
                ice_server(url)
            except ValueError as exc:
                raise ConfigError(f"--ice-server: {exc}") from None
        ids = [s.id for s in self.sources]
        if len(set(ids)) != len(ids):
            raise ConfigError(f"--source ids must differ, got {ids}")
        if self.log_format not in LOG_FORMATS:
            raise ConfigError(f"--log-format must be text or json, got {self.log_format!r}")


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # listening before "serving on" is printed: a client may connect at once
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    return sock


def _server(app: Any) -> Any:
    """A uvicorn server whose SIGINT/SIGTERM only ask it to stop: uvicorn's own handling raises
    the signal again once it has stopped, which would kill the process before the engine and the
    sources are closed."""
    import uvicorn

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            loop = asyncio.get_running_loop()
            signals = (signal.SIGINT, signal.SIGTERM)
            for sig in signals:
                loop.add_signal_handler(sig, self.handle_exit, sig, None)
            try:
                yield
            finally:
                for sig in signals:
                    loop.remove_signal_handler(sig)

    # An open event stream (GET /jobs/{id}/results) never ends by itself: without a bound,
    # uvicorn would wait for it forever on SIGTERM, before the app's shutdown even starts.
    # log_config=None: uvicorn's records go to the root handler (logs.configure), in its format.
    config = uvicorn.Config(
        app,
        lifespan="on",
        log_level="warning",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    return _Server(config)


async def serve_forever(config: ServeConfig, model: SegmentationModel) -> None:
    """Run the server until uvicorn is told to stop (SIGINT/SIGTERM); see the module docstring."""
    config.validate()
    async with Engine(
        device=config.device,
        threads=config.threads,
        max_batch=config.max_batch,
        max_wait_ms=config.max_wait_ms,
        registry=read_environment().models_dir,  # jobs name models by registry id
    ) as engine:
        for spec in config.sources:
            await engine.add_source(
                spec, model=model, thresholds=config.thresholds, job=SERVE_JOB,
                needs=HostNeeds(pixels=True),
            )  # fmt: skip
        sock = _bind(config.host, config.port)
        port = sock.getsockname()[1]
        settings = ServerSettings(
            model=model,
            thresholds=config.thresholds,
            token=config.token,
            ice_servers=config.ice_servers,
            opacity=config.opacity,
            jobs=_with_fetch_url(config.jobs, config.host, port),
        )
        app = create_app(engine, settings)
        server = _server(app)
        shown = f"[{config.host}]" if ":" in config.host else config.host
        line = f"serving on http://{shown}:{port}/ ({len(config.sources)} source(s)); Ctrl-C stops"
        if config.log_format == "json":  # every line of stderr is JSON for a log shipper
            log.info("%s", line)
        else:
            sys.stderr.write(line + "\n")
        try:
            await server.serve(sockets=[sock])
        finally:
            sock.close()


def _with_fetch_url(jobs: Any, host: str, port: int) -> Any:
    """With ``--ray`` and no ``--ray-controller-url``: the actors fetch their assignment from
    the address this service is bound to (a wildcard host: loopback, for actors on this host)."""
    cluster = getattr(jobs, "cluster", None)
    if cluster is None or cluster.fetch_url is not None:
        return jobs
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}"
    return dataclasses.replace(jobs, cluster=dataclasses.replace(cluster, fetch_url=url))


def serve(config: ServeConfig, model: SegmentationModel) -> int:
    """Run :func:`serve_forever` on uvloop (where installed); 0 after a clean stop."""
    from stream_pipeline.runner import run_with_loop

    configure(config.log_format)
    log.setLevel(logging.INFO)  # its "serving on" line, whatever the level of the others
    run_with_loop(lambda: serve_forever(config, model))
    return 0
