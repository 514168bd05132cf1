"""A network namespace holding only ``lo`` for WebRTC tests (see TESTING.md).

The machine has interfaces that Chromium and aiortc would offer as ICE candidates; inside a fresh
namespace no media can leave loopback. :func:`loopback_namespace` moves the *calling thread* (the
test's, which runs the event loop) into a new namespace with ``lo`` up and ``127.0.0.2/8`` on it
(aioice never gathers 127.0.0.1), and back out afterwards. Sockets made on that thread, threads
it starts and processes it spawns (Chromium) live in the namespace; the rest of the test process
is untouched, so other tests in the same worker see the normal network.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import subprocess
from collections.abc import Iterator

__all__ = ["loopback_namespace", "netns_unavailable"]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)


@functools.cache
def netns_unavailable() -> str | None:
    """Why a loopback-only namespace cannot be made here, or ``None`` when it can."""
    if os.geteuid() != 0:
        return "needs root to create a network namespace (unshare CLONE_NEWNET)"
    if shutil.which("ip") is None:
        return "needs the `ip` command (apt-get install iproute2)"
    done = subprocess.run(
        ["unshare", "--net", "ip", "link", "set", "lo", "up"],
        capture_output=True, text=True, timeout=10, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        return f"cannot create a network namespace here: {done.stderr.strip() or done.returncode}"
    return None


def _enter(fd: int | None) -> None:
    rc = _libc.setns(fd, CLONE_NEWNET) if fd is not None else _libc.unshare(CLONE_NEWNET)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{'setns' if fd is not None else 'unshare'}: {os.strerror(err)}")


@contextlib.contextmanager
def loopback_namespace() -> Iterator[None]:
    """Run the body in a fresh network namespace holding only ``lo`` (127.0.0.1 and .2)."""
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        _enter(None)
        try:
            for cmd in (("link", "set", "lo", "up"), ("addr", "add", "127.0.0.2/8", "dev", "lo")):
                subprocess.run(["ip", *cmd], check=True, capture_output=True, timeout=10)
            yield
        finally:
            _enter(original)
    finally:
        os.close(original)
