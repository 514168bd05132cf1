"""scripts/bench_gpu.py's CPU-checkable parts: it imports, parses, prints a table, --help works."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_gpu.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)  # nothing runs on import: no torch, CuPy or GPU needed
    return module


def test_help_runs_without_a_gpu() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "--streams" in done.stdout and "LRASPP" in done.stdout


def test_arguments_and_table() -> None:
    bench = _load()
    args = bench.parse_args(["--streams", "57", "--only", "postprocess", "--skip-tests"])
    assert (args.streams, args.only, args.skip_tests, args.batch) == (57, ["postprocess"], True, 16)
    rows = [
        bench.Row("fused postprocess", 41234.5, "frames/s", "≥ 30,000", True),
        bench.Row("p99", 120.25, "ms", "< 100", False),
        bench.Row("cores", 7.5, "of 16"),
    ]
    table = bench.format_table(rows, "H200, 16 cores").splitlines()
    assert table[0] == "H200, 16 cores"
    assert table[4] == "| fused postprocess | 41,234 frames/s | ≥ 30,000 | ok |"
    assert table[5] == "| p99 | 120 ms | < 100 | **below** |"
    assert table[6] == "| cores | 7.50 of 16 |  |  |"


def test_measurements_run_on_the_host(tmp_path: Path, tiny_package: Path) -> None:
    """The GPU half's code, on numpy and a tiny model: every row is measured, none is made up."""
    from tests.support.media import write_video

    bench = _load()
    post = bench.bench_postprocess(seconds=0.05, be_name="numpy", frame=(64, 32))
    assert [r.unit for r in post] == ["frames/s", "frames/s", "×"] and post[0].value > 0
    pipe = bench.bench_pipeline(tiny_package, 2, seconds=0.2, be_name="numpy", frame_wh=(160, 96))
    assert len(pipe) == 5 and all(r.value > 0 for r in pipe)
    video = write_video(tmp_path / "cam.mp4", frames=15, width=160, height=96, fps=15)
    work = tmp_path / "pkg"
    work.mkdir()
    pkg = work / "tiny"
    pkg.symlink_to(tiny_package, target_is_directory=True)
    rows = {
        r.what.strip(): r for r in bench.bench_streams(pkg, video, 2, 2, 15, device="cpu", fps=15)
    }
    # Every frame is a JSONL line or a counted drop (a cold CPU worker may drop a few at start).
    assert rows["JSONL lines written"].value + rows["dropped (all streams)"].value == 30
    assert rows["JSONL lines written"].value > 0 and rows["p99 arrival → result"].value > 0
