"""A producer table that may have forgotten producers knows below which offset their batches lie
(``forgot_below``), and stops refusing an unknown producer's possibly written batch once the log
start has reached that offset: no batch of a forgotten producer is left in the log, so such a
batch cannot be a duplicate of one the log holds.

The table used to keep a flag that nothing cleared: one eviction (more than PRODUCERS_MAX
producers over the partition's life), a follower's reset or a rebuild at open past offset 0 made
every later possibly written batch of an unknown producer fail with unknown_producer_id (a send
whose reply was lost, to a leader that died before it replicated it: the new leader never had
it) for the partition's whole life, snapshots carrying the flag on.

What must never clear it (each a test below): a log start short of the offset; a log cut below
it; a leader's write undone after it evicted; a snapshot (restored, older, or of a table
over the limit); the rebuild at open of a log whose start retention moved.
Real partitions on real engines."""

from __future__ import annotations

import struct
from pathlib import Path

import crc32c
import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine
from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.broker import producer_snapshots, tail_recovery
from nodes.broker import producers as producers_module
from nodes.broker.partition import Partition
from nodes.broker.producer_snapshots import LastBatch, Snapshot, SnapshotError
from nodes.broker.producers import ProducerStateTable
from tests.unit.fakes import broker_core, drop_producer_snapshots, make_batch, padded_batch

BATCH_MAX = 1024 * 1024
PID = 7
NEWCOMER = 55  # a producer whose earlier send reached an old leader that died before replicating it
OTHERS = (101, 102)


def _batch(pid: int, seq: int = 0) -> bytes:
    return make_batch(3, pid=pid, epoch=0, seq=seq, tag=f"p{pid}-{seq}-")


def _append(part: Partition, data: bytes, possibly_written: bool = False) -> tuple[int, int, str]:
    (result,), _ = part.append_as_leader([data], BATCH_MAX, [possibly_written])
    return result


def _newcomer_taken(part: Partition) -> bool:
    """The newcomer's possibly written batch: written once (then known: its retry is answered
    with that offset) -> True; refused with unknown_producer_id, nothing written -> False."""
    end = part.log_end_offset
    offset, code, _ = _append(part, _batch(NEWCOMER), possibly_written=True)
    if code == P.UNKNOWN_PRODUCER_ID:
        assert part.log_end_offset == end
        return False
    assert (offset, code) == (end, 0)
    assert _append(part, _batch(NEWCOMER), possibly_written=True) == (end, 0, "duplicate")
    return True


def _evicting_leader(part: Partition) -> None:
    """``part`` leads; PID writes at offset 0, then OTHERS at 3 and 6: the one at 6 evicts PID
    (PRODUCERS_MAX 2), whose batches all lie below 6."""
    part.become_leader(1, [1], [1], now_ms=0)
    assert _append(part, _batch(PID))[:2] == (0, 0)
    for pid in OTHERS:
        assert _append(part, _batch(pid))[1] == 0
    assert part.producers.forgot_below == 6


