"""Edges of the coordinator's idempotent appends to ``__consumer_offsets``
(nodes/coordinator/offsets_producer.py) where the brokers' producer state is not what the
coordinator's run left there: a leader that rebuilt it from its log's tail (a restart) and so
forgot the coordinator's producer id, and a state file whose epoch is at its maximum. The real
GroupCoordinator and OffsetStore on a FakeGroupContext, against leaders that judge each append
by the broker's idempotent-producer state (the harness of test_coordinator_offsets_late_append)."""

from __future__ import annotations

from pathlib import Path

from engines import batch as B
from fabric import protocol as P
from nodes.broker.producers import ProducerStateTable
from nodes.coordinator.offsets_producer import EPOCH_MAX
from nodes.coordinator.store import StateStore
from tests.unit.test_coordinator_offsets_late_append import _Cluster


def _forget_producers(c: _Cluster, q: int) -> None:
    """Partition ``q``'s leader is now a replica that rebuilt its producer state from its log's
    tail: it holds the same log, and knows none of its producers (nodes/broker/tail_recovery.py)."""
    c.leaders[q].producers = ProducerStateTable()
    c.leaders[q].producers.forgot_producers = True


def test_a_commit_refused_by_a_leader_that_forgot_the_producer_is_answered_retriable(tmp_path: Path) -> None:
    """The first send of a commit lands but its answer is lost; the retry (possibly written) goes
    to a new leader that rebuilt its producer state from the tail and is refused
    unknown_producer_id. The commit may well be in the log (here it is): its answer must say
    "outcome unknown, retry" -- a consumer raised a non-retriable unknown_producer_id from
    commit(), for an offset that was in fact committed."""
    c = _Cluster(tmp_path)
    q = c.gc.offsets.partition_for_group("g")
    c.commit("g", 7)
    c.serve()  # the log-end lookup: the append goes out
    assert c.serve(lose=lambda p: p == q) and c.lost  # its answer is lost ...
    c.land_lost()  # ... but it was written
    _forget_producers(c, q)  # the leader moves to a replica that rebuilt its producer state
    c.settle()
    errors = [h.get("error") for _r, h, _p in c.context.server.replies]
    assert len(errors) == 1 and errors[0] in P.RETRIABLE, f"answered {errors}: not retriable"
    assert c.table() == c.fresh_load() == {"g": {("t", 0): 7}}
    c.commit("g", 9)  # and the partition takes commits again
    c.settle()
    assert c.table() == c.fresh_load() == {"g": {("t", 0): 9}}


def test_an_epoch_at_its_maximum_goes_on_under_a_new_producer_id(tmp_path: Path) -> None:
    """A producer epoch is 16 bits: a state file whose epoch reached EPOCH_MAX takes a new
    producer id at the next start (an epoch past it would not fit the batch header)."""
    first = _Cluster(tmp_path)
    q = first.gc.offsets.partition_for_group("g")
    store = StateStore(tmp_path)
    state = store.load()
    pid, _epoch = state.offsets_producer[q]
    state.offsets_producer[q] = [pid, EPOCH_MAX]
    store.save(state)
    second = _Cluster(tmp_path, first.leaders)
    second.commit("g", 7)
    second.settle()
    assert second.table() == second.fresh_load() == {"g": {("t", 0): 7}}
    new_pid, new_epoch = StateStore(tmp_path).load().offsets_producer[q]
    assert new_pid > pid and new_epoch == 0
    last = B.parse_header(second.leaders[q].batches[-1][1])
    assert (last.producer_id, last.producer_epoch) == (new_pid, 0)
