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
    c.leaders[q].producers.truncate(forgot_below=max(1, c.leaders[q].end))


def _store_epoch(tmp_path: Path, q: int, epoch: int) -> int:
    """Partition ``q``'s producer epoch in the state file set to ``epoch``; its producer id."""
    store = StateStore(tmp_path)
    state = store.load()
    pid = state.offsets_producer[q][0]
    state.offsets_producer[q] = [pid, epoch]
    store.save(state)
    return pid


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
    """A producer epoch is 16 bits: once the epochs run out the partition takes a new producer
    id (an epoch past EPOCH_MAX would not fit the batch header), after a fence that ends the old
    one under EPOCH_MAX."""
    first = _Cluster(tmp_path)
    q = first.gc.offsets.partition_for_group("g")
    pid = _store_epoch(tmp_path, q, EPOCH_MAX - 1)
    second = _Cluster(tmp_path, first.leaders)
    second.commit("g", 7)
    second.settle()
    assert second.table() == second.fresh_load() == {"g": {("t", 0): 7}}
    new_pid, new_epoch = StateStore(tmp_path).load().offsets_producer[q]
    assert new_pid > pid and new_epoch == 0
    last = B.parse_header(second.leaders[q].batches[-1][1])
    assert (last.producer_id, last.producer_epoch) == (new_pid, 0)
    ids = [(h.producer_id, h.producer_epoch) for h in (B.parse_header(b) for _o, b in second.leaders[q].batches)]
    assert ids.index((pid, EPOCH_MAX)) < ids.index((new_pid, 0)), f"the old id was not ended: {ids}"


def test_a_late_append_under_a_producer_id_given_up_is_fenced_too(tmp_path: Path) -> None:
    """A state file put back from a copy two epochs older than the brokers know: the next
    start's fence is refused (invalid_producer_epoch) and the partition takes a new producer id.
    A fence of the new id fences nothing of the old: an append of the run before the copy was
    put back, held on its way (a partition between the coordinator's host and the leader; the
    killed process's socket still sends it), landed after the new run's fence and after its
    next commit -- the table lacked it, and a restart moved the committed offset back from 9
    to 7. The old id must be fenced before it is left."""
    first = _Cluster(tmp_path)
    q = first.gc.offsets.partition_for_group("g")
    first.commit("g", 5)
    first.settle()
    copy = StateStore(tmp_path).path.read_bytes()
    _Cluster(tmp_path, first.leaders)  # a restart: a new epoch
    before = _Cluster(tmp_path, first.leaders)  # and another
    old_pid = StateStore(tmp_path).load().offsets_producer[q][0]
    before.commit("g", 6)
    before.settle()
    before.commit("g", 7)  # (its partition's log end known: no lookup) the append goes out ...
    assert before.serve(lose=lambda p: p == q) and before.lost  # ... and is held; the coordinator is killed
    StateStore(tmp_path).path.write_bytes(copy)  # the older copy is put back
    after = _Cluster(tmp_path, first.leaders)
    assert StateStore(tmp_path).load().offsets_producer[q][0] != old_pid, "no new producer id: not the case"
    after.commit("g", 9)
    after.settle()
    assert [h.get("committed") for _r, h, _p in after.context.server.replies] == [1]
    before.land_lost()  # the held append reaches the leader now
    after.settle()
    assert after.fresh_load() == {"g": {("t", 0): 9}}, "a restart would move the committed offset back"


def test_a_start_after_a_crash_between_storing_the_ending_epoch_and_its_fence_ends_the_id(
        tmp_path: Path) -> None:
    """The state file holds EPOCH_MAX (the old id's ending fence was stored) but the process died
    before that fence landed: the next start must send it, not go straight to a new id -- an
    append held on its way under the old id's last epoch would land after everything."""
    first = _Cluster(tmp_path)
    q = first.gc.offsets.partition_for_group("g")
    pid = _store_epoch(tmp_path, q, EPOCH_MAX - 2)
    before = _Cluster(tmp_path, first.leaders)  # fences under EPOCH_MAX - 1, the id's last for appends
    before.commit("g", 6)
    before.settle()
    before.commit("g", 7)
    assert before.serve(lose=lambda p: p == q) and before.lost  # held on its way
    _store_epoch(tmp_path, q, EPOCH_MAX)  # the ending epoch stored; the process dies
    after = _Cluster(tmp_path, first.leaders)
    after.commit("g", 9)
    after.settle()
    assert [h.get("committed") for _r, h, _p in after.context.server.replies] == [1]
    before.land_lost()
    after.settle()
    assert after.fresh_load() == {"g": {("t", 0): 9}}, "a restart would move the committed offset back"
