"""Decoding in a child process: the same frames as in-process decoding, and a decoder that
crashes, is killed or hangs is restarted and counted while every frame of a file arrives once."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stream_pipeline.errors import SourceError, SourceOpenError
from stream_pipeline.frames import Frame
from stream_pipeline.sources import SourceSpec, make_source
from stream_pipeline.sources.isolated import IsolatedSource
from tests.sources import faulty  # noqa: F401  (registers the faulty:// scheme)
from tests.sources.conftest import drain
from tests.sources.procs import alive, decoder_pids, descendants
from tests.support.media import write_video

pytestmark = pytest.mark.timeout(60)


def _wait(predicate: Callable[[], bool], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_video(tmp_path_factory.mktemp("clip") / "clip.mp4", frames=90)


def test_frames_equal_in_process_decoding(clip: Path) -> None:
    spec = SourceSpec(str(clip), id="clip")
    here = drain(make_source(spec))  # type: ignore[arg-type]
    isolated = IsolatedSource(spec)
    there = drain(isolated)
    assert len(here.ids) == 90
    assert there.ids == here.ids == list(range(90))
    assert there.pts == here.pts
    assert all(np.array_equal(a, b) for a, b in zip(here.pixels, there.pixels, strict=True))
    counts = isolated.status.snapshot()
    assert (counts.state.value, counts.frames, counts.total_frames) == ("finished", 90, 90)
    assert counts.decoder_restarts == 0


class SignalAt:
    """An ``on_frame`` for :func:`drain`: sends ``sig`` to the decoder child after frame ``n``."""

    def __init__(self, source: IsolatedSource, n: int, sig: signal.Signals) -> None:
        self.source, self.n, self.sig = source, n, sig
        self.pids: list[int] = []

    def __call__(self, n: int, frame: Frame) -> None:
        if n == self.n:
            pid = self.source.child_pid
            assert pid is not None
            os.kill(pid, self.sig)
            self.pids.append(pid)


def test_sigkill_mid_file_restarts_and_every_frame_arrives_once(clip: Path) -> None:
    spec = SourceSpec(str(clip), id="clip")
    here = drain(make_source(spec))  # type: ignore[arg-type]
    source = IsolatedSource(spec)
    # The consumer is not reading then: the child is at most a ring and a few slots ahead.
    kill = SignalAt(source, 20, signal.SIGKILL)
    there = drain(source, kill)
    assert kill.pids and not alive(kill.pids[0])
    assert there.ids == list(range(90))
    assert there.pts == here.pts
    assert all(np.array_equal(a, b) for a, b in zip(here.pixels, there.pixels, strict=True))
    counts = source.status.snapshot()
    assert counts.decoder_restarts == 1
    assert counts.state.value == "finished"
    assert counts.last_error is not None and "SIGKILL" in counts.last_error


@pytest.mark.parametrize(
    ("fault", "at", "said"),
    [
        ("segv", 12, "killed by SIGSEGV"),
        ("hang", 12, "no progress for 1 s"),
        ("hang", 0, "no progress for 1 s"),  # before its first frame: no slot pool yet
    ],
)
def test_a_crashed_or_hung_decoder_is_restarted(
    tmp_path: Path, fault: str, at: int, said: str
) -> None:
    once = tmp_path / "once"
    once.touch()
    spec = SourceSpec(f"faulty://{fault}?frames=30&at={at}&once={once}", id="f")
    source = IsolatedSource(spec, hang_timeout=1.0)
    got = drain(source)
    assert got.ids == list(range(30))
    assert [int(p[0, 0, 0]) for p in got.pixels] == list(range(30))  # frame i is frame i
    counts = source.status.snapshot()
    assert counts.decoder_restarts == 1
    assert counts.last_error is not None and said in counts.last_error


def test_a_decoder_that_always_crashes_fails_the_source() -> None:
    source = IsolatedSource(SourceSpec("faulty://segv?frames=30&at=0", id="f"))
    with pytest.raises(SourceError, match=r"source f: the decoder process was killed by SIGSEGV"):
        drain(source)
    assert source.status.snapshot().decoder_restarts == 5


def test_a_stopped_decoder_counts_as_hung(clip: Path) -> None:
    source = IsolatedSource(SourceSpec(str(clip), id="clip"), hang_timeout=1.0)
    stop = SignalAt(source, 10, signal.SIGSTOP)
    got = drain(source, stop)
    assert got.ids == list(range(90))
    assert source.status.snapshot().decoder_restarts == 1
    assert stop.pids and not alive(stop.pids[0])


def test_a_live_source_reconnects_after_a_kill() -> None:
    spec = SourceSpec("synthetic://street?frames=0&realtime=1&fps=30&width=64&height=48", id="l")
    source = IsolatedSource(spec)
    assert spec.live
    # A blocking ring here: a slow consumer on a loaded machine must not make ids skip.
    got = drain(source, SignalAt(source, 10, signal.SIGKILL), limit=30)
    assert got.ids == list(range(30))  # ids go on across the restart
    assert all(b > a for a, b in zip(got.pts, got.pts[1:], strict=False))  # and time too
    assert source.status.snapshot().decoder_restarts == 1


def test_bigger_frames_get_a_new_pool_while_the_old_frames_live_on() -> None:
    source = IsolatedSource(SourceSpec("faulty://grow?frames=30&at=12", id="g"))
    kept: list[np.ndarray] = []

    def keep_10_and_11(n: int, frame: Frame) -> None:
        if frame.meta.frame_id in (10, 11):
            assert frame.rgb is not None
            kept.append(frame.rgb)  # views of the first pool, held past its retirement

    got = drain(source, keep_10_and_11)
    assert got.ids == list(range(30))
    assert [p.shape for p in got.pixels] == [(24, 32, 3)] * 12 + [(48, 64, 3)] * 18
    assert all((p == i).all() for i, p in enumerate(got.pixels))
    assert [int(k[0, 0, 0]) for k in kept] == [10, 11]  # the retired pool's pixels are intact


class SlowConsumer:
    """An ``on_frame`` that keeps the last ``hold`` frames alive, then pauses and lets them go,
    until ``until()``."""

    def __init__(self, hold: int, until: Callable[[], bool]) -> None:
        self.hold, self.until = hold, until
        self.held: list[Frame] = []

    def __call__(self, n: int, frame: Frame) -> bool:
        self.held.append(frame)
        if len(self.held) == self.hold:
            time.sleep(0.1)  # every slot is held here: the child waits (file) or drops (live)
            self.held.clear()
        return self.until()


def test_a_live_source_drops_when_every_slot_is_taken() -> None:
    spec = SourceSpec("synthetic://street?frames=0&realtime=1&fps=60&width=64&height=48", id="l")
    source = IsolatedSource(spec, slots=3)
    got = drain(source, SlowConsumer(3, lambda: source.status.snapshot().dropped >= 3))
    assert got.ids == list(range(len(got.ids)))  # what arrives is numbered without gaps
    assert source.status.snapshot().decoder_restarts == 0


def test_a_file_source_waits_for_slots_and_loses_nothing(clip: Path) -> None:
    source = IsolatedSource(SourceSpec(str(clip), id="clip"), slots=3)
    got = drain(source, SlowConsumer(3, lambda: False))
    assert got.ids == list(range(90))
    assert source.status.snapshot().dropped == 0


def test_a_missing_file_fails_at_open_with_the_in_process_message(tmp_path: Path) -> None:
    spec = SourceSpec(str(tmp_path / "nope.mp4"), id="gone")
    with pytest.raises(SourceOpenError) as here:
        make_source(spec).open()
    source = IsolatedSource(spec)
    with pytest.raises(SourceOpenError) as there:
        source.open()
    assert str(there.value) == str(here.value) == f"source gone: no such file: {spec.url}"
    counts = source.status.snapshot()
    assert counts.state.value == "failed" and counts.last_error == str(here.value)
    assert source.child_pid is None
    source.close()


def test_a_file_that_is_not_a_video_fails_at_open(tmp_path: Path) -> None:
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n")
    spec = SourceSpec(str(text), id="t")
    with pytest.raises(SourceOpenError) as here:
        make_source(spec).open()
    with pytest.raises(SourceOpenError) as there:
        IsolatedSource(spec).open()
    assert str(there.value) == str(here.value)
    assert "\n" not in str(there.value)


def _mapped_slots() -> int:
    maps = Path("/proc/self/maps").read_text()
    return sum(1 for line in maps.splitlines() if "stream-pipeline-slots" in line)


def _run_part_of(spec: SourceSpec) -> int:
    """Take 20 frames of ``spec`` from a decoder child, then stop; the child's pid."""
    source = IsolatedSource(spec)
    seen: list[int] = []

    def look(n: int, frame: Frame) -> None:
        if n == 5:
            pid = source.child_pid
            assert pid is not None and pid in decoder_pids()
            seen.append(pid)

    drain(source, look, limit=20)
    assert seen and source.child_pid is None
    return seen[0]


