#!/usr/bin/python3
"""A real RTSP camera for the test suite, on loopback (GStreamer's RTSP server).

Run it with the *system* interpreter, which has PyGObject (``gi``); the project's venv does not:

    /usr/bin/python3 tests/support/rtsp_server.py --port 8554 --path /cam --path /cam2 \
        --user alice --password secret --record-path /push --record-file out.mkv

Every ``--path`` serves a live, moving test picture (``videotestsrc is-live=true pattern=ball``)
encoded by x264 with zero latency and a key frame every ``--key-int`` frames; the media is
shared, so many clients can read one mount. ``--user``/``--password`` require HTTP basic
authentication (a wrong or missing password gets ``401 Unauthorized``). Every ``--record-path``
accepts a stream pushed by a client (RTSP ANNOUNCE/RECORD, H.264); the server counts the access
units it receives and, with ``--record-file``, writes them into a Matroska file.

Lines printed on stdout (flushed, one event each):

    READY <port>                      listening; ``--port 0`` lets the system choose the port
    RECORD-START <path>               a client started pushing to <path>
    RECORD-FRAMES <path> <n>          <n> access units received on <path> so far (every frame)
    RECORD-END <path> <n>             the pushed stream on <path> ended (client left)

SIGTERM or SIGINT closes every client and exits with status 0; so does the end of stdin with
``--exit-on-stdin-eof`` (the test helper passes it, so a killed test run leaves no server behind).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from typing import Any

# Only the system interpreter has gi; the venv's mypy (which also checks tests/) has no stubs.
import gi  # type: ignore[import-not-found, unused-ignore]

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import (  # type: ignore[import-not-found, unused-ignore]  # noqa: E402
    GLib,
    Gst,
    GstRtspServer,
)

ROLE = "user"
_print_lock = threading.Lock()


def emit(line: str) -> None:
    """Print one event line on stdout; GStreamer calls this from its streaming threads."""
    with _print_lock, contextlib.suppress(OSError, ValueError):  # the reader may be gone
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def log(line: str) -> None:
    with _print_lock, contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"rtsp_server: {line}\n")
        sys.stderr.flush()


def mount_path(value: str) -> str:
    if not value.startswith("/") or value == "/" or any(c.isspace() for c in value):
        raise argparse.ArgumentTypeError(f"a mount path looks like /cam, not {value!r}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8554, help="TCP port; 0 lets the system choose")
    p.add_argument(
        "--path",
        action="append",
        type=mount_path,
        dest="paths",
        help="mount serving the test picture (repeatable; default /cam)",
    )
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--key-int", type=int, default=15, help="x264 key-int-max (frames)")
    p.add_argument("--pattern", default="ball", help="videotestsrc pattern (default: ball)")
    p.add_argument("--user", help="require basic auth with this user name")
    p.add_argument("--password", help="password for --user")
    p.add_argument(
        "--silent-path",
        action="append",
        type=mount_path,
        dest="silent_paths",
        default=[],
        help="mount that completes PLAY but never sends a frame",
    )
    p.add_argument(
        "--record-path",
        action="append",
        type=mount_path,
        dest="record_paths",
        default=[],
        help="mount that accepts a pushed H.264 stream (repeatable)",
    )
    p.add_argument(
        "--exit-on-stdin-eof",
        action="store_true",
        help="exit when stdin closes: a test runner that dies takes the server with it",
    )
    p.add_argument("--record-file", help="write what the (single) record path receives, .mkv")
    args = p.parse_args(argv)
    if args.paths is None:
        args.paths = [] if args.record_paths or args.silent_paths else ["/cam"]
    if (args.user is None) != (args.password is None):
        p.error("--user and --password go together")
    if args.record_file is not None and len(args.record_paths) != 1:
        p.error("--record-file needs exactly one --record-path")
    mounts = args.paths + args.silent_paths + args.record_paths
    if len(set(mounts)) != len(mounts):
        p.error("every mount path must be distinct")
    for name in ("width", "height", "fps", "key_int"):
        if getattr(args, name) <= 0:
            p.error(f"--{name.replace('_', '-')} must be positive")
    return args


def permissions() -> GstRtspServer.RTSPPermissions:
    perms = GstRtspServer.RTSPPermissions()
    perms.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
    perms.add_permission_for_role(ROLE, GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
    return perms


def play_factory(args: argparse.Namespace, silent: bool = False) -> GstRtspServer.RTSPMediaFactory:
    # A silent mount answers DESCRIBE/SETUP/PLAY like the others but drops every encoded frame
    # before the payloader: a camera that accepts the session and never sends media.
    drop = "! identity drop-probability=1.0 " if silent else ""
    launch = (
        f"( videotestsrc is-live=true pattern={args.pattern} "
        f"! video/x-raw,width={args.width},height={args.height},framerate={args.fps}/1 "
        "! videoconvert ! video/x-raw,format=I420 "
        f"! x264enc tune=zerolatency speed-preset=ultrafast key-int-max={args.key_int} "
        "bframes=0 "
        "! video/x-h264,profile=constrained-baseline "
        f"{drop}! rtph264pay name=pay0 pt=96 config-interval=-1 )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)
    return factory


class RecordCounter:
    """Counts the H.264 access units a pushing client delivers to one record mount."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.frames = 0
        self._lock = threading.Lock()

    def on_media_configure(self, _factory: Any, media: GstRtspServer.RTSPMedia) -> None:
        with self._lock:
            self.frames = 0
        element = media.get_element()
        counter = element.get_by_name("counter")
        if counter is None:
            log(f"{self.path}: no element named counter")
            return
        counter.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, self._on_buffer)
        media.connect("unprepared", self._on_unprepared)
        emit(f"RECORD-START {self.path}")

    def _on_buffer(self, _pad: Gst.Pad, _info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
        with self._lock:
            self.frames += 1
            n = self.frames
        emit(f"RECORD-FRAMES {self.path} {n}")
        return Gst.PadProbeReturn.OK

    def _on_unprepared(self, _media: GstRtspServer.RTSPMedia) -> None:
        with self._lock:
            n = self.frames
        emit(f"RECORD-END {self.path} {n}")


def record_factory(
    path: str, record_file: str | None
) -> tuple[GstRtspServer.RTSPMediaFactory, RecordCounter]:
    if record_file is not None:
        location = record_file.replace("\\", "\\\\").replace('"', '\\"')
        sink = f'matroskamux ! filesink location="{location}" sync=false'
    else:
        sink = "fakesink sync=false async=false"
    launch = (
        "( rtph264depay name=depay0 ! h264parse ! video/x-h264,alignment=au "
        f"! identity name=counter ! {sink} )"
    )
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_transport_mode(GstRtspServer.RTSPTransportMode.RECORD)
    factory.set_shared(False)
    factory.set_eos_shutdown(True)  # finish the file (EOS through the muxer) when the client leaves
    counter = RecordCounter(path)
    factory.connect("media-configure", counter.on_media_configure)
    return factory, counter


def build_server(args: argparse.Namespace) -> tuple[GstRtspServer.RTSPServer, list[RecordCounter]]:
    server = GstRtspServer.RTSPServer()
    server.set_address(args.host)
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    auth_on = args.user is not None
    if auth_on:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, ROLE)
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
        # No default token: an anonymous request or a wrong password gets 401.
        server.set_auth(auth)
    counters: list[RecordCounter] = []
    for path in args.paths:
        factory = play_factory(args)
        if auth_on:
            factory.set_permissions(permissions())
        mounts.add_factory(path, factory)
    for path in args.silent_paths:
        factory = play_factory(args, silent=True)
        if auth_on:
            factory.set_permissions(permissions())
        mounts.add_factory(path, factory)
    for path in args.record_paths:
        factory, counter = record_factory(path, args.record_file)
        if auth_on:
            factory.set_permissions(permissions())
        mounts.add_factory(path, factory)
        counters.append(counter)
    return server, counters


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    Gst.init(None)
    server, _counters = build_server(args)
    loop = GLib.MainLoop()

    if server.attach(None) == 0:
        log(f"cannot listen on {args.host}:{args.port}")
        return 3

    def close_clients(_server: Any, _client: Any, _data: Any) -> GstRtspServer.RTSPFilterResult:
        return GstRtspServer.RTSPFilterResult.REMOVE

    stopping = False

    def shut_down(why: str) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            log(f"{why}: closing clients and exiting")
            server.client_filter(close_clients, None)
            GLib.timeout_add(200, loop.quit)  # let record media push EOS to the muxer

    def on_signal(signum: int) -> bool:
        shut_down(f"signal {signum}")
        return True  # GLib.SOURCE_CONTINUE: keep the handler

    def on_stdin(fd: int, _condition: Any) -> bool:
        try:
            data = os.read(fd, 4096)
        except OSError:
            data = b""
        if data:
            return True
        shut_down("stdin closed (the parent is gone)")
        return False  # GLib.SOURCE_REMOVE

    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, on_signal, signum)
    if args.exit_on_stdin_eof:
        GLib.io_add_watch(
            sys.stdin.fileno(),
            GLib.PRIORITY_DEFAULT,
            GLib.IOCondition.IN | GLib.IOCondition.HUP | GLib.IOCondition.ERR,
            on_stdin,
        )

    emit(f"READY {server.get_bound_port()}")
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
