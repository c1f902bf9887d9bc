"""Partition.reset_to over the memory and segment engines: the log, its epochs and producer state
restart empty at an offset (Kafka's truncateFullyAndStartAt). The follower's use of it, against
a real leader, is in test_broker_fetcher.py."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from engines import batch as B
from engines.api import EngineConfig, EngineError, OffsetOutOfRange
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine
from nodes.broker.partition import Partition
from tests.unit.fakes import as_leader_wrote, padded_batch

BATCH_MAX = 1024 * 1024
LEADER, FOLLOWER = 1, 2


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


def _follow(part: Partition, epoch: int = 1) -> None:
    part.become_follower(LEADER, epoch, [LEADER, FOLLOWER], [LEADER, FOLLOWER])


def _fill_follower(part: Partition, epochs: tuple[int, ...] = (1, 2), per_epoch: int = 4) -> None:
    """Follower batches as a leader wrote them: ``per_epoch`` batches of 3 records per epoch,
    from an idempotent producer."""
    seq = 0
    for epoch in epochs:
        for _ in range(per_epoch):
            data = as_leader_wrote(padded_batch(3, pid=7, seq=seq), part.log_end_offset, epoch)
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
    stream = [as_leader_wrote(padded_batch(3, pid=7, seq=100), 1000, 4),
              as_leader_wrote(padded_batch(2, pid=7, seq=103), 1003, 5)]
    assert part.append_as_follower(b"".join(stream)) == 2
    assert (part.log_start_offset, part.log_end_offset) == (1000, 1005)
    assert part.epochs.entries == [(4, 1000), (5, 1003)]
    part.set_high_watermark_from_leader(1005)
    assert part.high_watermark == 1005
    assert [h.base_offset for h in B.split_headers(part.read(1000, 1 << 20, part.log_end_offset))] == [1000, 1003]
    # a batch that does not continue the log (a gap) is not taken
    assert part.append_as_follower(as_leader_wrote(padded_batch(1), 2000, 5)) == 0


def test_reset_survives_reopen(tmp_path: Path) -> None:
    part = _segment(tmp_path / "p")
    _follow(part)
    _fill_follower(part, per_epoch=30)
    assert part.engine.segment_count > 1  # type: ignore[attr-defined]
    part.reset_to(4242)
    part.append_as_follower(as_leader_wrote(padded_batch(2), 4242, 9))
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