def test_close_leaves_no_process_descriptor_or_shared_memory(clip: Path) -> None:
    # The forkserver (and multiprocessing's resource tracker) start once and stay: warm them.
    drain(IsolatedSource(SourceSpec(str(clip), id="warm", max_frames=5)))
    gc.collect()
    processes, fds = descendants(), len(os.listdir("/proc/self/fd"))
    shm = set(os.listdir("/dev/shm"))
    for i in range(5):
        pid = _run_part_of(SourceSpec(str(clip), id=f"c{i}"))
        _wait(lambda: not alive(pid))  # noqa: B023  (called before the next turn)
    gc.collect()
    assert not decoder_pids()
    assert descendants() <= processes
    assert len(os.listdir("/proc/self/fd")) <= fds
    assert set(os.listdir("/dev/shm")) <= shm
    assert _mapped_slots() == 0


def test_no_decoder_outlives_a_killed_parent_nor_imports_its_main(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, threading, time
        from pathlib import Path
        from stream_pipeline.buffer import RingBuffer
        from stream_pipeline.sources import SourceSpec
        from stream_pipeline.sources.isolated import IsolatedSource

        if __name__ == "__mp_main__":  # a decoder child importing this main module again
            (Path(sys.argv[1]) / "main-imported").touch()
        if __name__ == "__main__":
            url = "synthetic://street?frames=0&realtime=1&width=64&height=48"
            source = IsolatedSource(SourceSpec(url, id="l"))
            source.open()
            ring = RingBuffer(8, "drop_oldest")
            threading.Thread(target=source.run, args=(ring, threading.Event())).start()
            while ring.statistics().put < 3:
                time.sleep(0.02)
            print(source.child_pid, flush=True)
            time.sleep(600)
        """
    )
    (tmp_path / "parent.py").write_text(script)
    parent = subprocess.Popen(
        [sys.executable, str(tmp_path / "parent.py"), str(tmp_path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parents[2],
    )
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.kill()
        parent.wait(10)
        _wait(lambda: not alive(child))
        # The service's main (stream_pipeline.cli: onnxruntime) is not imported again there.
        assert not (tmp_path / "main-imported").exists()
    finally:
        parent.kill()
        parent.wait(10)
