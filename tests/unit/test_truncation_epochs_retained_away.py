"""A replica returning after retention removed every epoch it shares with the leader.

Its last epoch predates every epoch the leader still has and its log end is at or past the
leader's log start, so the leader answers "diverging [-1, log start]". Truncating to that start
and keeping the old epoch entry made it ask again at once, forever (a busy loop on two
brokers). It must empty its log and restart at the leader's log start (reset_to), with an
empty epoch cache, and then catch up. Driven through the real Partition, ReplicaFetcher._apply
and Broker._fetch_one (the helpers of test_partition_reset)."""

from __future__ import annotations

from typing import Callable

from nodes.broker.partition import Partition
from tests.unit.test_partition_reset import (  # noqa: F401 - make_part is a fixture
    _batch,
    _catch_up,
    _fetcher,
    _fill_follower,
    _follow,
    _leader_answer,
    _leader_with_retention,
    make_part,
)


def _returning_follower(make_part: Callable[..., Partition], leader: Partition) -> Partition:
    follower = make_part("follower")
    _follow(follower, epoch=leader.leader_epoch)
    _fill_follower(follower, epochs=(1,), per_epoch=85)  # epoch 1 only, 255 records
    assert leader.log_start_offset <= follower.log_end_offset < leader.log_end_offset
    assert leader.epochs.entries[0][0] > 1  # the leader no longer knows epoch 1
    return follower


def test_leader_answers_epoch_minus_one_for_an_epoch_retained_away(make_part: Callable[..., Partition]) -> None:
    leader = _leader_with_retention(make_part, (1, 2, 3))
    follower = _returning_follower(make_part, leader)
    head, data = _leader_answer(leader, follower)
    assert head[6] == [-1, leader.log_start_offset] and data == b""


def test_returning_replica_resets_to_the_leader_log_start_and_catches_up(make_part: Callable[..., Partition]) -> None:
    leader = _leader_with_retention(make_part, (1, 2, 3))
    follower = _returning_follower(make_part, leader)
    exchanges = _catch_up(leader, follower)  # raises "stuck" when it loops
    assert exchanges <= 5
    assert follower.log_start_offset == leader.log_start_offset
    assert follower.engine.read(follower.log_start_offset, 1 << 20) == leader.engine.read(leader.log_start_offset, 1 << 20)
    assert follower.epochs.entries == [(leader.epochs.latest_epoch, leader.log_start_offset)]
    # and the next fetch finds nothing to fix
    head, _ = _leader_answer(leader, follower)
    assert head[2] == 0 and head[6] is None


def test_one_diverging_minus_one_answer_empties_log_and_epochs(make_part: Callable[..., Partition]) -> None:
    leader = _leader_with_retention(make_part, (1, 2, 3))
    follower = _returning_follower(make_part, leader)
    fetcher = _fetcher(follower)
    head, data = _leader_answer(leader, follower)
    assert fetcher._apply(head, data, {("t", 0): follower.leader_epoch}) is True
    start = leader.log_start_offset
    assert (follower.log_start_offset, follower.log_end_offset) == (start, start)
    assert follower.epochs.entries == [] and len(follower.producers) == 0
    assert follower.high_watermark == start
    # the producer state of the dropped log is gone with it; new batches append at the start
    assert follower.append_as_follower(leader.read(start, 1 << 20, leader.log_end_offset)) > 0
    assert _batch  # the shared helpers stay importable
