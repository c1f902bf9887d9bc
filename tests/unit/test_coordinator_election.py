"""Leader election as pure functions (nodes/coordinator/election.py): partition states and live
brokers in, changes out -- no node, no sockets."""

from __future__ import annotations

import copy

from nodes.coordinator import election as E
from nodes.coordinator.store import PartitionState, TopicState


def _topics(*partitions: PartitionState) -> dict[str, TopicState]:
    return {"t": TopicState(list(partitions))}


def _state(change: E.PartitionChange) -> tuple:
    return change.kind, change.leader, change.leader_epoch, list(change.isr)


def test_a_dead_leader_is_replaced_by_the_first_live_isr_member_in_replica_order_with_a_new_epoch() -> None:
    topics = _topics(PartitionState(1, 4, [1, 3, 2], [1, 2, 3]))
    before = copy.deepcopy(topics)
    (change,) = E.on_broker_down(topics, 1, {2, 3}, unclean_allowed=False)
    assert (change.topic, change.partition) == ("t", 0)
    assert _state(change) == (E.ELECTED, 3, 5, [2, 3])
    assert topics == before, "deciding changed the state"
    E.apply(topics, [change])
    assert topics["t"].partitions[0].to_list()[:4] == [3, 5, [1, 3, 2], [2, 3]]


def test_a_dead_follower_leaves_the_isr_and_the_leader_and_epoch_stay() -> None:
    topics = _topics(PartitionState(1, 4, [1, 2, 3], [1, 2, 3]), PartitionState(3, 2, [3, 1, 2], [3, 1]))
    changes = E.on_broker_down(topics, 2, {1, 3}, unclean_allowed=False)
    assert [(c.partition, _state(c)) for c in changes] == [(0, (E.ISR_SHRUNK, 1, 4, [1, 3]))]


def test_without_a_live_isr_member_the_partition_goes_offline_once_and_keeps_its_isr() -> None:
    topics = _topics(PartitionState(1, 4, [1, 2], [1]))
    (change,) = E.on_broker_down(topics, 1, {2}, unclean_allowed=False)
    assert _state(change) == (E.OFFLINE, -1, 5, [1])
    E.apply(topics, [change])
    assert E.on_broker_down(topics, 1, {2}, unclean_allowed=False) == [], "offline twice is no change"
    assert E.on_broker_up(topics, 2, {2}, unclean_allowed=False) == [], "an out-of-sync replica was elected"
    (back,) = E.on_broker_up(topics, 1, {1, 2}, unclean_allowed=False)
    assert _state(back) == (E.ELECTED, 1, 6, [1])


def test_the_last_isr_member_dying_as_a_follower_keeps_the_isr() -> None:
    topics = _topics(PartitionState(-1, 5, [1, 2], [2]))
    assert E.on_broker_down(topics, 2, {1}, unclean_allowed=False) == []


def test_unclean_election_takes_the_first_live_replica_as_the_whole_isr() -> None:
    topics = _topics(PartitionState(1, 4, [1, 3, 2], [1]))
    (change,) = E.on_broker_down(topics, 1, {2, 3}, unclean_allowed=True)
    assert _state(change) == (E.UNCLEAN, 3, 5, [3])
    offline = _topics(PartitionState(-1, 5, [1, 2], [1]))
    (change,) = E.on_broker_up(offline, 2, {2}, unclean_allowed=True)
    assert _state(change) == (E.UNCLEAN, 2, 6, [2])
    assert E.on_broker_down(_topics(PartitionState(1, 4, [1], [1])), 1, set(), unclean_allowed=True)[0].kind == E.OFFLINE


def test_a_broker_coming_back_only_touches_offline_partitions_it_is_a_replica_of() -> None:
    topics = _topics(PartitionState(1, 4, [1, 2], [1, 2]), PartitionState(-1, 3, [3, 1], [3]), PartitionState(-1, 3, [2, 1], [2]))
    changes = E.on_broker_up(topics, 2, {1, 2}, unclean_allowed=False)
    assert [(c.partition, _state(c)) for c in changes] == [(2, (E.ELECTED, 2, 4, [2]))]


def test_leadership_goes_back_to_the_preferred_replica_only_when_it_is_alive_and_in_sync() -> None:
    topics = _topics(PartitionState(2, 4, [1, 2], [1, 2]),   # 1 in sync and alive: back to it
                     PartitionState(2, 4, [1, 2], [2]),      # 1 not in sync
                     PartitionState(-1, 4, [1, 2], [1]),     # offline
                     PartitionState(1, 4, [1, 2], [1, 2]))   # already
    changes = E.preferred_leaders(topics, {1, 2})
    assert [(c.partition, _state(c)) for c in changes] == [(0, (E.PREFERRED, 1, 5, [1, 2]))]
    assert E.preferred_leaders(topics, {2}) == []
