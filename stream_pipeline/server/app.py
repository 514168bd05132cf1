"""The one ASGI app: WHIP ingest, WHEP preview, the page at ``/``, ``/streams``, ``/healthz``.

``create_app(engine, settings)`` builds it around a running :class:`~stream_pipeline.engine.Engine`
it does not own: the app's lifespan ends every WebRTC session and preview it made, the caller
closes the engine (``serve.py`` does both). The jobs service adds its routes to this app.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, HTTPException, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles

from stream_pipeline.consumers.visualize import MaskAnnotator
from stream_pipeline.engine import Engine, Thresholds
from stream_pipeline.model.segmenter import SegmentationModel
from stream_pipeline.server.auth import check_token
from stream_pipeline.server.preview import MAX_PREVIEW_HEIGHT, Previews
from stream_pipeline.server.signalling import SessionRegistry

__all__ = ["Server", "ServerSettings", "create_app"]

STATIC = Path(__file__).with_name("static")


@dataclass(frozen=True, slots=True)
class ServerSettings:
    """How the app serves: the model and thresholds of WHIP streams, auth, ICE, the preview.

    ``token``: the bearer token WHIP, WHEP and ``/streams`` require (``None``: none, for
    loopback). ``ice_servers``: STUN/TURN URLs for real networks. ``connect_timeout``: seconds a
    session may take to connect before it is ended (a failed ICE negotiation). ``peer_timeout``:
    seconds without RTCP or media from a connected peer before its session ends (it vanished;
    encoders send RTCP every 5 s or so, ICE consent would notice only after 30 s).
    """

    model: SegmentationModel
    thresholds: Thresholds = field(default_factory=Thresholds)
    token: str | None = field(default=None, repr=False)
    ice_servers: tuple[str, ...] = ()
    connect_timeout: float = 15.0
    peer_timeout: float = 20.0
    opacity: float = 0.5
    max_preview_height: int = MAX_PREVIEW_HEIGHT
    job: str = "whip"
    jobs: Any = None  # a JobsConfig: the jobs service's routes join the app (docs/jobs.md)


class Server:
    """What the routes share: the engine, the settings, the sessions and the previews."""

    def __init__(self, engine: Engine, settings: ServerSettings) -> None:
        self.engine = engine
        self.settings = settings
        package = settings.model.package
        self.annotator = MaskAnnotator.for_classes(
            settings.model.class_names, package.colors, package.background_id, settings.opacity
        )
        self.sessions = SessionRegistry(settings.connect_timeout, settings.peer_timeout)
        self.previews = Previews(
            engine,
            self.annotator,
            package.background_id,
            self._stream_ended,
            settings.max_preview_height,
        )
        self.pending_whip: set[str] = set()  # WHIP stream ids being negotiated right now

    def authorize(self, request: Request) -> None:
        """401 unless the request carries the token (when one is set)."""
        check_token(request, self.settings.token)

    def _stream_ended(self, stream: str) -> None:
        for session in self.sessions.of_stream("whep", stream):
            self.sessions.end_soon(session)

    def stream_ids(self) -> set[str]:
        """Ids of the engine's attached sources."""
        return {s.id for s in self.engine.status().sources}

    def classes(self) -> list[dict[str, Any]]:
        """The legend: each class's id, name and overlay colour."""
        palette = self.annotator.palette
        return [
            {"id": cid, "name": name, "color": "#{:02x}{:02x}{:02x}".format(*palette[cid])}
            for cid, name in enumerate(self.annotator.class_names)
            if cid != self.annotator.background_id
        ]

    async def aclose(self) -> None:
        """End every session, then every preview."""
        await self.sessions.aclose()
        await self.previews.aclose()


def server_of(request: Request) -> Server:
    """The :class:`Server` behind ``request``'s app."""
    server: Server = request.app.state.server
    return server


def add_session_routes(router: APIRouter, kind: str) -> None:
    """``DELETE`` (end the session) and ``PATCH`` (trickle ICE: 405) on ``/{kind}/{stream}/{id}``;
    the same for WHIP and WHEP."""
    path = f"/{kind}/{{stream}}/{{session_id}}"

    @router.delete(path)
    async def end_session(stream: str, session_id: str, request: Request) -> Response:
        server = server_of(request)
        server.authorize(request)
        session = server.sessions.get(kind, stream, session_id)
        if session is None:
            raise HTTPException(404, f"no {kind.upper()} session {session_id!r} on {stream!r}")
        await server.sessions.end(session)
        return Response(status_code=200)

    @router.patch(path)
    async def trickle(stream: str, session_id: str, request: Request) -> Response:
        # RFC 9725 lets a server refuse trickle ICE: the answer carries all its candidates.
        server_of(request).authorize(request)
        raise HTTPException(
            405, "trickle ICE is not supported: send every candidate in the offer",
            headers={"Allow": "DELETE"},
        )  # fmt: skip


def create_app(engine: Engine, settings: ServerSettings) -> FastAPI:
    """The app around ``engine`` (running, not owned); see the module docstring."""
    from stream_pipeline.server import whep, whip

    server = Server(engine, settings)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await server.aclose()

    app = FastAPI(title="stream_pipeline", lifespan=lifespan)
    app.state.server = server
    app.include_router(whip.router)
    app.include_router(whep.router)
    if settings.jobs is not None:
        from stream_pipeline.jobs.routes import install_jobs

        install_jobs(app, engine, settings.jobs, settings.token)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness: answers while the server runs; says whether the engine is healthy."""
        error = engine.error
        return {"status": "ok" if error is None else "failed", "error": str(error or "") or None}

    @app.get("/streams")
    async def streams(request: Request) -> dict[str, Any]:
        """Running streams (for the page's picker) and the legend of class colours."""
        server.authorize(request)
        status = engine.status()
        return {
            "streams": [
                {
                    "id": s.id,
                    "state": s.state,
                    "fps": s.fps,
                    "url": s.url,
                    "viewers": _viewers(server, s.id),
                }
                for s in status.sources
            ],
            "classes": server.classes(),
        }

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(HTTPException)
    async def worded(request: Request, exc: HTTPException) -> JSONResponse:
        # One shape for every 4xx: {"error": "<what was wrong>"}, headers (WWW-Authenticate) kept.
        return JSONResponse({"error": str(exc.detail)}, exc.status_code, headers=exc.headers)

    return app


def _viewers(server: Server, stream: str) -> int:
    preview = server.previews.get(stream)
    return len(preview.viewers) if preview is not None else 0
