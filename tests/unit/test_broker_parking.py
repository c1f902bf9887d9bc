"""Parked requests (nodes/broker/parking.py) through the real Loom handlers and BrokerCore:

- A reactor pass in which one partition's high watermark moved re-reads only the parked
  fetches that read that partition, not every parked fetch (parked x partitions reads per pass).
- acks=all needs min.insync.replicas when the high watermark arrives, not only at append: an
  ISR that shrank meanwhile holds fewer copies than acks=all promised.
- A write parked on a partition whose leadership moves away is answered at once, failed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.metadata import PartitionInfo
from fabric.rpc import DEFER
from nodes.broker.core import BrokerCore
from nodes.broker.handlers import RequestHandlers
from nodes.broker.messages import FetchEntry, FetchInput
from nodes.broker.parking import ParkedFetch, ParkingLot
from tests.unit.fakes import RecordingServer, broker_core, loom_handlers, make_batch, request

LEADER, FOLLOWER = 1, 2
PARTITIONS = 60
NOW_MS = 1_000
WAIT_MS = 10_000


class CountingCore(BrokerCore):
    """The real core, counting the partition reads parked fetches cost."""

    reads = 0

    def fetch(self, inp: FetchInput, replica_id: int, now_ms: int, budget_bytes: int,
              counts: bool = True) -> tuple[FetchEntry, bytes]:
        self.reads += 1
        return super().fetch(inp, replica_id, now_ms, budget_bytes, counts)


@pytest.fixture
def leader(tmp_path: Path) -> tuple[CountingCore, RequestHandlers, RecordingServer]:
    """Broker 1 leading t-0..t-59 (ISR 1, 2), one record in each, none committed yet."""
    plain = broker_core(tmp_path, LEADER, clock=ManualClock(NOW_MS))
    core = CountingCore(LEADER, plain.dirs, plain.storage, plain.limits, plain.topic_defaults, plain.clock)
    core.metadata = plain.metadata
    for p in range(PARTITIONS):
        part = core.open_partition("t", p, {})
        part.become_leader(1, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
        part.append_as_leader([make_batch(1)], 1 << 20)
    core.partitions_changed()
    handlers, server = loom_handlers(core)
    handlers.after_pass()
    return core, handlers, server


def _park_consumer_fetches(handlers: RequestHandlers) -> list[wire.Request]:
    """One consumer fetch per partition, each waiting at the HW (0: nothing committed yet)."""
    reqs = []
    for p in range(PARTITIONS):
        req = request(P.FETCH, parts=[["t", p, 0, 1 << 16]], max_bytes=1 << 16, wait_ms=WAIT_MS)
        assert handlers.on_fetch(req) is DEFER
        reqs.append(req)
    return reqs


def test_a_moved_high_watermark_rereads_only_the_fetches_on_that_partition(leader: Any) -> None:
    core, handlers, server = leader
    reqs = _park_consumer_fetches(handlers)
    core.reads = 0
    handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=FOLLOWER, parts=[["t", 7, 1, 1]]))  # t-7: HW 0 -> 1
    assert core.partitions[("t", 7)].high_watermark == 1
    handlers.after_pass()
    assert [r for r, _, _ in server.replies] == [reqs[7]]  # answered with its record
    assert server.replies[0][2] and server.replies[0][1]["parts"][0].high_watermark == 1
    assert core.reads <= 2, f"{core.reads} parked fetches re-read for one partition's change"
    assert len(handlers.parking.fetches) == PARTITIONS - 1


def test_a_pass_with_no_change_rereads_nothing_and_deadlines_still_answer(leader: Any) -> None:
    core, handlers, server = leader
    _park_consumer_fetches(handlers)
    core.reads = 0
    handlers.after_pass()
    assert core.reads == 0
    core.clock.advance(WAIT_MS)
    handlers.after_pass()
    assert len(server.replies) == PARTITIONS and not handlers.parking.fetches


def test_an_unspecified_change_rereads_everything(leader: Any) -> None:
    """Metadata changes and the like change the broker without naming a partition."""
    core, handlers, _ = leader
    _park_consumer_fetches(handlers)
    core.reads = 0
    core.partitions_changed()
    handlers.after_pass()
    assert core.reads == PARTITIONS


def test_the_lot_hands_out_only_fetches_on_changed_partitions() -> None:
    lot = ParkingLot()
    items = [ParkedFetch(i, frozenset({("t", i)}), NOW_MS + WAIT_MS) for i in range(3)]
    assert all(lot.park_fetch(item) for item in items)
    lot.note_changed(("t", 1))
    assert lot.take_ready(NOW_MS, lambda key, offset: True).fetches == [items[1]]
    assert lot.fetches == [items[0], items[2]] and not lot.has_changes()
    assert not lot.has_due(NOW_MS) and lot.has_due(NOW_MS + WAIT_MS)
    assert lot.take_ready(NOW_MS + WAIT_MS, lambda key, offset: True).fetches == [items[0], items[2]]


# -- acks=all ----------------------------------------------------------------------------------
def _acks_all_write(tmp_path: Path) -> tuple[BrokerCore, RequestHandlers, RecordingServer, wire.Request]:
    """Broker 1 leading t-0 (replicas 1, 2, 3; ISR 1, 2; min.insync.replicas 2) with one
    acks=all write of 2 records parked, waiting for broker 2."""
    core = broker_core(tmp_path, LEADER, topic_configs={"min.insync.replicas": 2})
    part = core.open_partition("t", 0, {})
    core.apply_partition_state(part, PartitionInfo("t", 0, LEADER, 1, (1, 2, 3), (1, 2), 1), now_ms=0)
    core.partitions_changed()
    handlers, server = loom_handlers(core)
    req = request(P.PRODUCE, [make_batch(2)], parts=[["t", 0]], acks=-1, timeout_ms=WAIT_MS)
    assert handlers.on_produce(req) is DEFER
    handlers.after_pass()
    assert server.replies == [] and handlers.parking.size == 1
    return core, handlers, server, req


def test_acks_all_is_not_acknowledged_after_the_isr_shrank_below_min_isr(tmp_path: Path) -> None:
    core, handlers, server, req = _acks_all_write(tmp_path)
    part = core.partitions[("t", 0)]
    # broker 2 fell behind: the HW is now the leader's LEO, one copy
    core.apply_partition_state(part, PartitionInfo("t", 0, LEADER, 1, (1, 2, 3), (1,), 2), now_ms=0)
    core.partitions_changed()
    assert part.high_watermark == 2
    handlers.after_pass()
    result = server.answer(req)["results"][0]
    assert result[1] == P.NOT_ENOUGH_REPLICAS_AFTER_APPEND and result[0] == 0 and len(result) == 4


def test_acks_all_is_acknowledged_when_the_isr_has_it(tmp_path: Path) -> None:
    core, handlers, server, req = _acks_all_write(tmp_path)
    handlers.on_replica_ack(request(P.REPLICA_ACK, broker_id=FOLLOWER, parts=[["t", 0, 2, 1]]))
    handlers.after_pass()
    assert server.answer(req)["results"] == [(0, 0, "", 1)]


def test_a_parked_write_is_failed_when_leadership_moves_away(tmp_path: Path) -> None:
    core, handlers, server, req = _acks_all_write(tmp_path)
    part = core.partitions[("t", 0)]
    core.apply_partition_state(part, PartitionInfo("t", 0, FOLLOWER, 2, (1, 2, 3), (2,), 2), now_ms=0)
    result = server.answer(req)["results"][0]
    assert result[1] == P.NOT_LEADER and handlers.parking.size == 0


def test_a_parked_write_times_out(tmp_path: Path) -> None:
    core, handlers, server, req = _acks_all_write(tmp_path)
    core.clock.advance(WAIT_MS)
    handlers.after_pass()
    assert server.answer(req)["results"][0][1] == P.REQUEST_TIMED_OUT
