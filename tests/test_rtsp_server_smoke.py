"""The RTSP test camera itself works: PyAV reads it, credentials are enforced, RECORD accepts a push.

Every blocking PyAV call here has a timeout (``timeout=(open_s, read_s)``, see
docs/notes-pyav-rtsp.md) and every test has a pytest-timeout, so nothing can hang.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import av
import av.error
import numpy as np
import pytest

from tests.support import rtsp as rtsp_support
from tests.support.rtsp import RtspServer, ServerFactory

# The fixtures, by name (a conftest that loads tests.support.rtsp as a plugin makes this redundant).
rtsp_server = rtsp_support.rtsp_server
rtsp_server_factory = rtsp_support.rtsp_server_factory

pytestmark = [pytest.mark.rtsp, pytest.mark.timeout(60)]

# Small probe: the first frame comes ~0.1 s after open instead of ~1.9 s (see the notes).
READ_OPTIONS = {"rtsp_transport": "tcp", "probesize": "32", "analyzeduration": "0"}
PASSWORD = "Dummy-P4ss-7"


def read_frames(url: str, count: int) -> list[av.VideoFrame]:
    frames: list[av.VideoFrame] = []
    with av.open(url, options=READ_OPTIONS, timeout=(5.0, 5.0)) as container:
        for frame in container.decode(video=0):
            frames.append(frame)
            if len(frames) == count:
                break
    return frames


def test_reads_live_frames_of_the_configured_size(rtsp_server: RtspServer) -> None:
    frames = read_frames(rtsp_server.url("/cam"), 10)

    assert len(frames) == 10
    assert {(f.width, f.height) for f in frames} == {(640, 360)}
    first = frames[0].to_ndarray(format="rgb24")
    last = frames[-1].to_ndarray(format="rgb24")
    assert first.shape == (360, 640, 3)
    assert not np.array_equal(first, last), "the test picture should move"


def test_two_clients_share_one_mount(rtsp_server_factory: ServerFactory) -> None:
    server = rtsp_server_factory(paths=("/a", "/b"), width=320, height=240)
    with av.open(server.url("/a"), options=READ_OPTIONS, timeout=(5.0, 5.0)) as first:
        one = next(first.decode(video=0))
        two = read_frames(server.url("/a"), 3)
        other = read_frames(server.url("/b"), 3)
    assert (one.width, one.height) == (320, 240)
    assert len(two) == 3 and len(other) == 3


@pytest.mark.parametrize("password", ["wrong-Pw-1", None])
def test_wrong_or_missing_password_is_refused(
    rtsp_server_factory: ServerFactory, password: str | None
) -> None:
    server = rtsp_server_factory(user="alice", password=PASSWORD)
    user = "alice" if password is not None else None

    with pytest.raises(av.error.HTTPUnauthorizedError, match="401 Unauthorized"):
        av.open(server.url("/cam", user, password), options=READ_OPTIONS, timeout=(5.0, 5.0))

    frames = read_frames(server.url("/cam", "alice", PASSWORD), 2)
    assert [(f.width, f.height) for f in frames] == [(640, 360)] * 2


def test_silent_mount_opens_but_never_delivers(rtsp_server_factory: ServerFactory) -> None:
    server = rtsp_server_factory(paths=(), silent_paths=("/dead",))
    started = time.monotonic()
    with (
        pytest.raises(av.error.ExitError),
        av.open(server.url("/dead"), options=READ_OPTIONS, timeout=(2.0, 2.0)) as container,
    ):
        next(container.decode(video=0))
    assert time.monotonic() - started < 15


def push_frames(url: str, count: int, fps: int = 15) -> None:
    """Encode ``count`` moving 320×240 frames with libx264 and push them over RTSP (TCP)."""
    width, height = 320, 240
    with av.open(
        url, "w", format="rtsp", options={"rtsp_transport": "tcp"}, timeout=(5.0, 5.0)
    ) as out:
        stream = out.add_stream(
            "libx264", rate=fps, options={"tune": "zerolatency", "preset": "ultrafast"}
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        image = np.zeros((height, width, 3), np.uint8)
        for i in range(count):
            image[:] = 0
            image[:, (i * 8) % (width - 16) :][:, :16] = 255
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
            time.sleep(1 / fps)  # a live sender: about real time
        for packet in stream.encode(None):
            out.mux(packet)


def test_record_mount_receives_a_pushed_stream(
    rtsp_server_factory: ServerFactory, tmp_path: Path
) -> None:
    recording = tmp_path / "received.mkv"
    server = rtsp_server_factory(paths=(), record_paths=("/push",), record_file=recording)

    push_frames(server.url("/push"), 30)  # 2 s at 15 fps

    assert server.wait_record_end("/push", timeout=10.0) == 30
    assert recording.stat().st_size > 0
    with av.open(str(recording), timeout=(5.0, 5.0)) as container:
        frames = list(container.decode(video=0))
    assert len(frames) == 30
    assert (frames[0].width, frames[0].height) == (320, 240)
    if shutil.which("ffprobe"):
        probe = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-select_streams",
                "v:0",
                "-count_frames",
                "-show_entries",
                "stream=codec_name,nb_read_frames",
                "-of",
                "csv=p=0",
                str(recording),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        assert probe.stdout.strip() == "h264,30"


def test_record_mount_requires_the_password(rtsp_server_factory: ServerFactory) -> None:
    server = rtsp_server_factory(paths=(), record_paths=("/push",), user="bob", password=PASSWORD)
    # PyAV connects on the first mux, not in av.open: the 401 comes from there.
    with pytest.raises(av.error.HTTPUnauthorizedError):
        push_frames(server.url("/push", "bob", "wrong-Pw-2"), 5)
    push_frames(server.url("/push", "bob", PASSWORD), 5)
    assert server.wait_record_end("/push", timeout=10.0) == 5


def test_restart_and_freeze(rtsp_server: RtspServer) -> None:
    port = rtsp_server.port
    rtsp_server.restart()
    assert rtsp_server.port == port
    assert len(read_frames(rtsp_server.url(), 2)) == 2

    with av.open(rtsp_server.url(), options=READ_OPTIONS, timeout=(5.0, 1.0)) as container:
        frames = container.decode(video=0)
        next(frames)
        rtsp_server.freeze()
        started = time.monotonic()
        with pytest.raises(av.error.FFmpegError):
            for _ in frames:
                pass
        assert time.monotonic() - started < 10
    rtsp_server.thaw()
    rtsp_server.stop()
    rtsp_server.stop()  # idempotent
    assert not rtsp_server.running
