"""Leader election as pure functions (nodes/coordinator/election.py): partition states and live
brokers in, changes out -- no node, no sockets."""

from __future__ import annotations

import copy

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.coordinator import election as E
from nodes.coordinator.store import PartitionState, TopicState
from nodes.coordinator.topics import validate_configs


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


def test_a_broker_coming_up_elects_but_never_rewrites_an_offline_partitions_isr() -> None:
    """Broker 3, a replica outside the ISR, comes up while no ISR member may be elected (broker 1
    dead, broker 2 alive by a restarted coordinator's grace only): nothing changes -- its sign
    of life is no reason to rewrite the partition (a death shrinks an ISR, on_broker_down),
    and no replica outside the ISR is elected while broker 2 may run, unclean or not."""
    for unclean in (False, True):
        topics = _topics(PartitionState(-1, 5, [1, 2, 3], [1, 2]))
        assert E.on_broker_up(topics, 3, {2, 3}, unclean, electable={3}) == [], f"unclean {unclean}"
        (change,) = E.on_broker_up(topics, 2, {2, 3}, unclean, electable={2, 3})
        assert _state(change) == (E.ELECTED, 2, 6, [2])


def test_a_partition_never_led_is_elected_from_any_replica_cleanly() -> None:
    """Leader -1 at leader epoch 0: made offline (no broker heard yet) and never led since, so
    it holds no record -- a replica a restart took out of its ISR may lead it, as a clean
    election; unclean election plays no part. Its ISR is the replicas heard (electable), not
    every live one: one alive by the start's grace only has fetched nothing, and joins by the
    leader's ISR expansion. A partition that was led (epoch 1 and up) keeps the ISR rule
    (broker 3, its ISR, may run: not heard yet)."""
    for unclean in (False, True):
        topics = _topics(PartitionState(-1, 0, [1, 2, 3], [3]), PartitionState(-1, 1, [1, 2, 3], [3]))
        changes = E.on_broker_up(topics, 1, {1, 2, 3}, unclean, electable={1})
        assert [(c.partition, _state(c)) for c in changes] == [(0, (E.ELECTED, 1, 1, [1]))], f"unclean {unclean}"
        changes = E.on_broker_up(_topics(PartitionState(-1, 0, [1, 2, 3], [3])), 1, {1, 2, 3}, unclean,
                                 electable={1, 3})
        assert [(c.partition, _state(c)) for c in changes] == [(0, (E.ELECTED, 1, 1, [1, 3]))], f"unclean {unclean}"


def test_leadership_goes_back_to_the_preferred_replica_only_when_it_is_alive_and_in_sync() -> None:
    topics = _topics(PartitionState(2, 4, [1, 2], [1, 2]),   # 1 in sync and alive: back to it
                     PartitionState(2, 4, [1, 2], [2]),      # 1 not in sync
                     PartitionState(-1, 4, [1, 2], [1]),     # offline
                     PartitionState(1, 4, [1, 2], [1, 2]))   # already
    changes = E.preferred_leaders(topics, {1, 2})
    assert [(c.partition, _state(c)) for c in changes] == [(0, (E.PREFERRED, 1, 5, [1, 2]))]
    assert E.preferred_leaders(topics, {2}) == []


def test_a_topics_unclean_leader_election_enable_overrides_the_cluster_default_both_ways() -> None:
    """Kafka's ``unclean.leader.election.enable`` is a topic config: a topic that sets it is
    elected by it whatever ``replication.unclean_leader_election`` says; one that does not
    follows the cluster default."""
    def topics(configs: dict) -> dict[str, TopicState]:
        return {"t": TopicState([PartitionState(1, 4, [1, 2], [1])], configs=configs)}
    (change,) = E.on_broker_down(topics({"unclean.leader.election.enable": True}), 1, {2}, unclean_allowed=False)
    assert _state(change) == (E.UNCLEAN, 2, 5, [2])
    (change,) = E.on_broker_down(topics({"unclean.leader.election.enable": False}), 1, {2}, unclean_allowed=True)
    assert _state(change) == (E.OFFLINE, -1, 5, [1])
    (change,) = E.on_broker_down(topics({}), 1, {2}, unclean_allowed=True)
    assert change.kind == E.UNCLEAN
    offline = {"t": TopicState([PartitionState(-1, 5, [1, 2], [1])], configs={"unclean.leader.election.enable": True})}
    (change,) = E.on_broker_up(offline, 2, {2}, unclean_allowed=False)
    assert _state(change) == (E.UNCLEAN, 2, 6, [2])


def test_unclean_leader_election_enable_takes_a_boolean_or_its_words_and_refuses_anything_else() -> None:
    for given, want in ((True, True), (False, False), ("true", True), ("False", False)):
        assert validate_configs({"unclean.leader.election.enable": given}, 3) == {"unclean.leader.election.enable": want}
    for bad in ("yes", 1, None):
        try:
            validate_configs({"unclean.leader.election.enable": bad}, 3)
        except RemoteError as e:
            assert e.code == P.INVALID_CONFIG and "unclean.leader.election.enable must be true or false" in str(e)
        else:
            raise AssertionError(f"{bad!r} was taken")
