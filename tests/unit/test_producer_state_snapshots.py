"""Idempotent-producer state kept across a restart by producer-state snapshots.

A replica rebuilt its producer table at open from at most the last
PRODUCER_STATE_SCAN_RECORDS_MAX records of its log; when that read began past the log start
(a long log) the table may have forgotten producers, and a possibly written retry from a
producer whose last batch lay before the read was refused with unknown_producer_id. A snapshot of the table (at clean close and periodically) restores it, and
only the log after the snapshot is read. A snapshot is used only for the log it was taken from:
truncations delete the snapshots above the new end first, and each snapshot names the last
batch it covers, checked at open. Real partitions on real engines in a temp directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines.api import EngineConfig, StorageFailed, StorageFull
from engines.lmdb_engine import LmdbEngine
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine
from fabric import protocol as P
from nodes.broker import producer_snapshots, tail_recovery
from nodes.broker.partition import Partition
from tests.unit.fakes import broker_core, drop_producer_snapshots, make_batch, padded_batch

BATCH_MAX = 1024 * 1024
PID = 7
SCAN_MAX = 4  # PRODUCER_STATE_SCAN_RECORDS_MAX, lowered: our batch lies before the tail read at open
ENGINES = {"segment": SegmentEngine, "lmdb": LmdbEngine}


def _open(directory: Path, engine: str = "segment") -> Partition:
    cls = ENGINES[engine]
    return Partition("t", 0, 1, cls(str(directory / "log"), EngineConfig(fsync="never", batch_bytes_max=BATCH_MAX)),
                     str(directory))


def _ours(seq: int = 0) -> bytes:
    return make_batch(3, pid=PID, epoch=0, seq=seq, tag=f"ours{seq}-")


def _write(part: Partition, batches: list[bytes]) -> list[int]:
    results, _ = part.append_as_leader(batches, BATCH_MAX, [False] * len(batches))
    assert all(code == 0 for _, code, _ in results), results
    return [offset for offset, _, _ in results]


def _leader_with_ours_before_the_tail(directory: Path, engine: str = "segment") -> Partition:
    """A leader whose log holds our batch at offset 0, then other producers' batches: more
    records after ours than the tail read at open covers."""
    part = _open(directory, engine)
    part.become_leader(1, [1], [1], now_ms=0)
    assert _write(part, [_ours()]) == [0]
    for other in range(100, 104):
        _write(part, [make_batch(3, pid=other, epoch=0, seq=0)])
    return part


def _crash(part: Partition) -> None:
    """The process dies: the engine's files stay as they are, no snapshot is written at close."""
    part.engine.close()


def _snapshots(directory: Path) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(producer_snapshots.SNAPSHOT_SUFFIX))


def _retry(part: Partition, data: bytes) -> tuple[int, int, str]:
    (result,), _ = part.append_as_leader([data], BATCH_MAX, [True])
    return result


@pytest.mark.parametrize("engine", ["segment", "lmdb"])
def test_a_restarted_leader_recognises_a_retry_from_before_the_tail_it_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engine: str) -> None:
    monkeypatch.setattr(tail_recovery, "PRODUCER_STATE_SCAN_RECORDS_MAX", SCAN_MAX)
    _leader_with_ours_before_the_tail(tmp_path, engine).close()
    reopened = _open(tmp_path, engine)
    try:
        assert not reopened.producers.forgot_producers
        reopened.become_leader(2, [1], [1], now_ms=0)
        end = reopened.log_end_offset
        assert _retry(reopened, _ours()) == (0, 0, "duplicate")  # answered with the original offset
        assert reopened.log_end_offset == end
        assert _retry(reopened, _ours(seq=3)) == (end, 0, "")  # the next batch: taken in sequence
    finally:
        reopened.close()


def test_a_broker_reopened_after_retention_recognises_a_retry(tmp_path: Path) -> None:
    core = broker_core(tmp_path, 1, engine="segment")
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    part.become_leader(1, [1], [1], now_ms=0)
    assert _write(part, [_ours()]) == [0]
    for i in range(30):
        _write(part, [padded_batch(3, tag=f"o{i}-")])
    core.apply_retention()
    assert part.log_start_offset > 3, "retention did not delete our batch"
    core.close()
    core = broker_core(tmp_path, 1, engine="segment")
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    try:
        assert not part.producers.forgot_producers
        part.become_leader(2, [1], [1], now_ms=0)
        assert _retry(part, _ours()) == (0, 0, "duplicate")
    finally:
        core.close()


def test_a_snapshot_is_written_periodically_and_restores_the_table_after_a_crash(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail_recovery, "PRODUCER_STATE_SCAN_RECORDS_MAX", SCAN_MAX)
    part = _leader_with_ours_before_the_tail(tmp_path)
    part.maybe_snapshot_producers(now_ms=0)  # the first call only starts the clock
    assert _snapshots(tmp_path) == []
    part.maybe_snapshot_producers(now_ms=producer_snapshots.PRODUCER_SNAPSHOT_INTERVAL_MS)
    assert _snapshots(tmp_path) == [producer_snapshots.snapshot_name(part.log_end_offset)]
    _write(part, [make_batch(3, pid=200, epoch=0, seq=0)])  # after the snapshot: read at open
    _crash(part)
    reopened = _open(tmp_path)
    try:
        assert not reopened.producers.forgot_producers
        reopened.become_leader(2, [1], [1], now_ms=0)
        assert _retry(reopened, _ours()) == (0, 0, "duplicate")
        assert _retry(reopened, make_batch(3, pid=200, epoch=0, seq=0)) == (15, 0, "duplicate")
    finally:
        reopened.close()


