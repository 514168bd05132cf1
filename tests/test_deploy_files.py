"""docker/ and the systemd unit agree with the CLI they run.

No Docker daemon here: nothing is built. These read the compose files and Dockerfiles, parse their
commands with ``serve``'s own parser, run their health check command against a real service, and
give the unit to ``systemd-analyze verify``. docs/deploy.md says what this does not cover.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from stream_pipeline.cli import _parser
from stream_pipeline.jobs.declare import load_jobs_file
from tests.jobs.conftest import free_socket
from tests.jobs.processes import Serve

ROOT = Path(__file__).resolve().parent.parent
DOCKER = ROOT / "docker"
UNIT = ROOT / "docs" / "examples" / "stream-pipeline.service"


def compose(name: str = "compose.yaml") -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DOCKER / name).read_text())
    return data


def serve_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed as ``stream-pipeline serve`` flags (argparse exits 2 on a wrong one)."""
    return _parser().parse_args(["serve", *argv])


def dockerfile(name: str) -> dict[str, str]:
    """The last value of each instruction of ``docker/<name>`` (continuations joined)."""
    text = re.sub(r"\\\n\s*", " ", (DOCKER / name).read_text())
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out[word.upper()] = rest if word.upper() != "RUN" else out.get("RUN", "") + rest + "\n"
    return out


def mounted(volumes: list[str], path: str) -> bool:
    return any(Path(path).is_relative_to(v.split(":")[1]) for v in volumes)


def seconds(duration: str) -> float:
    value, unit = re.fullmatch(r"(\d+)(s|m)", duration).groups()  # type: ignore[union-attr]
    return float(value) * (60 if unit == "m" else 1)


def test_the_compose_service_runs_serve_with_its_volumes_and_jobs_file() -> None:
    services = compose()["services"]
    assert set(services) == {"stream-pipeline", "mosquitto", "mediamtx"}
    svc = services["stream-pipeline"]
    args = serve_args(svc["command"])
    assert args.host == "0.0.0.0"
    assert f"http://127.0.0.1:{args.port}/healthz" in " ".join(svc["healthcheck"]["test"])
    assert svc["ports"] == [f"{args.port}:{args.port}"]
    assert mounted(svc["volumes"], args.state_dir) and mounted(svc["volumes"], args.output_dir)
    # Beyond loopback the token is required: compose refuses to start without it.
    assert svc["environment"]["STREAM_PIPELINE_TOKEN"].startswith("${STREAM_PIPELINE_TOKEN:?")
    (jobs,) = [v for v in svc["volumes"] if v.split(":")[1] == args.jobs]
    specs = load_jobs_file(DOCKER / jobs.split(":")[0])
    urls = [s.url for spec in specs for s in spec.sources] + [
        getattr(k, "url", "") for spec in specs for k in spec.sinks
    ]
    assert any(u.startswith("rtsp://mediamtx:8554/") for u in urls)
    assert any(u.startswith("mqtt://mosquitto:1883/") for u in urls)
    assert svc["init"] is True and (DOCKER / Path(svc["build"]["dockerfile"]).name).is_file()
    for name in ("mosquitto", "mediamtx"):
        assert services[name]["healthcheck"]["test"][0] == "CMD"
        assert svc["depends_on"][name] == {"condition": "service_healthy"}
    assert "listener 1883" in (DOCKER / "mosquitto.conf").read_text().splitlines()


def test_the_gpu_override_runs_the_same_serve_on_cuda() -> None:
    cpu = compose()["services"]["stream-pipeline"]
    gpu = compose("compose.gpu.yaml")["services"]["stream-pipeline"]
    cpu_args, gpu_args = serve_args(cpu["command"]), serve_args(gpu["command"])
    assert gpu_args.device == "cuda" and cpu_args.device == "auto"
    assert {**vars(gpu_args), "device": "auto"} == vars(cpu_args)
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


@pytest.mark.parametrize(
    ("name", "install"), [("Dockerfile", "pip install /src "), ("Dockerfile.gpu", '"/src[gpu]"')]
)
def test_each_image_installs_the_package_and_runs_serve_as_compose_does(
    name: str, install: str
) -> None:
    image = dockerfile(name)
    entry, cmd = json.loads(image["ENTRYPOINT"]), json.loads(image["CMD"])
    assert entry == ["stream-pipeline", "serve"]
    args = serve_args(cmd)
    compose_args = serve_args(compose()["services"]["stream-pipeline"]["command"])
    assert (args.host, args.port, args.state_dir, args.output_dir) == (
        compose_args.host,
        compose_args.port,
        compose_args.state_dir,
        compose_args.output_dir,
    )
    assert install in image["RUN"] and "python -m stream_pipeline.warmup" in image["RUN"]
    # What the build needs: pyproject.toml names README.md as the readme.
    assert "pyproject.toml README.md /src/" in (DOCKER / name).read_text()
    assert image["USER"] not in ("root", "0")
    check = json.loads(image["HEALTHCHECK"].partition("CMD ")[2])
    assert ["CMD", *check] == compose()["services"]["stream-pipeline"]["healthcheck"]["test"]


def test_the_health_check_command_passes_on_a_serving_service_and_fails_without_one(
    tmp_path: Path, tiny_package: Path
) -> None:
    test = compose()["services"]["stream-pipeline"]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    port = serve_args(compose()["services"]["stream-pipeline"]["command"]).port
    serve = Serve(tmp_path / "state", tmp_path / "out", tiny_package)
    try:
        # The same command, pointed at the test service's port instead of the container's.
        here = test[3].replace(f":{port}/", f":{serve.url.rsplit(':', 1)[1]}/")
        ok = subprocess.run([sys.executable, "-c", here], capture_output=True, timeout=30)
        assert ok.returncode == 0, ok.stderr
    finally:
        serve.kill()
    sock = free_socket()
    nobody = test[3].replace(f":{port}/", f":{sock.getsockname()[1]}/")
    sock.close()
    down = subprocess.run([sys.executable, "-c", nobody], capture_output=True, timeout=30)
    assert down.returncode != 0


def unit_values() -> dict[str, str]:
    text = UNIT.read_text().replace("\\\n", " ")
    pairs = (line.partition("=") for line in text.splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, _, v in pairs if not k.startswith("#")}


def test_the_systemd_unit_runs_serve_and_stops_it_as_compose_does() -> None:
    unit = unit_values()
    exe, command, *argv = unit["ExecStart"].split()
    assert exe.endswith("/bin/stream-pipeline") and command == "serve"
    args = serve_args(argv)
    assert args.host == "0.0.0.0"
    assert args.state_dir.startswith(f"/var/lib/{unit['StateDirectory']}/")
    assert args.output_dir in unit["ReadWritePaths"].split()
    assert unit["KillMode"] == "mixed" and unit["KillSignal"] == "SIGTERM"
    grace = compose()["services"]["stream-pipeline"]["stop_grace_period"]
    assert float(unit["TimeoutStopSec"]) == seconds(grace)
    assert unit["Restart"] == "always" and unit["RestartPreventExitStatus"] == "2"
    assert unit["EnvironmentFile"].startswith("/etc/")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    # verify checks that ExecStart exists: point it at this environment's stream-pipeline.
    here = Path(sys.executable).parent / "stream-pipeline"
    unit = tmp_path / "stream-pipeline.service"
    unit.write_text(UNIT.read_text().replace("/opt/stream-pipeline/bin/stream-pipeline", str(here)))
    res = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    complaints = [line for line in res.stderr.splitlines() if str(unit) in line]
    assert res.returncode == 0 and not complaints, res.stderr
