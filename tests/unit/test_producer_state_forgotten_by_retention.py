"""Producer state forgotten with the batches retention deleted, and batches no broker wrote.

1. A replica that lost a producer's state because retention deleted that producer's batches,
   and then rebuilt its table from everything left (a follower reset to the leader's log
   start; a broker reopened without a producer-state snapshot, reading its log from its start)
   knows every producer whose batches its log holds: it forgot none. Once it leads, an unknown
   producer's possibly written batch -- a send whose reply was lost, to a leader that died
   before replicating it -- is taken; such a replica used to refuse it with
   unknown_producer_id for the partition's whole life. The retry of a batch that retention
   deleted is taken too: no copy of it is left in any log (the old leader, which still knows
   the producer, answers it "duplicate"), as a table that never knew the producer takes it
   (nodes/broker/producers.py).
2. A send the broker refused before any write (not_enough_replicas: the precheck; base offset
   -1) leaves the batch unwritten: its retry says so, and a leader that may have forgotten
   producers takes it (it failed for good with unknown_producer_id, though no broker wrote it).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.clock import ManualClock
from nodes.broker import producers as producers_module
from nodes.broker.core import BrokerCore
from nodes.broker.messages import AppendRequest, ProduceInput, encode_produce_results
from nodes.broker.partition import Partition
from tests.unit.fakes import (FakeReactor, broker_core, drop_producer_snapshots, loom_handlers, make_batch, padded_batch,
                              replica_fetcher, serve_fetch)
from tests.unit.builders_sender import LEADER

PID = 7
NEWCOMER = 55
OTHERS = 30  # batches after ours: enough for several 4 KiB segments


def _produce(core: BrokerCore, data: bytes, possibly_written: bool, leader_epoch: int) -> tuple[int, int, str]:
    """One PRODUCE part [t, 0, leader_epoch, possibly_written] through the real core (acks=1)."""
    [[r]] = core.append([AppendRequest(1, [ProduceInput("t", 0, leader_epoch, data, possibly_written)], None)])
    return r.base_offset, r.error, r.message


def _leader_whose_retention_deleted_ours(core: BrokerCore, ours: bytes) -> Partition:
    """Our batch is written and committed (ISR: the leader alone), its reply is lost; more
    batches follow and retention (retention.bytes) deletes ours."""
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    part.become_leader(1, [1, 2], [1], now_ms=0)
    assert _produce(core, ours, possibly_written=False, leader_epoch=1) == (0, 0, "")
    for i in range(OTHERS):
        assert _produce(core, padded_batch(3, tag=f"o{i}-"), possibly_written=False, leader_epoch=1)[1] == 0
    assert part.high_watermark == part.log_end_offset
    core.apply_retention()
    assert part.log_start_offset > 3, "retention did not delete our batch"
    # the leader that wrote it still recognises the producer's retry
    assert _produce(core, ours, possibly_written=True, leader_epoch=1) == (0, 0, "duplicate")
    return part


def _assert_nothing_forgotten(core: BrokerCore, part: Partition, ours: bytes) -> None:
    """``part``, leading at epoch 2, forgot no producer: a newcomer's possibly written batch is
    written, and so is the retry of ``ours`` (committed at offset 0, deleted by retention)."""
    assert not part.producers.forgot_producers
    for data in (make_batch(2, pid=NEWCOMER, epoch=0, seq=0, tag="new"), ours):
        end = part.log_end_offset
        offset, code, message = _produce(core, data, possibly_written=True, leader_epoch=2)
        assert (offset, code, message) == (end, 0, ""), P.error_name(code)
        assert _produce(core, data, possibly_written=True, leader_epoch=2) == (end, 0, "duplicate")


@pytest.mark.parametrize("engine", ["memory", "segment"])
def test_a_follower_reset_past_retention_forgot_no_producer_its_log_holds(tmp_path: Path, engine: str) -> None:
    reactor = FakeReactor(ManualClock(1_000))
    leader_core = broker_core(tmp_path / "l", 1, engine=engine, clock=reactor.clock)
    follower_core = broker_core(tmp_path / "f", 2, engine=engine, clock=reactor.clock)
    ours = make_batch(3, pid=PID, epoch=0, seq=0, tag="ours")
    leader = _leader_whose_retention_deleted_ours(leader_core, ours)
    # the follower (behind the leader's new log start) is reset by its real fetcher and catches up
    handlers, _ = loom_handlers(leader_core)
    fetcher, client = replica_fetcher(reactor, 1, 2, follower_core.follower_appended)
    follower = follower_core.open_partition("t", 0, {})
    follower.become_follower(1, 1, [1, 2], [1])
    fetcher.set_partitions([follower])
    for _ in range(20):
        if follower.log_end_offset == leader.log_end_offset:
            break
        assert serve_fetch(client, handlers)
        reactor.advance(100)
    assert follower.log_start_offset == leader.log_start_offset and follower.log_end_offset == leader.log_end_offset
    fetcher.close()
    try:  # the old leader dies; the follower leads; the producer's retry of our batch arrives
        follower.become_leader(2, [1, 2], [2], now_ms=0)
        _assert_nothing_forgotten(follower_core, follower, ours)
    finally:
        leader_core.close()
        follower_core.close()


def test_a_broker_reopened_after_retention_forgot_no_producer_its_log_holds(tmp_path: Path) -> None:
    core = broker_core(tmp_path, 1, engine="segment")
    ours = make_batch(3, pid=PID, epoch=0, seq=0, tag="ours")
    _leader_whose_retention_deleted_ours(core, ours)
    core.close()  # the broker restarts before the producer's retry arrives
    # ... from a data directory without producer-state snapshots (written before them): the
    # table is rebuilt from all that retention left (with its snapshot, the retry is recognised:
    # tests/unit/test_producer_state_snapshots.py)
    drop_producer_snapshots(tmp_path)
    core = broker_core(tmp_path, 1, engine="segment")
    part = core.open_partition("t", 0, {"retention.bytes": 1})
    try:
        part.become_leader(2, [1, 2], [1], now_ms=0)
        _assert_nothing_forgotten(core, part, ours)
    finally:
        core.close()


def test_a_send_refused_before_any_write_is_still_delivered_by_a_leader_that_forgot_producers(
        make_sender_rig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    core = broker_core(tmp_path, 1, min_insync_replicas=2)
    part = core.open_partition("t", 0, {})
    part.become_leader(3, [1, 2], [1, 2], now_ms=0)  # the rig's metadata: leader epoch 3
    for other in (100, 101, 102):  # more producers than the table holds: it may have forgotten some
        assert _produce(core, make_batch(1, pid=other, epoch=0, seq=0), possibly_written=False, leader_epoch=3)[1] == 0
    assert part.producers.forgot_producers
    part.update_isr([1])  # the follower lags: acks=all is refused before any write

    rig = make_sender_rig()

    def deliver() -> list:
        """The last PRODUCE through the real core, answered as the broker answers it."""
        _, header, payloads, _ = rig.produce_requests()[-1]
        inputs = [ProduceInput.decode(tp, d) for tp, d in zip(header["parts"], payloads)]
        [results] = core.append([AppendRequest(header["acks"], inputs, None)])
        rig.client(LEADER).answer_last(P.PRODUCE, {"results": encode_produce_results(results)})
        return [(header["parts"], r.error) for r in results]

    futures = rig.send("a")
    rig.sender.run_pass()
    rig.grant_producer_id(PID)  # a new producer: its first batch to this partition
    rig.sender.run_pass()
    end = part.log_end_offset
    assert deliver() == [([["t", 0, 3, 0]], P.NOT_ENOUGH_REPLICAS)]
    assert part.log_end_offset == end, "nothing was written"
    part.update_isr([1, 2])  # the follower is back
    rig.reactor.advance(100)  # the retry backoff
    rig.sender.run_pass()
    answered = deliver()
    try:
        assert futures[0].exception(0) is None, (
            f"a batch no broker ever wrote failed for good: {futures[0].exception(0)!r} (retry: {answered})")
        assert answered == [([["t", 0, 3, 0]], 0)], "the retry says the batch cannot be written already"
    finally:
        core.close()
