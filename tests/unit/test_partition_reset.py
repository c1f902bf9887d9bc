"""Partition.reset_to over the memory and segment engines, and the follower's use of it: a
replica whose log end is below the leader's log start (retention ran while it was down)
restarts its log at the leader's log start and catches up (Kafka's truncateFullyAndStartAt)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Callable

import pytest

from engines import batch as B
from engines.api import EngineConfig, EngineError, OffsetOutOfRange
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine
from fabric import protocol as P
from fabric.records import build_batch
from nodes.broker.fetcher import ReplicaFetcher
from nodes.broker.node import Broker
from nodes.broker.partition import Partition

BATCH_MAX = 1024 * 1024
LEADER, FOLLOWER = 1, 2
EXCHANGES_MAX = 50  # bound on the simulated fetch loop


def _config() -> EngineConfig:
    return EngineConfig(fsync="never", segment_bytes_max=4096, index_interval_bytes=256, batch_bytes_max=BATCH_MAX)


def _memory(directory: Path) -> Partition:
    return Partition("t", 0, FOLLOWER, MemoryEngine("", _config()), None)


def _segment(directory: Path) -> Partition:
    directory.mkdir(parents=True, exist_ok=True)
    return Partition("t", 0, FOLLOWER, SegmentEngine(str(directory / "log"), _config()), str(directory))


ENGINES = {"memory": _memory, "segment": _segment}


@pytest.fixture(params=sorted(ENGINES))
def make_part(request, tmp_path: Path):
    opened: list[Partition] = []

    def make(name: str = "p", broker_id: int = FOLLOWER) -> Partition:
        part = ENGINES[request.param](tmp_path / name)
        part.broker_id = broker_id
        opened.append(part)
        return part

    make.engine = request.param  # type: ignore[attr-defined]
    yield make
    for part in opened:
        part.close()


def _batch(n: int = 3, pid: int = -1, seq: int = -1, tag: str = "v") -> bytes:
    recs = [(1_700_000_000_000 + i, f"k{i}".encode(), f"{tag}{i}".encode() * 20, None) for i in range(n)]
    return build_batch(recs, producer_id=pid, producer_epoch=0 if pid >= 0 else -1, base_sequence=seq)


def _as_leader_wrote(data: bytes, base_offset: int, epoch: int) -> bytes:
    buf = bytearray(data)
    B.set_base_offset(buf, base_offset)
    B.set_leader_epoch(buf, epoch)
    return bytes(buf)


def _follow(part: Partition, epoch: int = 1) -> None:
    part.become_follower(LEADER, epoch, [LEADER, FOLLOWER], [LEADER, FOLLOWER])


def _fill_follower(part: Partition, epochs: tuple[int, ...] = (1, 2), per_epoch: int = 4) -> None:
    """Follower batches as a leader wrote them: ``per_epoch`` batches of 3 records per epoch,
    from an idempotent producer."""
    seq = 0
    for epoch in epochs:
        for _ in range(per_epoch):
            data = _as_leader_wrote(_batch(3, pid=7, seq=seq), part.log_end_offset, epoch)
            assert part.append_as_follower(data) == 1
            seq += 3
    part.set_high_watermark_from_leader(part.log_end_offset - 3)


# -- Partition.reset_to ------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["above", "below", "at"])
def test_reset_empties_log_epochs_and_producer_state(make_part: Callable[..., Partition], where: str) -> None:
    part = make_part()
    _follow(part, epoch=2)
    _fill_follower(part)
    end = part.log_end_offset
    assert part.epochs.entries == [(1, 0), (2, 12)] and len(part.producers) == 1
    offset = {"above": end + 500, "below": 5, "at": end}[where]
    part.reset_to(offset)
    assert (part.log_start_offset, part.log_end_offset, part.high_watermark) == (offset, offset, offset)
    assert part.engine.size_bytes == 0
    assert part.epochs.entries == [] and part.epochs.latest_epoch == -1
    assert len(part.producers) == 0
    with pytest.raises(OffsetOutOfRange):
        part.engine.read(offset - 1, 1024)
    assert part.read(offset, 1024, part.log_end_offset) == b""


def test_follower_appends_from_the_reset_offset(make_part: Callable[..., Partition]) -> None:
    part = make_part()
    _follow(part, epoch=5)
    _fill_follower(part)
    part.reset_to(1000)
    # the leader's batches from its log start on: epoch 4 then 5
    stream = [_as_leader_wrote(_batch(3, pid=7, seq=100), 1000, 4),
              _as_leader_wrote(_batch(2, pid=7, seq=103), 1003, 5)]
    assert part.append_as_follower(b"".join(stream)) == 2
    assert (part.log_start_offset, part.log_end_offset) == (1000, 1005)
    assert part.epochs.entries == [(4, 1000), (5, 1003)]
    part.set_high_watermark_from_leader(1005)
    assert part.high_watermark == 1005
    assert [h.base_offset for h in B.split_headers(part.read(1000, 1 << 20, part.log_end_offset))] == [1000, 1003]
    # a batch that does not continue the log (a gap) is not taken
    assert part.append_as_follower(_as_leader_wrote(_batch(1), 2000, 5)) == 0


def test_reset_survives_reopen(tmp_path: Path) -> None:
    part = _segment(tmp_path / "p")
    _follow(part)
    _fill_follower(part, per_epoch=30)
    assert part.engine.segment_count > 1  # type: ignore[attr-defined]
    part.reset_to(4242)
    part.append_as_follower(_as_leader_wrote(_batch(2), 4242, 9))
    part.close()
    again = _segment(tmp_path / "p")
    try:
        assert (again.log_start_offset, again.log_end_offset) == (4242, 4244)
        assert again.epochs.entries == [(9, 4242)]
    finally:
        again.close()


def test_reset_to_a_bad_offset_leaves_the_partition_alone(make_part: Callable[..., Partition]) -> None:
    part = make_part()
    _follow(part)
    _fill_follower(part)
    before = (part.log_start_offset, part.log_end_offset, list(part.epochs.entries), part.high_watermark)
    with pytest.raises(EngineError):
        part.reset_to(-3)
    assert (part.log_start_offset, part.log_end_offset, part.epochs.entries, part.high_watermark) == before


# -- the follower's fetcher and the leader's answers -------------------------------------------
def _fetcher(part: Partition) -> ReplicaFetcher:
    """A ReplicaFetcher without sockets: only what _apply touches."""
    f = ReplicaFetcher.__new__(ReplicaFetcher)
    f.partitions = {(part.topic, part.partition): part}
    f._stream_ready = {}
    f.last_error = ""
    return f


def _leader_answer(leader: Partition, follower: Partition) -> tuple[list, bytes]:
    """The leader's answer to one replica fetch by ``follower`` (Broker._fetch_one)."""
    broker = SimpleNamespace(broker_id=leader.broker_id, partitions={(leader.topic, leader.partition): leader},
                             _dirty=False)
    tp = [follower.topic, follower.partition, follower.log_end_offset, 64 * 1024,
          follower.leader_epoch, follower.epochs.latest_epoch]
    return Broker._fetch_one(broker, tp, FOLLOWER, now_ms=1000, budget=64 * 1024)


