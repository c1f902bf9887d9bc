"""A producer table clears what it forgot (``forgot_below``) only on a log start that survives a
power loss.

Retention deletes segment files; their removal is durable only once the log directory is
fsynced, which under fsync ``interval``/``never`` waits for the next flush (and an open marks
the directory dirty without fsyncing it). A table that cleared ``forgot_below`` on a log start
not yet durable, and a snapshot written meanwhile (the periodic ones are not fsynced, and live
in another directory: nothing orders the two), left after a power loss a log whose start is back
below the eviction, holding the evicted producer's batch, and a restored table that says it
forgot nothing: the producer's possibly written retry was then written a second time.

Power loss is modelled as in tests/unit/power_loss.py. Real partitions on the segment engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import batch as B
from engines.api import EngineConfig, StorageFull
from engines.segment import SegmentEngine
from fabric import protocol as P
from nodes.broker import producers as producers_module
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch, padded_batch
from tests.unit.power_loss import UnlinkRecorder

BATCH_MAX = 1024 * 1024
PID = 7  # evicted: its batch at offset 0 is the one its client retries
OTHERS = (101, 102)


def _open(directory: Path) -> Partition:
    engine = SegmentEngine(str(directory / "log"), EngineConfig(
        fsync="interval", segment_bytes_max=4096, index_interval_bytes=256, retention_bytes=1,
        batch_bytes_max=BATCH_MAX))
    return Partition("t", 0, 1, engine, str(directory))


def _append(part: Partition, data: bytes, possibly_written: bool = False) -> tuple[int, int, str]:
    (result,), _ = part.append_as_leader([data], BATCH_MAX, [possibly_written])
    return result


def _pid_batch() -> bytes:
    return make_batch(3, pid=PID, epoch=0, seq=0, tag="pid-")


def _evicted_and_written_past(part: Partition) -> None:
    """PID writes at 0; OTHERS at 3 and 6 (the one at 6 evicts PID: PRODUCERS_MAX 2); OTHERS
    write on across several 4 KiB segments, then everything is flushed."""
    part.become_leader(1, [1], [1], now_ms=0)
    assert _append(part, _pid_batch())[:2] == (0, 0)
    for pid in OTHERS:
        assert _append(part, make_batch(3, pid=pid, epoch=0, seq=0, tag=f"p{pid}-"))[1] == 0
    assert part.producers.forgot_below == 6
    for i in range(30):
        pid = OTHERS[i % 2]
        assert _append(part, padded_batch(3, pid=pid, seq=3 + 3 * (i // 2), tag=f"w{i}-"))[1] == 0
    part.high_watermark = part.log_end_offset
    part.engine.flush()


def _copies_of_pid_batch(part: Partition) -> int:
    offset, copies = part.log_start_offset, 0
    while offset < part.log_end_offset:
        for h, _ in B.iter_batches(part.engine.read(offset, BATCH_MAX)):
            copies += (h.producer_id, h.base_sequence) == (PID, 0)
            offset = h.next_offset
    return copies


def _retry_after_power_loss(part: Partition, unlinks: UnlinkRecorder, tmp_path: Path) -> None:
    """A periodic snapshot, then a power loss; the reopened replica leads and PID's client
    retries its batch (possibly written): refused, or written where no copy is in the log."""
    part.snapshot_producers(now_ms=0)
    reopened = _open(unlinks.power_loss_copy(tmp_path / "p", tmp_path / "after-power-loss"))
    try:
        reopened.become_leader(2, [1], [1], now_ms=0)
        before, forgot = _copies_of_pid_batch(reopened), reopened.producers.forgot_below
        _, code, _ = _append(reopened, _pid_batch(), possibly_written=True)
        if code != P.UNKNOWN_PRODUCER_ID:
            assert code == 0
            assert before == 0, (f"PID's batch, still in the log from {reopened.log_start_offset}, was written again "
                                 f"(forgot_below {forgot})")
    finally:
        reopened.close()


def test_retention_clears_it_only_once_the_deletion_is_durable(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    part = _open(tmp_path / "p")
    try:
        _evicted_and_written_past(part)
        unlinks = UnlinkRecorder(monkeypatch, tmp_path / "p" / "log")
        part.apply_retention(0)
        assert part.log_start_offset > 6
        _retry_after_power_loss(part, unlinks, tmp_path)
    finally:
        part.close()


def test_an_open_clears_it_only_once_the_log_start_is_durable(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Retention deleted segments and the process died before any flush; the restarted broker
    finds the log start past the eviction (the removals are in the page cache, not on disk)."""
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    part = _open(tmp_path / "p")
    _evicted_and_written_past(part)
    part.snapshot_producers(now_ms=0)  # forgot below 6
    unlinks = UnlinkRecorder(monkeypatch, tmp_path / "p" / "log")
    part.engine.apply_retention(0, part.high_watermark)  # the process dies right after the delete
    assert part.engine.log_start_offset > 6 and unlinks.pending
    restarted = _open(tmp_path / "p")
    try:
        assert restarted.log_start_offset > 6
        restarted.become_leader(2, [1], [1], now_ms=0)
        assert _append(restarted, make_batch(3, tag="x-"))[1] == 0  # the log end moves: a snapshot is due
        _retry_after_power_loss(restarted, unlinks, tmp_path)
    finally:
        restarted.close()


def test_a_flush_refused_keeps_it_until_a_later_retention_flushes(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk refuses the flush: the log start may not be durable, so the table keeps
    refusing; retention's next pass flushes and clears it."""
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    part = _open(tmp_path / "p")
    try:
        _evicted_and_written_past(part)
        real_flush = part.engine.flush

        def full(*args: object, **kwargs: object) -> None:
            raise StorageFull("no space left on device")
        monkeypatch.setattr(part.engine, "flush", full)
        part.apply_retention(0)
        assert part.log_start_offset > 6 and part.producers.forgot_below == 6
        monkeypatch.setattr(part.engine, "flush", real_flush)
        part.apply_retention(0)
        assert part.producers.forgot_below == 0
    finally:
        part.close()
