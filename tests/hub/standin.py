"""A stand-in for Roboflow's weights API and file storage on loopback (aiohttp, in a thread).

It speaks the wire format of ``shared/reference/roboflow-model-api.md``: ``GET
/models/v1/external/weights?modelId=`` with ``Authorization: Bearer`` answering
``{"status": "ok", "modelMetadata": {..., "modelPackages": [...]}}``, and signed file URLs that
answer ``HEAD`` and ``GET`` with ``Range``. Knobs make it fail the way the real one can.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from aiohttp import web
from onnx import numpy_helper

from tests.support.onnx_models import write_conv_net

KEY = "rf_TEST_KEY_0123456789abcdef"
FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "roboflow" / "packages" / "stretch"


def weights_bytes(tmp: Path, channels: int = 4, extra_floats: int = 0) -> bytes:
    """A valid tiny ONNX network, padded with an unused initializer to be ``extra_floats`` bigger."""
    path = write_conv_net(tmp / f"w{channels}-{extra_floats}.onnx", channels, stride=4)
    if extra_floats:
        model = onnx.load(str(path))
        pad = np.random.default_rng(0).random(extra_floats, dtype=np.float32)
        model.graph.initializer.append(numpy_helper.from_array(pad, "unused_padding"))
        onnx.save(model, str(path))
    return path.read_bytes()


@dataclass
class Hosted:
    """One hosted model: its files and what the metadata says about it."""

    files: dict[str, bytes]
    architecture: str = "deep-lab-v3-plus"
    recommended: dict[str, Any] | None = None  # model level, camelCase
    package_recommended: dict[str, Any] | None = None
    manifest_type: str = "onnx-model-package-v1"
    trusted: bool = True


def hosted_from_fixture(weights: bytes, **kw: Any) -> Hosted:
    files = {n: (FIXTURE / n).read_bytes() for n in ("class_names.txt", "inference_config.json")}
    return Hosted({**files, "weights.onnx": weights}, **kw)


@dataclass
class StandIn:
    """The server. ``requests`` records (method, path with query, headers) of every request."""

    models: dict[str, Hosted]
    status: int | None = None  # answer the weights API with this status instead
    wrong_key_status: int = 401
    delay_s: float = 0.0  # before answering the weights API (timeouts)
    bad_md5: set[str] = field(default_factory=set)
    throttle_s: float = 0.0  # per 64 KiB chunk of a file body
    ranges: bool = True
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)  # body bytes written, per file name
    url: str = ""

    def _record(self, request: web.Request) -> None:
        self.requests.append((request.method, request.path_qs, dict(request.headers)))

    async def _weights(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.status is not None:
            return web.json_response({"error": "stand-in failure"}, status=self.status)
        if request.headers.get("Authorization") != f"Bearer {KEY}":
            return web.json_response({"error": "unauthorized"}, status=self.wrong_key_status)
        model_id = request.query.get("modelId", "")
        hosted = self.models.get(model_id)
        if hosted is None:
            return web.json_response({"error": "not found"}, status=404)
        files = [
            {
                "fileHandle": name,
                "downloadUrl": f"{self.url}/files/{model_id}/{name}?signature=abc",
                "md5Hash": ("0" * 32) if name in self.bad_md5 else hashlib.md5(data).hexdigest(),
            }
            for name, data in hosted.files.items()
        ]
        package: dict[str, Any] = {
            "type": "external-model-package-v1",
            "packageId": "pkg1onnx",
            "trustedSource": hosted.trusted,
            "modelFeatures": {},
            "memoryProfile": {"peakVramMb": 10},
            "packageFiles": files,
            "packageManifest": {
                "type": hosted.manifest_type,
                "backendType": "onnx",
                "dynamicBatchSize": True,
                "quantization": "fp32",
                "opset": 17,
                "incompatibleProviders": [],
            },
        }
        if hosted.package_recommended is not None:
            package["recommendedParameters"] = hosted.package_recommended
        meta = {
            "type": "external-model-metadata-v1",
            "modelId": model_id,
            "modelArchitecture": hosted.architecture,
            "modelVariant": None,
            "taskType": "semantic-segmentation",
            "modelDependencies": [],
            "recommendedParameters": hosted.recommended,
            "modelLatencyMs": 3.0,
            "nextPage": None,
            "modelPackages": [package],
        }
        return web.json_response({"status": "ok", "modelMetadata": meta})

    async def _file(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        project, version, name = (request.match_info[k] for k in ("p", "v", "name"))
        hosted = self.models.get(f"{project}/{version}")
        if hosted is None or name not in hosted.files or request.query.get("signature") != "abc":
            return web.Response(status=403)
        data = hosted.files[name]
        headers = {"Accept-Ranges": "bytes"} if self.ranges else {}
        if request.method == "HEAD":
            return web.Response(headers={**headers, "Content-Length": str(len(data))})
        start, end, status = 0, len(data) - 1, 200
        spec = request.headers.get("Range", "")
        if self.ranges and spec.startswith("bytes="):
            first, _, last = spec[6:].partition("-")
            start, end, status = int(first), int(last) if last else len(data) - 1, 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start : end + 1]
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        for i in range(0, len(body), 65536):
            await response.write(body[i : i + 65536])
            self.sent[name] = self.sent.get(name, 0) + len(body[i : i + 65536])
            if self.throttle_s:
                await asyncio.sleep(self.throttle_s)
        await response.write_eof()
        return response

    def gets(self, name: str) -> list[str]:
        """The ``Range`` header (or "") of every GET of file ``name``."""
        return [h.get("Range", "") for m, p, h in self.requests if m == "GET" and f"/{name}?" in p]

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> StandIn:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_get("/models/v1/external/weights", self._weights)
            app.router.add_route("*", "/files/{p}/{v}/{name}", self._file)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            host, port = self._runner.addresses[0][:2]
            self.url = f"http://{host}:{port}"
            ready.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="standin-roboflow", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("stand-in server did not start")
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        future.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
