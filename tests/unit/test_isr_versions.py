"""ISR and metadata state only moves forward, and a routine ALTER_ISR refusal is not fencing.

A real ``Broker`` and a real ``Coordinator`` in one process (sockets bound on loopback, no peers)
with the broker's coordinator requests and the coordinator's metadata pushes delivered by hand,
so that each test picks the exact order in which replies and pushes arrive.
"""

from __future__ import annotations

from fabric import protocol as P
from nodes.broker.node import PARTITION_OPENS_PER_PASS_MAX
from nodes.coordinator.store import PartitionState, TopicState
from tests.unit.builders_broker import BATCH_MAX, batch, broker_3_due_back_in_the_isr, start


# -- defect 1: a stale push must not roll back an ISR expansion the broker got by reply ----------
def test_stale_push_after_isr_expansion_replies_does_not_roll_back_the_isr(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2])
    parts = [broker.partitions[("t", p)] for p in range(2)]
    now = broker.clock.now_ms()
    for part in parts:
        part.append_as_leader([batch(3)], BATCH_MAX)
        part.record_follower_fetch(2, 3, now)
        part.record_follower_fetch(3, 3, now)  # broker 3 caught up: due back in the ISR
    # an unrelated commit whose push (still naming ISR [1, 2]) the broker has not read yet
    coord.state.topics["t"].configs["retention.ms"] = 3_600_000
    coord.commit()
    old_pushes = loop.take_pushes()
    broker._check_isr()  # leader 1 proposes adding broker 3 back, for t-0 and t-1
    answers = loop.serve(P.ALTER_ISR)
    assert [p.isr for p in coord.state.topics["t"].partitions] == [[1, 2, 3], [1, 2, 3]]
    # the broker's reactor drains the reply socket before the metadata SUB: replies first
    loop.deliver(answers)
    assert all(part.isr == {1, 2, 3} for part in parts)
    for frames in old_pushes:  # then the older push
        loop.push(frames)
    assert all(part.isr == {1, 2, 3} for part in parts), [sorted(p.isr) for p in parts]
    # broker 3 is in the committed ISR (and may be elected next): a write it lacks must not be
    # below the HW, however far broker 2 gets
    for part in parts:
        part.append_as_leader([batch(2)], BATCH_MAX)
        part.record_follower_fetch(2, 5, broker.clock.now_ms())
        assert part.high_watermark == 3, f"HW {part.high_watermark} passes ISR member 3 at LEO 3"
    for frames in loop.take_pushes():  # the newer push changes nothing
        loop.push(frames)
    assert all(part.isr == {1, 2, 3} and part.high_watermark == 3 for part in parts)


def test_isr_reply_older_than_an_applied_push_is_not_applied(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    part = broker_3_due_back_in_the_isr(broker, coord, loop)
    broker._check_isr()
    answers = loop.serve(P.ALTER_ISR)  # the coordinator applies [1, 2, 3] ...
    coord.alive.discard(3)
    coord._on_broker_down(3)  # ... then broker 3 dies: [1, 2] at a newer partition epoch
    for frames in loop.take_pushes():  # the push of the newer state arrives first
        loop.push(frames)
    assert part.isr == {1, 2}
    loop.deliver(answers)  # the older reply must not bring broker 3 back
    assert part.isr == {1, 2} and part.partition_epoch == coord.state.topics["t"].partitions[0].partition_epoch


def test_isr_changes_of_many_partitions_go_in_one_request_and_one_store_write(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2], partitions=50)
    now = broker.clock.now_ms()
    for p in range(50):
        broker.partitions[("t", p)].record_follower_fetch(3, 0, now)
    saves = []
    save = coord.store.save
    coord.store.save = lambda state: (saves.append(1), save(state))  # type: ignore[method-assign]
    broker._check_isr()
    assert len(loop.requests) == 1 and len(loop.requests[0][1]["parts"]) == 50
    loop.deliver(loop.serve(P.ALTER_ISR))
    assert len(saves) == 1 and len(loop.pushes) == 1 and loop.pushes[0][2] == P.PUB_METADATA_DELTA
    assert all(broker.partitions[("t", p)].isr == {1, 2, 3} for p in range(50))
    loop.run_until_idle()
    assert broker.metadata.version == coord.state.version
    assert all(i.isr == (1, 2, 3) for i in broker.metadata.partitions())