def _leader_with_retention(make_part: Callable[..., Partition], epochs: tuple[int, ...]) -> Partition:
    """A leader whose log went through ``epochs`` and then lost its old batches to retention."""
    leader = make_part("leader", broker_id=LEADER)
    for epoch in epochs:
        leader.become_leader(epoch, [LEADER, FOLLOWER], [LEADER], now_ms=0)
        for i in range(30):
            results, _ = leader.append_as_leader([_batch(3, tag=f"e{epoch}-{i}")], BATCH_MAX)
            assert results[0][1] == 0
    leader.engine.delete_before(leader.log_end_offset - 30)
    leader.epochs.truncate_from_start(leader.log_start_offset)
    assert leader.log_start_offset > 12
    return leader


def _catch_up(leader: Partition, follower: Partition) -> int:
    fetcher = _fetcher(follower)
    asked = {(follower.topic, follower.partition): follower.leader_epoch}
    for exchange in range(EXCHANGES_MAX):
        if follower.log_end_offset == leader.log_end_offset:
            return exchange
        head, data = _leader_answer(leader, follower)
        fetcher._apply(head, data, asked)
    raise AssertionError(f"follower stuck at {follower.log_end_offset} (leader log "
                         f"[{leader.log_start_offset}, {leader.log_end_offset}), last error {fetcher.last_error})")


@pytest.mark.parametrize("leader_epochs", [(1,), (1, 2, 3)], ids=["same-epoch", "epochs-moved-on"])
def test_follower_behind_leader_log_start_catches_up(make_part: Callable[..., Partition],
                                                     leader_epochs: tuple[int, ...]) -> None:
    leader = _leader_with_retention(make_part, leader_epochs)
    follower = make_part("follower")
    _follow(follower, epoch=leader_epochs[-1])
    _fill_follower(follower, epochs=(1,), per_epoch=2)  # what it had before it went down
    assert follower.log_end_offset < leader.log_start_offset
    _catch_up(leader, follower)
    assert follower.log_start_offset == leader.log_start_offset
    assert follower.engine.read(follower.log_start_offset, 1 << 20) == leader.engine.read(leader.log_start_offset, 1 << 20)
    assert follower.epochs.entries[-1][0] == leader_epochs[-1]


def test_out_of_range_not_behind_the_log_start_does_not_reset(make_part: Callable[..., Partition]) -> None:
    part = make_part()
    _follow(part)
    _fill_follower(part)
    end = part.log_end_offset
    fetcher = _fetcher(part)
    entry = ["t", 0, P.OFFSET_OUT_OF_RANGE, 0, end - 3, 0, None]  # the leader's start is below ours
    assert fetcher._apply(entry, b"", {("t", 0): part.leader_epoch}) is False
    assert (part.log_start_offset, part.log_end_offset) == (0, end)
    entry = ["t", 0, P.OFFSET_OUT_OF_RANGE, 0, end + 900, end + 500, None]
    assert fetcher._apply(entry, b"", {("t", 0): part.leader_epoch}) is True
    assert (part.log_start_offset, part.log_end_offset) == (end + 500, end + 500)
