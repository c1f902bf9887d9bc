"""A damaged leader-epoch field (batch header bytes 12-15, outside the batch CRC as in Kafka).

Recovery must not accept a batch whose epoch contradicts the leader-epoch checkpoint (older
than the epoch the checkpoint says covers its offset, or newer than the checkpoint's latest),
and replication must not accept a batch whose epoch goes backwards. Before, a flip in the
unflushed tail was accepted, the epoch cache took the bogus epoch, and it replicated."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from engines import batch as B
from engines.api import EngineConfig
from engines.segment import SegmentEngine
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024
ME, OTHER = 1, 2


def _batch(tag: str, pid: int = -1, seq: int = -1) -> bytes:
    return make_batch(3, pid, 0 if pid >= 0 else -1, seq, tag, keys=False)


def _open(directory: Path) -> Partition:
    engine = SegmentEngine(str(directory / "log"), EngineConfig(fsync="never", batch_bytes_max=BATCH_MAX))
    return Partition("t", 0, ME, engine, str(directory))


def _write_two_epochs(directory: Path) -> None:
    """Epoch 2: offsets 0..8, epoch 5: offsets 9..17 (three batches of three records each);
    the last batch is from idempotent producer 7."""
    part = _open(directory)
    part.become_leader(2, [ME, OTHER], [ME], now_ms=0)
    for i in range(3):
        assert part.append_as_leader([_batch(f"a{i}")], BATCH_MAX)[0][0][1] == 0
    part.become_leader(5, [ME, OTHER], [ME], now_ms=0)
    for i in range(2):
        assert part.append_as_leader([_batch(f"b{i}")], BATCH_MAX)[0][0][1] == 0
    assert part.append_as_leader([_batch("c", pid=7, seq=0)], BATCH_MAX)[0][0][1] == 0
    assert part.epochs.entries == [(2, 0), (5, 9)]
    part.close()


def _set_last_batch_epoch(directory: Path, how: str) -> None:
    """Change bytes 12-15 of the last batch of the newest segment file (CRC left as it is)."""
    seg = sorted((directory / "log").glob("*.log"))[-1]
    raw = bytearray(seg.read_bytes())
    last = [pos for pos in _batch_positions(raw)][-1]
    if how == "flip-high-byte":  # 5 -> 0xFF000005: negative
        raw[last + 12] ^= 0xFF
    elif how == "flip-second-byte":  # 5 -> 0x00FF0005: far beyond the checkpoint's latest
        raw[last + 13] ^= 0xFF
    else:  # an older epoch the checkpoint also knows (5 -> 2), or one it never saw (5 -> 3)
        struct.pack_into(">i", raw, last + 12, int(how))
    seg.write_bytes(bytes(raw))


def _batch_positions(raw: bytes | bytearray) -> list[int]:
    positions, pos = [], 0
    for h, view in B.iter_batches(raw):
        positions.append(pos)
        pos += len(view)
    return positions


def _stored_epochs(part: Partition) -> list[tuple[int, int]]:
    data = part.engine.read(part.log_start_offset, 1 << 20) if part.log_end_offset else b""
    return [(h.base_offset, h.leader_epoch) for h in B.split_headers(data)]


@pytest.mark.parametrize("how", ["flip-high-byte", "flip-second-byte", "2", "3"])
def test_recovery_cuts_a_batch_whose_leader_epoch_was_damaged(tmp_path: Path, how: str) -> None:
    _write_two_epochs(tmp_path)
    _set_last_batch_epoch(tmp_path, how)
    part = _open(tmp_path)
    try:
        assert part.log_end_offset == 15, "the damaged last batch must be cut"
        assert _stored_epochs(part) == [(0, 2), (3, 2), (6, 2), (9, 5), (12, 5)]
        assert part.epochs.entries == [(2, 0), (5, 9)]
        # producer 7's batch is gone with it: its retry is written again, not a "duplicate"
        part.become_leader(6, [ME, OTHER], [ME], now_ms=0)
        assert part.append_as_leader([_batch("c", pid=7, seq=0)], BATCH_MAX)[0] == [(15, 0, "")]
    finally:
        part.close()


def test_recovery_keeps_an_undamaged_log(tmp_path: Path) -> None:
    _write_two_epochs(tmp_path)
    part = _open(tmp_path)
    try:
        assert part.log_end_offset == 18
        assert part.epochs.entries == [(2, 0), (5, 9)]
    finally:
        part.close()


def test_recovery_without_an_epoch_checkpoint_still_refuses_epochs_going_backwards(tmp_path: Path) -> None:
    _write_two_epochs(tmp_path)
    (tmp_path / "leader-epoch-checkpoint").unlink()
    _set_last_batch_epoch(tmp_path, "flip-high-byte")
    part = _open(tmp_path)
    try:
        assert part.log_end_offset == 15
        assert part.epochs.entries == [(2, 0), (5, 9)]  # rebuilt from the batches kept
    finally:
        part.close()


def test_follower_refuses_a_batch_whose_epoch_goes_backwards(tmp_path: Path) -> None:
    _write_two_epochs(tmp_path / "leader")
    leader = _open(tmp_path / "leader")
    data = bytearray(leader.engine.read(0, 1 << 20))
    leader.close()
    last = _batch_positions(data)[-1]
    struct.pack_into(">i", data, last + 12, 2)  # 5 -> 2 after two epoch-5 batches
    follower = _open(tmp_path / "follower")
    follower.become_follower(OTHER, 5, [ME, OTHER], [ME, OTHER])
    try:
        with pytest.raises(B.BatchError):
            follower.append_as_follower(bytes(data))
        assert follower.log_end_offset == 0 and follower.epochs.entries == []
        assert follower.append_as_follower(bytes(data[:last])) == 5  # the undamaged prefix
        assert follower.epochs.entries == [(2, 0), (5, 9)]
    finally:
        follower.close()