def test_a_snapshot_is_written_after_enough_records_without_waiting(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_snapshots, "PRODUCER_SNAPSHOT_INTERVAL_RECORDS", 10)
    part = _leader_with_ours_before_the_tail(tmp_path)
    part.maybe_snapshot_producers(now_ms=0)
    assert _snapshots(tmp_path) == [producer_snapshots.snapshot_name(15)]
    part.maybe_snapshot_producers(now_ms=1)  # nothing appended since: nothing written
    _write(part, [make_batch(3, pid=200, epoch=0, seq=0)])
    part.maybe_snapshot_producers(now_ms=2)  # 3 records: not yet
    assert _snapshots(tmp_path) == [producer_snapshots.snapshot_name(15)]
    part.close()


def _follower_cut_below_its_snapshot(directory: Path, keep_stale_copy: bool) -> tuple[Partition, bytes | None]:
    """A replica wrote a snapshot at clean close naming our batch; reopened as a follower it
    truncates below our batch (its leader never had it) and takes the leader's different
    batches up to past the snapshot's offset. Returns the replica (not closed) and, with
    ``keep_stale_copy``, the snapshot file's bytes as they were before the truncation."""
    part = _open(directory)
    part.become_leader(1, [1], [1], now_ms=0)
    _write(part, [make_batch(3, pid=100, epoch=0, seq=0)])
    assert _write(part, [_ours()]) == [3]
    part.close()
    [name] = _snapshots(directory)
    stale = (directory / name).read_bytes() if keep_stale_copy else None
    part = _open(directory)
    part.become_follower(2, 2, [1, 2], [1, 2])
    part.truncate_to(3)
    assert _snapshots(directory) == [], "a snapshot above the new log end was kept"
    leader = Partition("t", 0, 2, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    leader.become_leader(2, [1, 2], [2], now_ms=0)
    _write(leader, [make_batch(3, pid=100, epoch=0, seq=0)])
    _write(leader, [make_batch(3, pid=300, epoch=0, seq=0), make_batch(3, pid=301, epoch=0, seq=0)])
    part.append_as_follower(leader.read(3, BATCH_MAX, leader.log_end_offset))
    assert part.log_end_offset == 9
    return part, stale


def _assert_ours_is_unknown_and_written(part: Partition) -> None:
    """Our batch is not in the log: its retry is written, never answered with an offset the
    log no longer holds."""
    part.become_leader(3, [1], [1], now_ms=0)
    assert not part.producers.forgot_producers
    end = part.log_end_offset
    assert _retry(part, _ours()) == (end, 0, "")


def test_a_truncation_below_a_snapshot_deletes_it(tmp_path: Path) -> None:
    part, _ = _follower_cut_below_its_snapshot(tmp_path, keep_stale_copy=False)
    _crash(part)
    reopened = _open(tmp_path)
    try:
        _assert_ours_is_unknown_and_written(reopened)
    finally:
        reopened.close()


def test_a_stale_snapshot_left_by_a_crash_around_the_truncation_is_not_used(tmp_path: Path) -> None:
    part, stale = _follower_cut_below_its_snapshot(tmp_path, keep_stale_copy=True)
    assert stale is not None
    _crash(part)
    # as if the process died after cutting the log and before deleting the snapshot
    (tmp_path / producer_snapshots.snapshot_name(6)).write_bytes(stale)
    reopened = _open(tmp_path)
    try:
        _assert_ours_is_unknown_and_written(reopened)
        assert _snapshots(tmp_path) == [], "the stale snapshot was kept"
    finally:
        reopened.close()


def test_a_snapshot_above_a_log_end_cut_at_open_is_not_used(tmp_path: Path) -> None:
    part = _leader_with_ours_before_the_tail(tmp_path)
    part.close()
    part = _open(tmp_path)
    part.engine.truncate_to(3)  # recovery (or a crash) lost everything after our batch
    _crash(part)
    reopened = _open(tmp_path)
    try:
        assert reopened.log_end_offset == 3 and _snapshots(tmp_path) == []
    finally:
        reopened.close()


@pytest.mark.parametrize("damage", ["flip", "cut", "empty", "garbage"])
def test_a_corrupt_snapshot_is_ignored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str) -> None:
    monkeypatch.setattr(tail_recovery, "PRODUCER_STATE_SCAN_RECORDS_MAX", SCAN_MAX)
    _leader_with_ours_before_the_tail(tmp_path).close()
    [name] = _snapshots(tmp_path)
    path = tmp_path / name
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x40
    elif damage == "cut":
        data = data[:len(data) - 5]
    elif damage == "empty":
        data = bytearray()
    else:
        data = bytearray(b"not a snapshot at all\n")
    path.write_bytes(bytes(data))
    reopened = _open(tmp_path)
    try:  # as without a snapshot: the tail read does not reach our batch
        assert reopened.producers.forgot_producers
        reopened.become_leader(2, [1], [1], now_ms=0)
        assert _retry(reopened, _ours())[1] == P.UNKNOWN_PRODUCER_ID
    finally:
        reopened.close()
    # the damaged file at that log end was replaced at close
    assert producer_snapshots.ProducerSnapshots(str(tmp_path)).load(15).forgot_below == 15 - SCAN_MAX


