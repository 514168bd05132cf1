"""The HTTP app: WHIP ingest, WHEP preview with a data channel, the page, health. See
``docs/webrtc.md``; ``stream-pipeline serve`` runs it (``serve.py``)."""

from stream_pipeline.server.app import Server, ServerSettings, create_app

__all__ = ["Server", "ServerSettings", "create_app"]
