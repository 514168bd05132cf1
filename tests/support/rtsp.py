"""A real RTSP camera for tests: starts ``rtsp_server.py`` under the system Python (it has ``gi``).

Use the fixtures from a conftest (see ``rtsp_server`` and ``rtsp_server_factory``) or the class
directly::

    with RtspServer(paths=("/cam",), user="alice", password="secret") as server:
        url = server.url("/cam", user="alice", password="secret")
        server.freeze()   # SIGSTOP: connections stay open, nothing is sent (a stalled camera)
        server.thaw()     # SIGCONT
        server.restart()  # same port: a camera that rebooted
        server.kill()     # SIGKILL: a camera that died (restart() brings it back)

The server prints ``READY <port>`` once it listens; the helper waits for that line with a
timeout, so a test never hangs on a server that does not come up.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import pytest

SYSTEM_PYTHON = "/usr/bin/python3"
SERVER_SCRIPT = Path(__file__).with_name("rtsp_server.py")
_GI_CHECK = (
    "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); "
    "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
    "import sys; sys.exit(0 if all(Gst.ElementFactory.find(e) for e in "
    "('videotestsrc', 'x264enc', 'rtph264pay', 'rtph264depay', 'h264parse', 'matroskamux')) "
    "else 4)"
)


class RtspServerError(RuntimeError):
    """The test RTSP server did not start or did not behave."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago on ``host`` (another process may still take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@functools.cache
def gst_rtsp_unavailable(python: str = SYSTEM_PYTHON) -> str | None:
    """Why the GStreamer RTSP server cannot run here, or ``None`` when it can."""
    if not os.access(python, os.X_OK):
        return f"{python} not found (it runs the GStreamer RTSP test server)"
    try:
        done = subprocess.run(
            [python, "-c", _GI_CHECK], capture_output=True, text=True, timeout=30, check=False
        )
    except subprocess.TimeoutExpired:
        return f"{python} took over 30 s to import gi/GstRtspServer"
    if done.returncode == 4:
        return (
            "GStreamer elements missing (videotestsrc, x264enc, rtph264pay, rtph264depay, "
            "h264parse, matroskamux): apt-get install gstreamer1.0-plugins-{base,good,ugly,bad}"
        )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return (
            f"GStreamer RTSP server unusable from {python} ({last}): apt-get install "
            "python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp"
        )
    return None


