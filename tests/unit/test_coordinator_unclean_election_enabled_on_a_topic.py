"""Setting ``unclean.leader.election.enable`` on a topic (ALTER_TOPIC) elects its offline
partitions that an unclean election may lead, at once, as Kafka's controller does when the
topic config changes -- not only at the next death or first sign of life of one of their
replicas, which may never come.

The case that makes it matter: a topic made while only broker 1 is heard has the ISR [1] in
each partition (nodes/coordinator/topics.py ``place_partitions``: a broker not heard has
fetched nothing); broker 1 is lost for good before its leader took the others in. The
partitions are offline with brokers 2 and 3 running and heard, and turning unclean election on
for the topic -- the operator's remedy, docs/replication.md -- changed nothing: no election ran
until a replica died or restarted.

Real ``Coordinator`` objects on a ManualClock.
"""

from __future__ import annotations

from pathlib import Path

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.coordinator.node import Coordinator
from nodes.coordinator.store import PartitionState
from tests.unit.builders_broker import coordinator, create_topic, heartbeat
from tests.unit.fakes import request

UNCLEAN = "unclean.leader.election.enable"


def _lose_broker_1(coord: Coordinator) -> None:
    """Brokers 2 and 3 heartbeat for a session and more; broker 1 is silent: dead."""
    for _ in range(coord.config.liveness.session_timeout_ms // 100 + 2):
        coord.clock.advance(100)  # type: ignore[attr-defined]
        heartbeat(coord, 2)
        heartbeat(coord, 3)
        coord._check_liveness()
    assert coord.alive == {2, 3}


def _alter(coord: Coordinator, topic: str, value: str) -> list[PartitionState]:
    coord._on_alter_topic(request(P.ALTER_TOPIC, topic=topic, configs={UNCLEAN: value}))
    return coord.state.topics[topic].partitions


def test_turning_unclean_election_on_for_a_topic_elects_its_offline_partitions(tmp_path: Path) -> None:
    coord = coordinator(tmp_path, heard=(1,))
    try:
        made = create_topic(coord, "t", 2, 3)
        create_topic(coord, "other", 1, 3)
        assert [(ps.leader, ps.isr) for ps in made] == [(1, [1]), (1, [1])]
        _lose_broker_1(coord)
        parts = coord.state.topics["t"].partitions
        assert [(ps.leader, ps.isr) for ps in parts] == [(-1, [1]), (-1, [1])]
        epochs = [ps.leader_epoch for ps in parts]
        assert [ps.leader for ps in _alter(coord, "t", "false")] == [-1, -1], "a clean topic stays offline"
        parts = _alter(coord, "t", "true")
        assert [(ps.leader, ps.leader_epoch, ps.isr) for ps in parts] == \
            [(2, epochs[0] + 1, [2]), (2, epochs[1] + 1, [2])]
        assert coord.state.topics["other"].partitions[0].leader == -1, "another topic's config was applied"
    finally:
        coord.close()


def test_no_unclean_election_while_an_in_sync_replica_may_run(tmp_path: Path) -> None:
    """After a coordinator restart, broker 1 -- the partitions' in-sync replica -- is alive by
    the start's grace and not heard yet: it may run and hold what was acknowledged, so turning
    unclean election on elects nothing until its session has run out."""
    coord = coordinator(tmp_path, heard=(1,))
    try:
        create_topic(coord, "t", 1, 3)
        _lose_broker_1(coord)
    finally:
        coord.close()
    coord = coordinator(tmp_path, heard=(2, 3))
    try:
        assert coord.alive == {1, 2, 3}
        assert [(ps.leader, ps.isr) for ps in _alter(coord, "t", "true")] == [(-1, [1])]
        _lose_broker_1(coord)
        assert [(ps.leader, ps.isr) for ps in coord.state.topics["t"].partitions] == [(2, [2])]
    finally:
        coord.close()


def test_an_alter_topic_refused_for_its_partitions_changes_no_config_and_elects_nothing(tmp_path: Path) -> None:
    """ALTER_TOPIC with a valid config and a partition count it refuses (not growing) answers
    the error and changes nothing. Before, the config was set in memory before the count was
    judged: the refused request's config was published and stored with the next change, and an
    election it made would have been served (a METADATA answer) without being stored -- forgotten
    by a restart, its leader epoch given again to another leader."""
    coord = coordinator(tmp_path, heard=(1,))
    try:
        create_topic(coord, "t", 1, 3)
        _lose_broker_1(coord)
        before = [(ps.leader, ps.leader_epoch, ps.isr) for ps in coord.state.topics["t"].partitions]
        try:
            coord._on_alter_topic(request(P.ALTER_TOPIC, topic="t", configs={UNCLEAN: "true"}, partitions=1))
        except RemoteError as e:
            assert e.code == P.INVALID_PARTITIONS
        else:
            raise AssertionError("a partition count that does not grow was taken")
        assert UNCLEAN not in coord.state.topics["t"].configs
        assert [(ps.leader, ps.leader_epoch, ps.isr) for ps in coord.state.topics["t"].partitions] == before
        assert coord.metadata().topics["t"].partitions[0].leader == -1
    finally:
        coord.close()
