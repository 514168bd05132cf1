"""A bounded, on-disk spool: what a remote sink holds until the far end acknowledges it.

Entries are appended to segment files (``<first seq>.spool``) as ``length, crc32, seq, payload``
records, one ``write`` each, so a killed process leaves whole records and at most one torn record
at the tail, which the next start cuts off. A sender ``take``s entries after its cursor and
``ack``s them when the far end confirmed; the head (the first entry not acknowledged) is saved in
``head`` at each :meth:`Spool.sync`, so after a restart delivery resumes there (entries acknowledged
after the last sync are sent again: at least once, never lost). ``sync`` also fsyncs the segment
being written; the sender calls it in batches, so ``append`` never waits for the disk.

The spool is bounded in bytes: an append that would exceed ``max_bytes`` first deletes the oldest
segments, and the entries they held that were not delivered are counted in :attr:`Spool.dropped`.
Memory holds one small record per segment and per entry taken but not yet acknowledged.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import threading
import time
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from stream_pipeline.errors import ConfigError, SinkError

__all__ = ["Spool", "pack_fields", "unpack_fields"]

_HEADER = struct.Struct("<IIQ")  # payload length, crc32 over seq + payload, seq
_SEQ = struct.Struct("<Q")
SUFFIX = ".spool"
MIN_BYTES = 4096


def pack_fields(*fields: bytes) -> bytes:
    """Fields (none of which holds a NUL byte) as one payload; JSON never holds a raw NUL."""
    return b"\0".join(fields)


def unpack_fields(payload: bytes, n: int) -> list[bytes]:
    """The ``n`` fields :func:`pack_fields` joined (the last one may hold anything)."""
    return payload.split(b"\0", n - 1)


@dataclass(slots=True, eq=False)  # compared by identity
class _Segment:
    path: Path
    first: int  # seq of its first entry
    count: int = 0
    size: int = 0


@dataclass(frozen=True, slots=True)
class _Pos:
    segment: _Segment
    offset: int
    seq: int


class Spool:
    """A bounded FIFO of byte strings on disk, safe for one appending and one sending thread.

    ``max_bytes`` bounds the files on disk; ``segment_bytes`` (default ``max_bytes / 8``, at
    least 4 KiB) the size of one file, and so the granularity of dropping when full.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str],
        max_bytes: int = 256 * 1024 * 1024,
        segment_bytes: int | None = None,
    ) -> None:
        if max_bytes < MIN_BYTES * 2:
            raise ConfigError(f"spool size must be at least {MIN_BYTES * 2} bytes, got {max_bytes}")
        self.directory = Path(directory)
        self.max_bytes = max_bytes
        self.segment_bytes = min(max(MIN_BYTES, segment_bytes or max_bytes // 8), max_bytes // 2)
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._segments: list[_Segment] = []
        self._wfd: int | None = None
        self._rfd: tuple[Path, int] | None = None
        self._head: _Pos | None = None
        self._cursor: _Pos | None = None
        self._taken: dict[int, _Pos] = {}  # seq -> position after it, until acknowledged
        self._acked: dict[int, _Pos] = {}  # acknowledged out of order, beyond the head
        self._orphans: set[int] = set()  # taken, then their segment was dropped to make room
        self._next_seq = 0
        self._bytes = 0
        self._dropped = 0
        self._dirty = False
        self._saved_head = -1

    # -- opening and recovery ----------------------------------------------------------------

    def open(self) -> None:
        """Create the directory or recover what a previous run left there."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            paths = sorted(self.directory.glob("*" + SUFFIX))
            with self._lock:
                for path in paths:
                    seg = self._recover(path)
                    if seg.count:
                        self._segments.append(seg)
                    else:
                        path.unlink()
                head = self._read_head()
                self._next_seq = (
                    self._segments[-1].first + self._segments[-1].count if self._segments else head
                )
                self._next_seq = max(self._next_seq, head)
                self._start_segment()
                self._head = self._skip_to(head)
                self._cursor = self._head
                self._drop_consumed()
        except OSError as exc:
            raise SinkError(f"cannot open spool {self.directory}: {exc.strerror or exc}") from None

    def _recover(self, path: Path) -> _Segment:
        try:
            first = int(path.stem)
        except ValueError:
            raise SinkError(f"spool {self.directory}: unexpected file {path.name}") from None
        seg = _Segment(path, first)
        data = path.read_bytes()
        offset = 0
        while offset + _HEADER.size <= len(data):
            length, crc, seq = _HEADER.unpack_from(data, offset)
            end = offset + _HEADER.size + length
            body = data[offset + _HEADER.size : end]
            if (
                end > len(data)
                or seq != first + seg.count
                or zlib.crc32(_SEQ.pack(seq) + body) != crc
            ):
                break
            seg.count += 1
            offset = end
        if offset < len(data):  # a record torn by a crash: cut it off
            os.truncate(path, offset)
        seg.size = offset
        self._bytes += offset
        return seg

    def _read_head(self) -> int:
        try:
            return int(json.loads((self.directory / "head").read_text())["seq"])
        except (OSError, ValueError, KeyError, TypeError):
            return self._segments[0].first if self._segments else 0

    def _skip_to(self, seq: int) -> _Pos:
        """The position of the first entry with a seq >= ``seq`` (recovery only)."""
        for seg in self._segments:
            if seq < seg.first + seg.count:
                pos = _Pos(seg, 0, seg.first)
                while pos.seq < seq:
                    length = _HEADER.unpack(self._pread(seg, pos.offset, _HEADER.size))[0]
                    pos = _Pos(seg, pos.offset + _HEADER.size + length, pos.seq + 1)
                return pos
        last = self._segments[-1]
        return _Pos(last, last.size, last.first + last.count)

    # -- appending ---------------------------------------------------------------------------

    def append(self, payload: bytes) -> int:
        """Append one entry; returns how many undelivered entries were dropped to make room.

        An entry bigger than half the spool is itself dropped (and counted): it could never
        coexist with anything else.
        """
        size = _HEADER.size + len(payload)
        with self._lock:
            if self._wfd is None:
                raise SinkError(f"spool {self.directory} is not open")
            if size > self.max_bytes // 2:
                self._dropped += 1
                return 1
            dropped = 0
            while self._bytes + size > self.max_bytes and len(self._segments) > 1:
                dropped += self._drop_oldest()
            active = self._segments[-1]
            if active.size and active.size + size > self.segment_bytes:
                self._start_segment()
                active = self._segments[-1]
                while self._bytes + size > self.max_bytes and len(self._segments) > 1:
                    dropped += self._drop_oldest()
            seq = self._next_seq
            record = _HEADER.pack(len(payload), zlib.crc32(_SEQ.pack(seq) + payload), seq) + payload
            try:
                written = os.write(self._wfd, record)
                while written < len(record):
                    written += os.write(self._wfd, memoryview(record)[written:])
            except OSError as exc:
                with contextlib.suppress(OSError):  # whole records only, even on a full disk
                    os.ftruncate(self._wfd, active.size)
                raise SinkError(f"writing spool {self.directory} failed: {exc.strerror}") from None
            active.size += size
            active.count += 1
            self._bytes += size
            self._next_seq += 1
            self._dirty = True
            self._ready.notify_all()
            return dropped

    def _start_segment(self) -> None:
        if self._wfd is not None:
            os.close(self._wfd)
        path = self.directory / f"{self._next_seq:020d}{SUFFIX}"
        self._wfd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        size = os.fstat(self._wfd).st_size
        self._segments.append(_Segment(path, self._next_seq, 0, size))

    def _drop_oldest(self) -> int:
        seg = self._segments.pop(0)
        assert self._head is not None and self._cursor is not None
        lost = seg.count - (self._head.seq - seg.first) if self._head.segment is seg else 0
        inside = range(seg.first, seg.first + seg.count)
        lost -= sum(1 for s in self._acked if s in inside)
        # In flight: lost only if the far end never confirms them (see ack and rewind).
        flying = {s for s in self._taken if s in inside}
        lost -= len(flying)
        self._orphans |= flying
        self._remove(seg)
        nxt = self._segments[0]
        start = _Pos(nxt, 0, nxt.first)
        if self._head.segment is seg:
            self._head = start
        if self._cursor.segment is seg:
            self._cursor = start
        self._taken = {s: p for s, p in self._taken.items() if s >= nxt.first}
        self._acked = {s: p for s, p in self._acked.items() if s >= nxt.first}
        self._dropped += lost
        return lost

    def _remove(self, seg: _Segment) -> None:
        self._bytes -= seg.size
        if self._rfd is not None and self._rfd[0] == seg.path:
            os.close(self._rfd[1])
            self._rfd = None
        seg.path.unlink(missing_ok=True)

    # -- sending -----------------------------------------------------------------------------

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s until an entry is there to take; True if one is."""
        with self._ready:
            return self._ready.wait_for(self._available, timeout)

    def _available(self) -> bool:
        cur = self._cursor
        return cur is not None and cur.seq < self._next_seq

    def take(self, limit: int, max_bytes: int | None = None) -> list[tuple[int, bytes]]:
        """Up to ``limit`` entries (seq, payload) after the cursor, which moves past them.

        ``max_bytes`` stops early once the payloads reach it (at least one entry is returned).
        Each must later be :meth:`ack`'ed or the cursor :meth:`rewind`'ed.
        """
        out: list[tuple[int, bytes]] = []
        total = 0
        with self._lock:
            while len(out) < limit and self._available():
                assert self._cursor is not None
                cur = self._cursor
                if cur.offset >= cur.segment.size:
                    index = self._segments.index(cur.segment)
                    nxt = self._segments[index + 1]
                    self._cursor = _Pos(nxt, 0, nxt.first)
                    continue
                length, _crc, seq = _HEADER.unpack(
                    self._pread(cur.segment, cur.offset, _HEADER.size)
                )
                payload = self._pread(cur.segment, cur.offset + _HEADER.size, length)
                after = _Pos(cur.segment, cur.offset + _HEADER.size + length, seq + 1)
                self._cursor = after
                if seq in self._acked:  # delivered out of order before a rewind
                    continue
                self._taken[seq] = after
                out.append((seq, payload))
                total += length
                if max_bytes is not None and total >= max_bytes:
                    break
        return out

    def _pread(self, seg: _Segment, offset: int, n: int) -> bytes:
        if self._rfd is None or self._rfd[0] != seg.path:
            if self._rfd is not None:
                os.close(self._rfd[1])
            self._rfd = (seg.path, os.open(seg.path, os.O_RDONLY | os.O_CLOEXEC))
        data = os.pread(self._rfd[1], n, offset)
        if len(data) != n:
            raise SinkError(f"spool {self.directory}: {seg.path.name} is shorter than expected")
        return data

    def ack(self, seqs: Iterable[int]) -> int:
        """The far end has these entries; returns how many were newly acknowledged."""
        n = 0
        with self._lock:
            for seq in seqs:
                pos = self._taken.pop(seq, None)
                if seq in self._orphans:
                    self._orphans.discard(seq)
                    n += 1
                elif pos is not None:
                    self._acked[seq] = pos
                    n += 1
            head = self._head
            while head is not None and head.seq in self._acked:
                head = self._acked.pop(head.seq)
            self._head = head
            self._drop_consumed()
        return n

    def _drop_consumed(self) -> None:
        """Delete segments the head has passed (never the one being written)."""
        head = self._head
        assert head is not None
        while len(self._segments) > 1 and (
            head.segment is not self._segments[0] or head.offset >= head.segment.size
        ):
            seg = self._segments.pop(0)
            self._remove(seg)
            nxt = self._segments[0]
            if head.segment is seg:
                head = _Pos(nxt, 0, nxt.first)
            if self._cursor is not None and self._cursor.segment is seg:
                self._cursor = _Pos(nxt, 0, nxt.first)
        self._head = head

    def rewind(self) -> int:
        """Send again from the head: whatever was taken and not acknowledged is taken again.

        Returns how many of those are gone (their segment was dropped while they were out).
        """
        with self._lock:
            lost = len(self._orphans)
            self._dropped += lost
            self._orphans.clear()
            self._taken.clear()
            self._cursor = self._head
            return lost

    # -- state -------------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Entries held and not acknowledged."""
        with self._lock:
            head = self._head
            if head is None:
                return 0
            return self._next_seq - head.seq - len(self._acked)

    @property
    def dropped(self) -> int:
        """Entries dropped because the spool was full (since this object was made)."""
        with self._lock:
            return self._dropped

    @property
    def size(self) -> int:
        """Bytes on disk."""
        with self._lock:
            return self._bytes

    def sync(self) -> None:
        """Fsync what was appended and save the head; cheap when nothing changed."""
        with self._lock:
            fd, dirty = self._wfd, self._dirty
            self._dirty = False
            head = self._head.seq if self._head is not None else 0
        if fd is not None and dirty:
            with contextlib.suppress(OSError):  # closed meanwhile by close(): it syncs itself
                os.fsync(fd)
        if head != self._saved_head:
            tmp = self.directory / "head.tmp"
            tmp.write_text(json.dumps({"seq": head, "at": time.time()}))
            os.replace(tmp, self.directory / "head")
            self._saved_head = head

    def close(self) -> None:
        """Sync and release the files (the entries stay for the next start); idempotent."""
        with contextlib.suppress(OSError):
            self.sync()
        with self._lock:
            if self._wfd is not None:
                with contextlib.suppress(OSError):
                    os.fsync(self._wfd)
                os.close(self._wfd)
                self._wfd = None
            if self._rfd is not None:
                os.close(self._rfd[1])
                self._rfd = None