class RtspServer:
    """One GStreamer RTSP server process on loopback (see ``rtsp_server.py`` for what it serves).

    ``port=0`` (the default) lets the server choose a free port itself, which is race-free;
    the chosen port is kept, so ``restart()`` comes back on the same one.
    """

    def __init__(
        self,
        *,
        port: int = 0,
        paths: Sequence[str] = ("/cam",),
        user: str | None = None,
        password: str | None = None,
        silent_paths: Sequence[str] = (),
        record_paths: Sequence[str] = (),
        record_file: Path | str | None = None,
        width: int = 640,
        height: int = 360,
        fps: int = 15,
        key_int: int = 15,
        pattern: str = "ball",
        host: str = "127.0.0.1",
        ready_timeout: float = 15.0,
        python: str = SYSTEM_PYTHON,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("user and password go together")
        self.host = host
        self.port = port
        self.paths = tuple(paths)
        self.user = user
        self.password = password
        self.silent_paths = tuple(silent_paths)
        self.record_paths = tuple(record_paths)
        self.record_file = Path(record_file) if record_file is not None else None
        self.width = width
        self.height = height
        self.fps = fps
        self.key_int = key_int
        self.pattern = pattern
        self.ready_timeout = ready_timeout
        self.python = python
        self._proc: subprocess.Popen[str] | None = None
        self._frozen = False
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._record_frames: dict[str, int] = {}
        self._record_ends: dict[str, int] = {}
        self._stderr: collections.deque[str] = collections.deque(maxlen=200)
        self._readers: list[threading.Thread] = []

    # -- lifecycle -------------------------------------------------------------------------

    def _command(self) -> list[str]:
        cmd = [
            self.python,
            "-u",
            str(SERVER_SCRIPT),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--width",
            str(self.width),
            "--height",
            str(self.height),
            "--fps",
            str(self.fps),
            "--key-int",
            str(self.key_int),
            "--pattern",
            self.pattern,
            "--exit-on-stdin-eof",
        ]
        for path in self.paths:
            cmd += ["--path", path]
        for path in self.silent_paths:
            cmd += ["--silent-path", path]
        for path in self.record_paths:
            cmd += ["--record-path", path]
        if self.record_file is not None:
            cmd += ["--record-file", str(self.record_file)]
        if self.user is not None and self.password is not None:
            cmd += ["--user", self.user, "--password", self.password]
        return cmd

    def start(self) -> Self:
        """Start the server and wait for ``READY``; raises ``RtspServerError`` if it fails."""
        if self.running:
            return self
        attempts = 20 if self.port else 1  # a fixed port may still be held briefly after a kill
        for attempt in range(attempts):
            try:
                self._start_once()
                return self
            except RtspServerError:
                if attempt == attempts - 1 or "cannot listen" not in self.stderr_tail():
                    raise
                time.sleep(0.25)
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        ready = threading.Event()
        ready_port: list[int] = []
        with self._lock:
            self._record_frames.clear()
            self._record_ends.clear()
            self._stderr.clear()
        proc = subprocess.Popen(
            self._command(),
            stdin=subprocess.PIPE,  # closed when this process dies: the server then exits
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self._proc = proc
        self._frozen = False
        assert proc.stdout is not None and proc.stderr is not None
        out_reader = threading.Thread(
            target=self._read_stdout,
            args=(proc.stdout, ready, ready_port),
            name="rtsp-server-stdout",
            daemon=True,
        )
        err_reader = threading.Thread(
            target=self._read_stderr, args=(proc.stderr,), name="rtsp-server-stderr", daemon=True
        )
        out_reader.start()
        err_reader.start()
        self._readers = [out_reader, err_reader]
        deadline = time.monotonic() + self.ready_timeout
        while not ready.wait(0.05):
            if proc.poll() is not None:
                for reader in self._readers:
                    reader.join(timeout=1.0)
                self._proc = None
                raise RtspServerError(
                    f"RTSP test server exited with status {proc.returncode} before READY: "
                    f"{self.stderr_tail()}"
                )
            if time.monotonic() > deadline:
                self._terminate(proc, grace=1.0)
                self._proc = None
                raise RtspServerError(
                    f"RTSP test server not READY within {self.ready_timeout} s: "
                    f"{self.stderr_tail()}"
                )
        self.port = ready_port[0]

    def _read_stdout(self, stream: Any, ready: threading.Event, ready_port: list[int]) -> None:
        for line in stream:
            words = line.split()
            if not words:
                continue
            with self._changed:
                if words[0] == "READY" and len(words) == 2:
                    ready_port.append(int(words[1]))
                    ready.set()
                elif words[0] == "RECORD-START" and len(words) == 2:
                    self._record_frames[words[1]] = 0
                    self._record_ends.pop(words[1], None)
                elif words[0] == "RECORD-FRAMES" and len(words) == 3:
                    self._record_frames[words[1]] = int(words[2])
                elif words[0] == "RECORD-END" and len(words) == 3:
                    self._record_frames[words[1]] = int(words[2])
                    self._record_ends[words[1]] = int(words[2])
                self._changed.notify_all()

    def _read_stderr(self, stream: Any) -> None:
        for line in stream:
            with self._lock:
                self._stderr.append(line.rstrip("\n"))

    def stderr_tail(self, lines: int = 20) -> str:
        """The last lines the server wrote on stderr (for failure messages)."""
        with self._lock:
            return "\n".join(list(self._stderr)[-lines:])

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @staticmethod
    def _signal(proc: subprocess.Popen[str], signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signum)  # start_new_session: the group id is the pid

    def _terminate(self, proc: subprocess.Popen[str], grace: float) -> None:
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            self._signal(proc, signal.SIGCONT)  # a frozen process handles SIGTERM once continued
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=10.0)
        for reader in self._readers:
            reader.join(timeout=2.0)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds. Idempotent."""
        proc, self._proc = self._proc, None
        self._frozen = False
        if proc is not None:
            self._terminate(proc, grace=timeout)

    def kill(self) -> None:
        """SIGKILL the server (a crashed camera); ``restart()`` or ``start()`` brings it back."""
        proc, self._proc = self._proc, None
        self._frozen = False
        if proc is not None:
            self._signal(proc, signal.SIGKILL)
            proc.wait(timeout=10.0)
            self._terminate(proc, grace=0.0)

    def restart(self, *, down_for: float = 0.0) -> Self:
        """Stop, stay down ``down_for`` seconds, start again on the same port."""
        self.stop()
        if down_for > 0:
            time.sleep(down_for)
        return self.start()

    def freeze(self) -> None:
        """SIGSTOP: sockets stay open (new TCP connections are even accepted by the kernel), but
        nothing is answered or sent — a camera that stalls."""
        if self._proc is None or not self.running:
            raise RtspServerError("freeze(): the server is not running")
        self._signal(self._proc, signal.SIGSTOP)
        self._frozen = True

    def thaw(self) -> None:
        """SIGCONT after ``freeze()``."""
        if self._proc is not None:
            self._signal(self._proc, signal.SIGCONT)
        self._frozen = False

    @property
    def frozen(self) -> bool:
        return self._frozen

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses and observations --------------------------------------------------------

    def url(self, path: str = "/cam", user: str | None = None, password: str | None = None) -> str:
        """``rtsp://[user:password@]127.0.0.1:PORT/path`` (credentials percent-encoded)."""
        if not path.startswith("/"):
            path = "/" + path
        auth = ""
        if user is not None:
            auth = quote(user, safe="")
            if password is not None:
                auth += ":" + quote(password, safe="")
            auth += "@"
        return f"rtsp://{auth}{self.host}:{self.port}{path}"

    def auth_url(self, path: str = "/cam") -> str:
        """``url()`` with the server's own credentials (plain ``url()`` when it has none)."""
        return self.url(path, self.user, self.password)

    def record_frames(self, path: str = "/push") -> int:
        """H.264 access units received on a record mount since the last push started."""
        with self._lock:
            return self._record_frames.get(path, 0)

    def wait_record_frames(self, path: str, at_least: int, timeout: float) -> int:
        """Wait until ``path`` received ``at_least`` frames; returns the count (maybe fewer)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._record_frames.get(path, 0) < at_least:
                left = deadline - time.monotonic()
                if left <= 0 or not self.running:
                    break
                self._changed.wait(min(left, 0.2))
            return self._record_frames.get(path, 0)

    def wait_record_end(self, path: str, timeout: float) -> int | None:
        """Wait until the pushed stream on ``path`` ended; its frame count, or ``None``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while path not in self._record_ends:
                left = deadline - time.monotonic()
                if left <= 0 or not self.running:
                    break
                self._changed.wait(min(left, 0.2))
            return self._record_ends.get(path)

    def __repr__(self) -> str:
        state = "frozen" if self._frozen else ("running" if self.running else "stopped")
        return f"RtspServer({self.host}:{self.port}, paths={self.paths}, {state})"


# -- pytest fixtures -----------------------------------------------------------------------------

ServerFactory = Callable[..., RtspServer]


def require_gst_rtsp() -> None:
    """Skip the calling test, with the reason, when the GStreamer RTSP server cannot run here."""
    reason = gst_rtsp_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture
def rtsp_server_factory() -> Iterator[ServerFactory]:
    """A function ``make(**RtspServer kwargs) -> started RtspServer``; all are stopped after the
    test, pass or fail."""
    require_gst_rtsp()
    servers: list[RtspServer] = []

    def make(**kwargs: Any) -> RtspServer:
        server = RtspServer(**kwargs)
        servers.append(server)
        return server.start()

    try:
        yield make
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def rtsp_server(rtsp_server_factory: ServerFactory) -> RtspServer:
    """A started server with one mount, ``/cam`` (640×360, 15 fps, no credentials)."""
    return rtsp_server_factory()
