"""An ALTER_ISR refused because the coordinator has just moved leadership (preferred-leader
restoration, a failover) is news the leader has not read yet, not a sign that it restarted.

Real ``Broker`` + ``Coordinator`` with requests and pushes delivered by hand (the ``Loopback`` of
test_isr_versions), so the proposal is computed before the leadership-move push is read.
"""

from __future__ import annotations

from fabric import protocol as P
from nodes.coordinator.store import PartitionState, TopicState


def test_isr_proposal_racing_a_preferred_leader_move_does_not_reregister_the_broker(nodes) -> None:  # noqa: ANN001, F811
    broker, coord, loop = nodes
    # t-0 prefers broker 2 (back in the ISR after a restart), broker 1 still leads it; t-1 is
    # broker 1's own
    coord.state.topics["t"] = TopicState([PartitionState(1, 3, [2, 1, 3], [1, 2, 3]),
                                          PartitionState(1, 0, [1, 2, 3], [1, 2, 3])], {"min.insync.replicas": 2})
    coord.commit()
    broker._register()
    loop.run_until_idle()
    assert broker.partitions[("t", 0)].is_leader and broker.partitions[("t", 1)].is_leader
    incarnation = broker.incarnation
    t1_before = coord.state.topics["t"].partitions[1]
    t1_leader_epoch = t1_before.leader_epoch
    # the coordinator's routine auto-rebalance moves t-0 to broker 2; broker 1 has not read
    # the push yet when its ISR check (broker 3 lagging on t-0) runs
    coord._restore_preferred_leaders()
    assert coord.state.topics["t"].partitions[0].leader == 2
    late = loop.take_pushes()
    broker.partitions[("t", 0)].followers[3].last_caught_up_ms = \
        -10 * broker.config.replication.replica_lag_time_max_ms
    broker._check_isr()
    answers = loop.serve(P.ALTER_ISR)
    assert answers[0][1]["parts"][0]["error"] == P.FENCED_LEADER_EPOCH
    loop.deliver(answers)
    for frames in late:  # the push arrives a moment later
        loop.push(frames)
    loop.run_until_idle()
    assert broker.incarnation == incarnation, "a routine leadership move made the broker re-register"
    t1 = coord.state.topics["t"].partitions[1]
    assert (t1.leader, t1.leader_epoch, t1.isr) == (1, t1_leader_epoch, [1, 2, 3]), \
        "broker 1 was treated as restarted: dropped from every ISR, its partitions re-elected"
    assert coord.state.topics["t"].partitions[0].isr == [1, 2, 3]
    assert broker.partitions[("t", 1)].is_leader
    assert broker.partitions[("t", 0)].role == "follower" and broker.partitions[("t", 0)].leader_id == 2