def test_an_older_data_directory_without_snapshots_opens_as_before(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail_recovery, "PRODUCER_STATE_SCAN_RECORDS_MAX", SCAN_MAX)
    _leader_with_ours_before_the_tail(tmp_path).close()
    drop_producer_snapshots(tmp_path)
    reopened = _open(tmp_path)
    try:
        assert reopened.producers.forgot_producers
        assert len(reopened.producers) == 2  # the producers of the last SCAN_MAX records' batches
        reopened.become_leader(2, [1], [1], now_ms=0)
        assert _retry(reopened, _ours())[1] == P.UNKNOWN_PRODUCER_ID
    finally:
        reopened.close()


def test_a_forgetful_table_stays_forgetful_through_a_snapshot(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tail_recovery, "PRODUCER_STATE_SCAN_RECORDS_MAX", SCAN_MAX)
    _leader_with_ours_before_the_tail(tmp_path).close()
    drop_producer_snapshots(tmp_path)
    _open(tmp_path).close()  # rebuilt from the tail only: its snapshot says so
    reopened = _open(tmp_path)
    try:
        assert reopened.producers.forgot_producers
    finally:
        reopened.close()


def test_the_snapshots_kept_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producer_snapshots, "PRODUCER_SNAPSHOT_INTERVAL_RECORDS", 1)
    part = _leader_with_ours_before_the_tail(tmp_path)
    for i in range(5):
        _write(part, [make_batch(1, pid=400 + i, epoch=0, seq=0)])
        part.maybe_snapshot_producers(now_ms=i)
    assert len(_snapshots(tmp_path)) == producer_snapshots.PRODUCER_SNAPSHOTS_KEPT
    part.close()


def test_the_memory_engine_writes_no_snapshot(tmp_path: Path) -> None:
    part = Partition("t", 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), str(tmp_path))
    part.become_leader(1, [1], [1], now_ms=0)
    _write(part, [_ours()])
    part.maybe_snapshot_producers(now_ms=producer_snapshots.PRODUCER_SNAPSHOT_INTERVAL_MS * 2)
    part.close()
    assert _snapshots(tmp_path) == []


def test_a_partition_closed_by_a_write_that_stopped_the_node_writes_no_snapshot(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed fsync stops the broker from inside a leader's write (StorageFailed): the table
    already names the batches being written, which the log does not hold."""
    part = _open(tmp_path)
    part.become_leader(1, [1], [1], now_ms=0)
    _write(part, [_ours()])

    def failed(*_: object, **__: object) -> list[int]:
        raise StorageFailed("fsync failed")
    monkeypatch.setattr(part.engine, "append_many", failed)
    with pytest.raises(StorageFailed):
        part.append_as_leader([_ours(seq=3)], BATCH_MAX, [False])
    part.close()
    assert _snapshots(tmp_path) == []


def test_a_failed_snapshot_is_tried_again_an_interval_later_not_at_every_tick(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails (a full disk) costs the table's encoding on the reactor each time: it
    is tried again PRODUCER_SNAPSHOT_INTERVAL_MS later, not at each HW-checkpoint tick (5 s)."""
    attempts: list[str] = []
    real_replace_file = producer_snapshots.replace_file

    def full_disk(path: str, data: bytes, **kwargs: object) -> bool:
        attempts.append(path)
        if len(attempts) == 1:
            raise StorageFull(f"write {path}: no space left on device")
        return real_replace_file(path, data, **kwargs)  # type: ignore[arg-type]
    monkeypatch.setattr(producer_snapshots, "replace_file", full_disk)
    monkeypatch.setattr(producer_snapshots, "PRODUCER_SNAPSHOT_INTERVAL_RECORDS", 10)
    part = _leader_with_ours_before_the_tail(tmp_path)  # 15 records: due at once
    interval_ms = producer_snapshots.PRODUCER_SNAPSHOT_INTERVAL_MS
    try:
        part.maybe_snapshot_producers(now_ms=0)
        assert len(attempts) == 1 and _snapshots(tmp_path) == []
        for now_ms in range(5_000, interval_ms, 5_000):
            part.maybe_snapshot_producers(now_ms=now_ms)
        assert len(attempts) == 1, "a failed snapshot was tried again at every tick"
        part.maybe_snapshot_producers(now_ms=interval_ms)
        assert len(attempts) == 2 and _snapshots(tmp_path) == [producer_snapshots.snapshot_name(15)]
    finally:
        part.close()