def _write_on(part: Partition, batches: int) -> None:
    """The producers the table knows write on (no eviction): enough for several 4 KiB segments."""
    for i in range(batches):
        pid = OTHERS[i % 2]
        assert _append(part, padded_batch(3, pid=pid, seq=3 + 3 * (i // 2), tag=f"w{i}-"))[1] == 0


@pytest.mark.parametrize("engine", ["memory", "segment", "lmdb"])
def test_an_unknown_producers_possibly_written_batch_is_taken_once_the_log_start_passed_the_eviction(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    core = broker_core(tmp_path, 1, engine=engine)
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    try:
        _evicting_leader(part)
        assert not _newcomer_taken(part), "refused while PID's batch at 0 is in the log"
        _write_on(part, 30)
        core.apply_retention()
        assert part.log_start_offset >= 6
        assert not part.producers.forgot_producers
        assert _newcomer_taken(part)
    finally:
        core.close()


def test_a_log_start_short_of_the_offset_keeps_refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    part = Partition("t", 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    _evicting_leader(part)
    sizes = [len(b) for b in part.engine._batches]  # the batches at 0, 3 and 6
    part.engine.config.retention_bytes = sum(sizes[1:])  # deletes the one at 0 only: PID's
    part.apply_retention(0)
    assert part.log_start_offset == 3
    assert not _newcomer_taken(part), "the log start (3) is short of 6: another forgotten batch may be at 3"
    part.engine.config.retention_bytes = sizes[2]
    part.apply_retention(0)
    assert part.log_start_offset == 6
    assert _newcomer_taken(part)


def test_a_follower_clears_it_by_its_own_retention_and_takes_the_batch_once_it_leads(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    config = EngineConfig(batch_bytes_max=BATCH_MAX)
    leader = Partition("t", 0, 1, MemoryEngine("", config), None)
    follower = Partition("t", 0, 2, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX, retention_bytes=1)),
                         None)
    _evicting_leader(leader)
    leader.become_leader(1, [1, 2], [1], now_ms=0)
    _write_on(leader, 4)
    follower.become_follower(1, 1, [1, 2], [1])
    follower.append_as_follower(leader.read(0, BATCH_MAX, leader.log_end_offset))
    assert follower.producers.forgot_below == 6, "the follower's table evicted PID at 6 too"
    follower.apply_retention(0)  # its HW is 0: nothing deleted yet
    assert follower.log_start_offset == 0 and follower.producers.forgot_producers
    follower.set_high_watermark_from_leader(leader.log_end_offset)
    follower.apply_retention(0)
    assert follower.log_start_offset > 6
    follower.become_leader(2, [1, 2], [2], now_ms=0)
    assert _newcomer_taken(follower)


def _refuses(table: ProducerStateTable) -> bool:
    try:
        table.check(NEWCOMER, 0, 0, 3, possibly_written=True)
    except RemoteError as e:
        assert e.code == P.UNKNOWN_PRODUCER_ID
        return True
    return False


def _evicted_table(monkeypatch: pytest.MonkeyPatch) -> ProducerStateTable:
    """PID at 0, 101 at 10, 102 at 20 (evicting PID: forgotten below 20)."""
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    table = ProducerStateTable()
    for pid, offset in ((PID, 0), (101, 10), (102, 20)):
        table.update(pid, 0, 0, 10, base_offset=offset)
    assert table.forgot_below == 20
    return table


def test_only_a_log_start_at_or_past_the_offset_clears_it(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _evicted_table(monkeypatch)
    for start in (0, 10, 19):
        table.log_start_moved(start)
        assert _refuses(table), start
    table.log_start_moved(20)
    assert not _refuses(table) and table.forgot_below == 0


def test_a_later_eviction_moves_the_offset_up_never_down(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _evicted_table(monkeypatch)
    table.update(103, 0, 0, 10, base_offset=30)  # evicts 101, whose batch is at 10
    assert table.forgot_below == 30
    table.restore(table.export(), forgot_below=50, taken_at=60)
    table.update(104, 0, 0, 10, base_offset=60)
    assert table.forgot_below == 60
    table.log_start_moved(50)
    assert _refuses(table)


def test_a_log_cut_below_the_offset_keeps_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut at 15: PID's batch at 0 is still in the log, below the cut; the follower takes the
    leader's batches from 15 again. Only a log start at 20 says PID's batches are gone."""
    table = _evicted_table(monkeypatch)
    table.truncate_from(15)
    assert table.forgot_below == 20
    table.log_start_moved(15)
    assert _refuses(table)
    table.log_start_moved(20)
    assert not _refuses(table)


def test_an_undone_write_that_evicted_leaves_the_offset_as_it_was(monkeypatch: pytest.MonkeyPatch) -> None:
    table = _evicted_table(monkeypatch)
    table.begin_write()
    table.update(103, 0, 0, 10, base_offset=30)  # the write's eviction (of 101)
    assert table.forgot_below == 30
    table.undo_write()  # the write failed: 101 is back, and only PID is forgotten, below 20
    assert table.forgot_below == 20
    table.log_start_moved(20)
    assert not _refuses(table)


def test_a_reset_log_holds_no_batch_of_a_producer_it_forgot(monkeypatch: pytest.MonkeyPatch) -> None:
    """A follower's log reset to the leader's log start (after, or before, its own): the table
    learns every batch the log will hold from there, so nothing is forgotten -- also for a start
    below the old one, and for a table that had forgotten producers."""
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    leader = Partition("t", 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    _evicting_leader(leader)
    follower = Partition("t", 0, 2, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    follower.become_follower(1, 1, [1, 2], [1])
    follower.append_as_follower(leader.read(0, BATCH_MAX, leader.log_end_offset))
    assert follower.producers.forgot_below == 6
    for start in (40, 3):
        follower.reset_to(start)
        assert follower.producers.forgot_below == 0, start


def _segment_partition(directory: Path) -> Partition:
    engine = SegmentEngine(str(directory / "log"), EngineConfig(fsync="never", batch_bytes_max=BATCH_MAX))
    return Partition("t", 0, 1, engine, str(directory))


def test_a_snapshot_keeps_the_offset_and_the_open_learns_the_log_start(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    core = broker_core(tmp_path, 1, engine="segment")
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    _evicting_leader(part)
    _write_on(part, 30)
    core.close()  # a snapshot at the log end, of a table that forgot below 6
    core = broker_core(tmp_path, 1, engine="segment")
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    assert part.producers.forgot_below == 6, "the snapshot's offset, not its log end"
    part.become_leader(2, [1], [1], now_ms=0)
    assert not _newcomer_taken(part)
    core.apply_retention()  # clears it; the process dies before the next snapshot
    assert part.log_start_offset >= 6 and not part.producers.forgot_producers
    part.engine.close()
    core = broker_core(tmp_path, 1, engine="segment")
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    try:  # the snapshot restored says 6; the log starts past it
        assert not part.producers.forgot_producers
        part.become_leader(3, [1], [1], now_ms=0)
        assert _newcomer_taken(part)
    finally:
        core.close()


def _snapshot_file(offset: int, last: LastBatch, forgot: int, producers: list, magic: bytes = b"LOOMPSS1") -> bytes:
    """A snapshot's bytes laid out by hand; by default as code before ``forgot_below`` wrote it
    (format 1: ``forgot`` a 0/1 flag)."""
    ints = [offset, *last, forgot, len(producers)]
    for pid, epoch, batches in producers:
        ints += [pid, epoch, len(batches)] + [i for b in batches for i in b]
    body = struct.pack(f"<{len(ints)}q", *ints)
    return magic + struct.pack(">I", crc32c.crc32c(body)) + body


def test_an_older_snapshot_that_forgot_producers_forgot_them_below_its_offset(tmp_path: Path) -> None:
    part = _segment_partition(tmp_path)
    part.become_leader(1, [1], [1], now_ms=0)
    _append(part, _batch(PID))
    _append(part, _batch(101))
    part.close()
    [offset] = part.producer_snapshots.offsets
    assert offset == 6
    fresh = producer_snapshots.ProducerSnapshots(str(tmp_path)).load(offset)
    (tmp_path / producer_snapshots.snapshot_name(offset)).write_bytes(
        _snapshot_file(offset, fresh.last_batch, 1, fresh.producers))
    reopened = _segment_partition(tmp_path)
    try:
        assert reopened.producers.forgot_below == 6
        assert len(reopened.producers) == 2
    finally:
        reopened.close()


def test_a_snapshot_of_more_producers_than_the_table_holds_forgets_below_its_offset(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    table = ProducerStateTable()
    table.restore([(PID, 0, [(0, 2, 0)]), (101, 0, [(0, 2, 3)]), (102, 0, [(0, 2, 6)])], forgot_below=0, taken_at=9)
    assert table.forgot_below == 9 and len(table) == 2
    table.restore([(PID, 0, [(0, 2, 0)]), (101, 0, [(0, 2, 3)]), (102, 0, [(0, 2, 6)])], forgot_below=12, taken_at=9)
    assert table.forgot_below == 12


def test_the_snapshot_format_is_the_older_one_unless_producers_were_forgotten() -> None:
    """A table that forgot nothing is written as older code wrote it (older code reads it, as
    after a rollback); one that forgot producers in format 2, which older code skips as it
    skips a damaged snapshot (it then reads the log's tail, as without a snapshot)."""
    last = LastBatch(6, 1, 1234)
    producers = [(PID, 0, [(0, 2, 0)]), (101, 0, [(0, 2, 3)])]
    clean = producer_snapshots.encode(Snapshot(9, last, 0, producers))
    assert clean == _snapshot_file(9, last, 0, producers)
    forgot = producer_snapshots.encode(Snapshot(9, last, 6, producers))
    assert forgot[:8] == b"LOOMPSS2"
    decoded = producer_snapshots.decode(forgot)
    assert decoded.forgot_below == 6 and decoded.offset == 9 and decoded.last_batch == last
    assert [(p, e, list(map(tuple, b))) for p, e, b in decoded.producers] == producers
    assert producer_snapshots.decode(_snapshot_file(9, last, 1, producers)).forgot_below == 9
    for bad in (_snapshot_file(9, last, 2, producers), _snapshot_file(9, last, -1, producers)):
        with pytest.raises(SnapshotError):
            producer_snapshots.decode(bad)
    assert producer_snapshots.decode(_snapshot_file(9, last, 6, producers, b"LOOMPSS2")) == decoded
    for bad in (_snapshot_file(9, last, 2, producers), _snapshot_file(9, last, -1, producers),
                _snapshot_file(9, last, -6, producers, b"LOOMPSS2"),
                _snapshot_file(9, last, 6, producers, b"LOOMPSS3")):
        with pytest.raises(SnapshotError):
            producer_snapshots.decode(bad)


def test_a_rebuild_at_open_forgets_below_where_it_began_reading(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail_recovery, "PRODUCER_STATE_SCAN_RECORDS_MAX", 4)
    part = _segment_partition(tmp_path)
    part.become_leader(1, [1], [1], now_ms=0)
    for pid in (PID, 101, 102):
        _append(part, _batch(pid))
    part.close()
    drop_producer_snapshots(tmp_path)
    reopened = _segment_partition(tmp_path)
    try:  # read from 5 on (the batch holding it, at 3): PID's batch at 0 is not read
        assert reopened.producers.forgot_below == tail_recovery.tail_start(reopened) == 5
        assert _refuses(reopened.producers)
        reopened.producers.log_start_moved(3)
        assert _refuses(reopened.producers)
        reopened.producers.log_start_moved(6)
        assert not _refuses(reopened.producers)
    finally:
        reopened.close()
