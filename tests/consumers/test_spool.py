"""The on-disk spool: order, acknowledgement, recovery after a crash, the byte bound."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stream_pipeline.consumers.spool import Spool
from stream_pipeline.errors import ConfigError

pytestmark = pytest.mark.timeout(30)


def _drain(spool: Spool) -> list[bytes]:
    got = []
    while batch := spool.take(7):
        spool.ack(seq for seq, _ in batch)
        got += [p for _, p in batch]
    return got


def test_fifo_ack_and_restart_resumes_at_the_head(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=4096)
    spool.open()
    for i in range(500):
        spool.append(b"entry %d" % i)
    assert spool.pending == 500
    first = spool.take(100)
    spool.ack(seq for seq, _ in first[:60])  # the rest is in flight when we "crash"
    spool.close()
    again = Spool(tmp_path / "s", max_bytes=1 << 20, segment_bytes=4096)
    again.open()
    assert again.pending == 440
    assert _drain(again) == [b"entry %d" % i for i in range(60, 500)]
    assert again.pending == 0
    again.close()
    # Delivered segments are deleted; one (empty) segment being written remains.
    assert len(list((tmp_path / "s").glob("*.spool"))) <= 2


def test_out_of_order_acks_and_rewind_resend_only_the_unacknowledged(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    for i in range(10):
        spool.append(b"%d" % i)
    batch = spool.take(10)
    spool.ack([batch[3][0], batch[5][0]])  # acknowledged out of order, head still at 0
    assert spool.pending == 8
    spool.rewind()
    assert [p for _, p in spool.take(10)] == [b"%d" % i for i in range(10) if i not in (3, 5)]
    spool.close()


def test_a_torn_tail_record_is_cut_off(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=1 << 20)
    spool.open()
    for i in range(5):
        spool.append(b"x" * 100 + b"%d" % i)
    spool.close()
    (segment,) = sorted(tmp_path.glob("*.spool"))[:1]
    with segment.open("ab") as f:  # what a kill -9 in the middle of a write leaves
        f.write(b"\x10\x00\x00\x00garbage")
    again = Spool(tmp_path, max_bytes=1 << 20)
    again.open()
    assert [p[-1:] for p in _drain(again)] == [b"0", b"1", b"2", b"3", b"4"]
    again.append(b"after")
    assert _drain(again) == [b"after"]
    again.close()


def test_full_spool_drops_oldest_counts_and_stays_bounded(tmp_path: Path) -> None:
    spool = Spool(tmp_path, max_bytes=64 * 1024, segment_bytes=8 * 1024)
    spool.open()
    dropped = 0
    for i in range(2000):
        dropped += spool.append(b"%06d" % i + b"." * 200)
        assert spool.size <= 64 * 1024
    assert dropped == spool.dropped == 2000 - spool.pending > 0
    disk = sum(p.stat().st_size for p in tmp_path.glob("*.spool"))
    assert disk <= 64 * 1024
    kept = _drain(spool)
    assert [int(p[:6]) for p in kept] == list(range(2000 - len(kept), 2000))  # the newest
    spool.close()


def test_bad_size_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="spool size"):
        Spool(tmp_path, max_bytes=100)
    assert not os.listdir(tmp_path)
