"""A follower records producer and leader-epoch state only for batches its engine stored.

If the write fails (disk full, a corrupt batch later in the chunk), no state may remain that
names offsets the log does not hold: elected within the lag window, such a replica would
answer a client's retry "duplicate" with an offset that never held the batch."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import batch as B
from engines.api import EngineConfig, StorageFull
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine
from nodes.broker.partition import Partition
from tests.unit.fakes import as_leader_wrote, make_batch

BATCH_MAX = 1024 * 1024
LEADER, FOLLOWER = 1, 2


class _DiskFullEngine(SegmentEngine):
    """A real segment engine whose appends fail with StorageFull while ``full`` is set (a full
    disk, without filling one)."""

    full = False

    def append_many(self, batches, **kw):  # noqa: ANN001, ANN003, ANN201
        if self.full:
            raise StorageFull("No space left on device (simulated)")
        return super().append_many(batches, **kw)


def _batch(n: int, pid: int, seq: int, tag: str) -> bytes:
    return make_batch(n, pid, 0, seq, tag, keys=False)


def _follower(tmp_path: Path) -> tuple[Partition, _DiskFullEngine]:
    engine = _DiskFullEngine(str(tmp_path / "log"), EngineConfig(fsync="never", batch_bytes_max=BATCH_MAX))
    part = Partition("t", 0, FOLLOWER, engine, str(tmp_path))
    part.become_follower(LEADER, 1, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    return part, engine


def _assert_state_within_log(part: Partition) -> None:
    for epoch, start in part.epochs.entries:
        assert start < part.log_end_offset, f"epoch {epoch} starts at {start}, past the log end {part.log_end_offset}"


def test_disk_full_follower_keeps_no_state_for_the_failed_write(tmp_path: Path) -> None:
    part, engine = _follower(tmp_path)
    first = as_leader_wrote(_batch(2, pid=7, seq=0, tag="a"), 0, 1)
    assert part.append_as_follower(first) == 1
    engine.full = True
    second = as_leader_wrote(_batch(3, pid=7, seq=2, tag="b"), 2, 2)
    with pytest.raises(StorageFull):
        part.append_as_follower(second)
    assert part.log_end_offset == 2
    assert part.epochs.entries == [(1, 0)]  # epoch 2 never reached the log
    _assert_state_within_log(part)
    # elected before the leader's data arrives: the producer retries the batch it was not
    # acknowledged for; it must be written, not answered "duplicate" at offset 2
    engine.full = False
    part.become_leader(3, [LEADER, FOLLOWER], [FOLLOWER], now_ms=0)
    results, written = part.append_as_leader([_batch(3, pid=7, seq=2, tag="b")], BATCH_MAX)
    assert results == [(2, 0, "")] and len(written) == 1
    assert part.log_end_offset == 5
    part.close()


def test_corrupt_batch_later_in_the_chunk_leaves_state_matching_the_log(tmp_path: Path) -> None:
    part, _ = _follower(tmp_path)
    good = as_leader_wrote(_batch(2, pid=7, seq=0, tag="a"), 0, 1)
    bad = bytearray(as_leader_wrote(_batch(3, pid=8, seq=0, tag="b"), 2, 2))
    bad[-1] ^= 0xFF  # payload damaged: CRC mismatch
    with pytest.raises(B.BatchError):
        part.append_as_follower(good + bytes(bad))
    _assert_state_within_log(part)
    assert 2 not in [start for _, start in part.epochs.entries]
    # producer 8's batch is not in the log: a leader-elect must take its retry as new
    part.become_leader(3, [LEADER, FOLLOWER], [FOLLOWER], now_ms=0)
    end = part.log_end_offset
    results, _ = part.append_as_leader([_batch(3, pid=8, seq=0, tag="b")], BATCH_MAX)
    assert results == [(end, 0, "")]
    if end == 2:  # the good prefix was kept: producer 7's retry is a duplicate at its offset
        assert part.append_as_leader([_batch(2, pid=7, seq=0, tag="a")], BATCH_MAX)[0] == [(0, 0, "duplicate")]
    part.close()


def test_follower_state_survives_on_the_memory_engine_too() -> None:
    """The ordinary path: state is recorded for every stored batch."""
    part = Partition("t", 0, FOLLOWER, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    part.become_follower(LEADER, 2, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    chunk = (as_leader_wrote(_batch(2, pid=7, seq=0, tag="a"), 0, 1)
             + as_leader_wrote(_batch(2, pid=7, seq=2, tag="b"), 2, 2))
    assert part.append_as_follower(chunk) == 2
    assert part.epochs.entries == [(1, 0), (2, 2)]
    part.become_leader(3, [LEADER, FOLLOWER], [FOLLOWER], now_ms=0)
    assert part.append_as_leader([_batch(2, pid=7, seq=2, tag="b")], BATCH_MAX)[0] == [(2, 0, "duplicate")]
