"""The zero-copy buffers at the partition: the leader stamps a written batch in place and
touches no refused batch nor any byte the CRC covers; a follower keeps nothing of the views it
appended from (libzmq reuses their memory)."""

from __future__ import annotations

from pathlib import Path

from engines import batch as B
from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric.buffers import OwnedFrame
from fabric.metadata import PartitionInfo
from nodes.broker.partition import Partition
from tests.unit.fakes import broker_core, make_batch

LEADER, FOLLOWER = 1, 2
EPOCH = 5


def _leader(tmp_path: Path) -> Partition:
    core = broker_core(tmp_path, LEADER)
    part = core.open_partition("t", 0, {})
    core.apply_partition_state(part, PartitionInfo("t", 0, LEADER, EPOCH, (LEADER,), (LEADER,), 1), now_ms=0)
    return part


def test_refused_batches_are_left_as_the_client_sent_them(tmp_path: Path) -> None:
    """A corrupt batch, one over the size limit and a retried duplicate are answered without
    being written: their buffers are not stamped."""
    part = _leader(tmp_path)
    first = B.build(b"p" * 2000, 2, 1, 1, producer_id=9, producer_epoch=0, base_sequence=0)
    assert part.append_as_leader([OwnedFrame(first)], 1 << 20)[0][0][1] == 0
    corrupt = bytearray(make_batch(2))
    corrupt[-1] ^= 0xFF
    refused = [OwnedFrame(corrupt), OwnedFrame(make_batch(2)), OwnedFrame(first)]
    originals = [bytes(b) for b in refused]
    results, written = part.append_as_leader(refused[:1] + refused[2:], 1 << 20)
    assert [r[1] for r in results] == [P.CORRUPT_MESSAGE, 0] and results[1][2] == "duplicate" and written == []
    results, written = part.append_as_leader(refused[1:2], 10)
    assert results[0][1] == P.RECORD_TOO_LARGE and written == []
    assert [bytes(b) for b in refused] == originals


def test_the_stamp_touches_no_byte_the_crc_covers() -> None:
    """Kafka's layout: the CRC covers from the attributes on; base offset and leader epoch are
    outside it, so a batch verified and then stamped still verifies."""
    batch = bytearray(make_batch(3))
    B.set_leader_epoch(batch, 12345)
    B.set_base_offset(batch, 1 << 40)
    h = B.verify(batch)
    assert h.leader_epoch == 12345 and h.base_offset == 1 << 40
    assert B.CRC_START == 21 and h.crc == B.crc32c(memoryview(batch)[B.CRC_START:])


def test_a_follower_keeps_nothing_of_a_replicated_view(tmp_path: Path) -> None:
    """The memory engine behind a follower: the views it was given are released and their
    memory overwritten after the append (as libzmq reuses a message's memory); the log is
    unchanged, and a view still held would make the resize raise BufferError."""
    leader = Partition("t", 0, LEADER, MemoryEngine("", EngineConfig()), None)
    leader.become_leader(EPOCH, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    leader.append_as_leader([OwnedFrame(make_batch(4)), OwnedFrame(make_batch(2))], 1 << 20)
    chunk = leader.read(0, 1 << 20, 6)
    follower = Partition("t", 0, FOLLOWER, MemoryEngine("", EngineConfig()), None)
    follower.become_follower(LEADER, EPOCH, [LEADER, FOLLOWER], [LEADER, FOLLOWER])
    backing = bytearray(chunk)
    view = memoryview(backing)
    assert follower.append_as_follower(view) == 2
    backing[:] = bytes(len(backing))
    view.release()
    backing.clear()
    assert follower.read(0, 1 << 20, 6) == chunk
