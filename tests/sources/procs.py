"""Processes from /proc: what runs below this one, and decoder children (no psutil needed)."""

from __future__ import annotations

import os
from pathlib import Path


def _table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, state) of every process, zombies included."""
    table: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        table[int(entry.name)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int | None = None) -> set[int]:
    """Every live (not zombie) process below ``pid`` (default: this one)."""
    parents = {p: parent for p, (parent, state) in _table().items() if state != "Z"}
    below: set[int] = set()
    frontier = {os.getpid() if pid is None else pid}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - below
        below |= frontier
    return below


def decoder_pids() -> set[int]:
    """The decoder children of this process: those its forkserver forked."""
    table = _table()
    servers = {
        p
        for p, (parent, _) in table.items()
        if parent == os.getpid() and b"forkserver" in _cmdline(p)
    }
    return {p for p, (parent, state) in table.items() if parent in servers and state != "Z"}


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def alive(pid: int) -> bool:
    """Whether ``pid`` is a process that has not ended (a zombie has ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"