def test_a_missed_delta_is_repaired_by_a_snapshot(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    coord.alive.discard(2)
    coord._on_broker_down(2)
    loop.take_pushes()  # lost (PUB drops)
    coord.alive.discard(3)
    coord._on_broker_down(3)
    assert broker.partitions[("t", 0)].isr == {1, 2, 3}
    loop.run_until_idle()  # the next delta does not start at our version: we ask for a snapshot
    assert broker.metadata.version == coord.state.version and broker.partitions[("t", 0)].isr == {1}
    coord._publish_metadata()  # the periodic version beacon alone also reveals a gap
    loop.run_until_idle()
    assert not loop.requests


# -- defect 4: the coordinator's routine stale-ISR refusal is not fencing --------------------------
def test_stale_isr_refusal_refreshes_metadata_and_does_not_move_leadership(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=3)
    leaders_before = [(ps.leader, ps.leader_epoch) for ps in coord.state.topics["t"].partitions]
    incarnation = broker.incarnation
    # the coordinator drops broker 3 (missed its session) and takes it back; the push is lost
    coord.alive.discard(3)
    coord._on_broker_down(3)
    coord._seen(3)
    loop.take_pushes()
    # broker 1, still at ISR [1, 2, 3], sees broker 2 lagging and proposes [1, 3]
    part = broker.partitions[("t", 0)]
    part.followers[2].last_caught_up_ms = -10 * broker.config.replication.replica_lag_time_max_ms
    broker._check_isr()
    # caught up again at once: the broker's own ISR check (a 250 ms timer on the real clock, due
    # inside run_until_idle on a slow machine) proposes nothing more -- it proposed [1, 3] again
    # before the refresh landed (a second stale refusal), or [1] after it
    part.followers[2].last_caught_up_ms = broker.clock.now_ms()
    broker._check_isr()  # (as that timer would: nothing, the proposal is pending)
    loop.deliver(loop.serve(P.ALTER_ISR))  # refused: computed from an ISR the coordinator changed
    broker._check_isr()  # (as that timer would, before the refresh)
    loop.run_until_idle()  # the real path: whatever the broker asks for now is served
    assert broker.incarnation == incarnation, "a stale ISR refusal made the broker re-register"
    assert [(ps.leader, ps.leader_epoch) for ps in coord.state.topics["t"].partitions] == leaders_before
    assert all(broker.partitions[("t", p)].is_leader for p in range(3))
    assert part.isr == {1, 2} and part.pending_isr is None  # refreshed; it recomputes from here
    assert coord.counters["alter_isr_stale_isr"] == 1


def test_alter_isr_fenced_at_our_own_epoch_makes_the_broker_reregister(nodes) -> None:  # noqa: ANN001
    # a deposition at a newer leader epoch only refreshes metadata
    # (test_alter_isr_fenced_by_leader_move.py); another leader at the epoch we think ours means
    # we missed our own fencing: start over as a new incarnation
    broker, coord, loop = nodes
    start(broker, coord, loop, isr=[1, 2, 3], partitions=1)
    ps = coord.state.topics["t"].partitions[0]
    ps.leader = 2  # at our epoch; the push is lost
    coord.commit()
    loop.take_pushes()
    incarnation = broker.incarnation
    broker.partitions[("t", 0)].followers[2].last_caught_up_ms = -10 * broker.config.replication.replica_lag_time_max_ms
    broker._check_isr()
    answers = loop.serve(P.ALTER_ISR)
    assert answers[0][1]["parts"][0]["error"] == P.FENCED_LEADER_EPOCH
    loop.deliver(answers)
    loop.run_until_idle()
    assert broker.incarnation != incarnation and not broker.partitions[("t", 0)].is_leader


# -- defect 10: metadata for many new partitions is applied in bounded steps ---------------------
def test_new_partitions_are_opened_a_bounded_number_per_reactor_pass(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    coord.state.topics["big"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3]) for _ in range(200)])
    coord.commit()
    broker._register()
    loop.deliver(loop.serve())  # the registration answer holds all 200
    assert len(broker.partitions) == PARTITION_OPENS_PER_PASS_MAX
    passes = 0
    while broker._to_open:
        broker.reactor.run_once(0)
        passes += 1
        assert len(broker.partitions) <= PARTITION_OPENS_PER_PASS_MAX * (passes + 1)
    assert all(broker.partitions[("big", p)].is_leader for p in range(200))
