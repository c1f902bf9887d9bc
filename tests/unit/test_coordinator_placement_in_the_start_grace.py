"""Where a coordinator places new partitions in its start's grace (after a restart, or the first
start of a cluster): every broker is alive for one session, but only those it has heard (a
heartbeat, a registration) may lead (``Coordinator.electable``).

A topic made then (CREATE_TOPIC, more partitions by ALTER_TOPIC) gave the leadership of its
partitions round-robin over every alive broker: a partition led by a broker not yet heard --
maybe dead -- took no write until that broker's session ran out. Replicas are still placed
over the alive brokers (the first replicas, the preferred leaders, spread as after the grace),
but each partition is led by its first heard replica, and its ISR is its heard replicas alone:
a broker not heard yet has fetched nothing (in the ISR by placement, the preferred-leader check
made it leader with an empty log, and the leader truncated the records it had acknowledged). It
joins through the leader's ISR expansion once it has caught up, and the preferred-leader check
moves leadership to it then. A partition with no heard replica goes to brokers after a heard
one; with no broker heard yet, the partitions are made offline and elected as offline
partitions are, when the first of their replicas is heard, with the heard replicas as the ISR.
The offsets topic waits (retriable) until as many brokers as its replication factor are heard.

Real ``Coordinator`` objects on a ManualClock.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import pytest

from fabric import protocol as P
from fabric.clock import ManualClock
from fabric.errors import RemoteError
from nodes.broker.node import Broker
from nodes.coordinator.node import Coordinator
from nodes.coordinator.offsets_client import OFFSETS_TOPIC
from nodes.coordinator.store import PartitionState
from tests.unit.builders_broker import Loopback, coordinator, create_topic, heartbeat
from tests.unit.fakes import request


@pytest.fixture
def starting(tmp_path: Path) -> Iterator[Coordinator]:
    """A coordinator just started: brokers 1-3 alive by its grace, none heard yet."""
    coord = coordinator(tmp_path, heard=())
    try:
        assert coord.alive == {1, 2, 3} and coord.heard == set()
        yield coord
    finally:
        coord.close()


def _placed(partitions: list[PartitionState]) -> list[tuple[int, list[int], list[int]]]:
    return [(ps.leader, ps.replicas, ps.isr) for ps in partitions]


def test_a_topic_made_before_every_broker_is_heard_is_led_by_the_heard_brokers(starting: Coordinator) -> None:
    heartbeat(starting, 2)
    assert [ps.leader for ps in create_topic(starting, "one", 3, 1)] == [2, 2, 2]
    # replicas placed as after the grace (the first replicas spread), led by the first heard
    # one: RF 3 fits on three brokers; the ISR is the heard replica alone (those not heard
    # have fetched nothing: they join when the leader takes them in)
    assert _placed(create_topic(starting, "three", 3, 3)) == [(2, [2, 3, 1], [2]), (2, [3, 1, 2], [2]),
                                                         (2, [1, 2, 3], [2])]
    starting._on_alter_topic(request(P.ALTER_TOPIC, topic="one", partitions=5))
    assert [ps.leader for ps in starting.state.topics["one"].partitions] == [2] * 5
    heartbeat(starting, 3)
    starting._on_alter_topic(request(P.ALTER_TOPIC, topic="three", partitions=5))
    assert _placed(starting.state.topics["three"].partitions)[3:] == [(2, [1, 2, 3], [2, 3]), (2, [2, 3, 1], [2, 3])]
    stored = starting.store.load().topics["three"].partitions
    assert [(ps.leader, ps.isr) for ps in stored] == [(2, [2])] * 3 + [(2, [2, 3])] * 2


def test_with_every_broker_heard_the_leaders_are_spread_as_before(starting: Coordinator) -> None:
    for bid in (1, 2, 3):
        heartbeat(starting, bid)
    assert _placed(create_topic(starting, "a", 3, 2)) == [(1, [1, 2], [1, 2]), (2, [2, 3], [2, 3]), (3, [3, 1], [3, 1])]
    assert [ps.leader for ps in create_topic(starting, "b", 3, 1)] == [2, 3, 1]  # from the next broker on


def test_a_topic_made_before_any_broker_is_heard_is_elected_when_its_replicas_are_heard(starting: Coordinator) -> None:
    """No broker to lead yet: the partitions are made offline (leader -1, every replica in the
    ISR) and each gets its leader, as an offline partition does, when the first of its
    replicas is heard -- not one of them waits for a session to run out."""
    partitions = create_topic(starting, "t", 3, 2)
    assert _placed(partitions) == [(-1, [1, 2], [1, 2]), (-1, [2, 3], [2, 3]), (-1, [3, 1], [3, 1])]
    heartbeat(starting, 3)
    assert [(ps.leader, ps.leader_epoch) for ps in starting.state.topics["t"].partitions] == [(-1, 0), (3, 1), (3, 1)]
    heartbeat(starting, 1)
    # each ISR is what was heard when the partition got its leader: the others join by expansion
    assert _placed(starting.state.topics["t"].partitions) == [(1, [1, 2], [1]), (3, [2, 3], [3]), (3, [3, 1], [3])]
    assert [ps.leader for ps in starting.store.load().topics["t"].partitions] == [1, 3, 3]


def test_a_broker_that_registers_leads_the_partitions_made_offline_before_it_was_heard(tmp_path: Path) -> None:
    """The whole path with a real broker: its registration, the coordinator's first sign of it,
    elects it, and the broker takes the leadership of a partition it learnt of offline."""
    clock = ManualClock(start_ms=1_000_000)
    coord = coordinator(tmp_path, clock, heard=())
    broker = Broker(coord.config, "broker-1", clock=clock)
    try:
        loop = Loopback(broker, coord)
        assert _placed(create_topic(coord, "t", 3, 1)) == [(-1, [1], [1]), (-1, [2], [2]), (-1, [3], [3])]
        broker._register()
        loop.run_until_idle()
        assert [ps.leader for ps in coord.state.topics["t"].partitions] == [1, -1, -1]
        assert broker.partitions[("t", 0)].is_leader
    finally:
        broker.close()
        coord.close()


def _leaders(coord: Coordinator, topic: str) -> list[int]:
    return [ps.leader for ps in coord.state.topics[topic].partitions]


def _take_in(coord: Coordinator, topic: str) -> None:
    """Each partition's leader proposes every replica for its ISR (ALTER_ISR), as it does once
    they have fetched up to its high watermark; each proposal is applied."""
    for i, ps in enumerate(coord.state.topics[topic].partitions):
        reply = coord._on_alter_isr(request(P.ALTER_ISR, broker_id=ps.leader, incarnation=f"p-{ps.leader}", parts=[
            {"topic": topic, "partition": i, "leader_epoch": ps.leader_epoch, "partition_epoch": ps.partition_epoch,
             "isr": list(ps.replicas)}]))
        assert reply["parts"][0]["error"] == 0, reply
        assert sorted(coord.state.topics[topic].partitions[i].isr) == sorted(ps.replicas)


@pytest.mark.parametrize("rf, heard", [(3, (2,)), (2, (1, 2))])
def test_a_topic_made_while_some_brokers_are_unheard_spreads_its_leaders_once_they_are_heard(
        starting: Coordinator, rf: int, heard: tuple[int, ...]) -> None:
    """A fresh cluster's first topic, made in the few hundred milliseconds before every broker
    is heard: its leaders are heard brokers for now, but its preferred leaders spread over all
    of them as they would have after the grace -- once the others are heard and their leaders
    have taken them into the ISRs (caught up), the periodic check moves leadership back (else
    the first brokers heard led the topic for good). Replicas never in the ISR join it by
    the leader's expansion like any other."""
    for bid in heard:
        heartbeat(starting, bid)
    create_topic(starting, "t", 3, rf)
    assert set(_leaders(starting, "t")) <= set(heard)
    for bid in {1, 2, 3} - set(heard):
        heartbeat(starting, bid)
    _take_in(starting, "t")
    starting._restore_preferred_leaders()
    assert sorted(_leaders(starting, "t")) == [1, 2, 3]
    assert sorted(ps.replicas[0] for ps in starting.store.load().topics["t"].partitions) == [1, 2, 3]


def test_a_replica_not_heard_when_its_partition_is_made_is_out_of_its_isr_and_not_made_leader(
        starting: Coordinator) -> None:
    """Made with broker 1 alone heard, t's partitions are led by 1 with 1 alone in their ISRs:
    brokers 2 and 3 have fetched nothing. Heard afterwards, they are not in the ISR until their
    leader takes them in, so the periodic preferred-leader check cannot hand them a partition
    with an empty log (the leader, deposed, truncated to it: every acks=1 record it had
    acknowledged lost, no broker lost). The same for partitions added while they are unheard,
    and for a partition made offline (no broker heard) when it gets its first leader."""
    create_topic(starting, "never_led", 1, 3)
    heartbeat(starting, 1)
    parts = create_topic(starting, "t", 3, 3)
    assert sorted(ps.replicas[0] for ps in parts) == [1, 2, 3]
    assert [(ps.leader, ps.isr) for ps in parts] == [(1, [1])] * 3
    starting._on_alter_topic(request(P.ALTER_TOPIC, topic="t", partitions=4))
    assert [(ps.leader, ps.isr) for ps in starting.state.topics["t"].partitions] == [(1, [1])] * 4
    assert [(ps.leader, ps.isr) for ps in starting.state.topics["never_led"].partitions] == [(1, [1])]
    heartbeat(starting, 2)
    heartbeat(starting, 3)
    starting._restore_preferred_leaders()
    assert [(ps.leader, ps.leader_epoch, ps.isr) for ps in starting.state.topics["t"].partitions] == [(1, 0, [1])] * 4
    assert [ps.leader for ps in starting.store.load().topics["t"].partitions] == [1] * 4
    _take_in(starting, "t")  # caught up: now they may lead
    starting._restore_preferred_leaders()
    assert _leaders(starting, "t") == [ps.replicas[0] for ps in starting.state.topics["t"].partitions]
    assert set(_leaders(starting, "t")) == {1, 2, 3}


def test_the_offsets_topic_waits_for_enough_heard_brokers_and_spreads_its_leaders(starting: Coordinator) -> None:
    """The offsets topic (every group's commits) is made only on brokers heard, as many as its
    replication factor (a commit gets the retriable not_enough_replicas meanwhile): not on one
    alive by the grace only, maybe dead for good, and not led for good by the first one heard."""
    heartbeat(starting, 3)
    with pytest.raises(RemoteError) as refused:
        starting.groups.offsets.ensure_topic()
    assert refused.value.code == P.NOT_ENOUGH_REPLICAS and OFFSETS_TOPIC not in starting.state.topics
    for bid in (1, 2):
        heartbeat(starting, bid)
    starting.groups.offsets.ensure_topic()
    assert sorted(_leaders(starting, OFFSETS_TOPIC)) == [1, 2, 3]


def _restarted_whole(tmp_path: Path) -> Coordinator:
    """A coordinator restarted after it heard brokers 1-3's processes ``old-<id>``: every broker
    it hears now (``p-<id>`` by default) is a new process, as after `loom down`, `loom up`. It
    has heard none yet; the caller closes it."""
    first = coordinator(tmp_path, heard=())
    try:
        for bid in (1, 2, 3):
            heartbeat(first, bid, f"old-{bid}")
    finally:
        first.close()
    return coordinator(tmp_path, heard=())


def test_a_partition_made_offline_is_led_after_a_whole_cluster_restart_with_a_broker_lost(tmp_path: Path) -> None:
    """`loom down`, `loom up` with broker 3 lost for good, and a topic made before any broker is
    heard: its partitions are made offline, every broker heard is a new process (a restart: it
    leaves the ISRs, it may have lost an unflushed tail) -- but a partition that never had a
    leader holds no record, so any replica heard may lead it. Its ISR went down to broker 3,
    the last one not heard, and the partition stayed offline for good with brokers 1 and 2
    running."""
    coord = _restarted_whole(tmp_path)
    try:
        assert [ps.leader for ps in create_topic(coord, "t", 3, 3)] == [-1, -1, -1]
        for bid in (1, 2):
            heartbeat(coord, bid, f"new-{bid}")
        for _ in range(coord.config.liveness.session_timeout_ms // 100 + 1):
            coord.clock.advance(100)  # type: ignore[attr-defined]
            for bid in (1, 2):
                heartbeat(coord, bid, f"new-{bid}")
            coord._check_liveness()
        assert coord.alive == {1, 2}
        stored = coord.store.load().topics["t"].partitions
        assert all(ps.leader in (1, 2) and ps.leader in ps.isr for ps in stored), [(ps.leader, ps.isr) for ps in stored]
    finally:
        coord.close()


@pytest.mark.parametrize("seed", range(30))
def test_partitions_made_in_the_grace_of_a_whole_cluster_restart_all_get_leaders(tmp_path: Path, seed: int) -> None:
    """Seeded: a cluster restarted whole (each broker's first sign of life is a new process)
    with one broker lost or none, topics made and partitions added at random moments of the
    coordinator's grace, between the brokers' first heartbeats. Once the running brokers have
    been heard for a session: every partition with a running replica is led by one, in its
    own ISR (also after the preferred-leader check)."""
    rng = random.Random(seed)
    coord = _restarted_whole(tmp_path)
    lost = rng.choice((None, 1, 2, 3))
    running = [b for b in (1, 2, 3) if b != lost]
    try:
        made = 0
        for _ in range(rng.randrange(2, 12)):
            r = rng.random()
            if r < 0.3:
                create_topic(coord, f"t{made}", rng.randrange(1, 5), rng.choice((1, 2, 3)))
                made += 1
            elif r < 0.45 and made:
                name = f"t{rng.randrange(made)}"
                count = len(coord.state.topics[name].partitions)
                coord._on_alter_topic(request(P.ALTER_TOPIC, topic=name, partitions=count + rng.randrange(1, 3)))
            elif r < 0.8:
                heartbeat(coord, rng.choice(running))  # a new process: p-<id>
            else:
                coord.clock.advance(100)  # type: ignore[attr-defined]
                coord._check_liveness()
        for _ in range(coord.config.liveness.session_timeout_ms // 100 + 2):
            coord.clock.advance(100)  # type: ignore[attr-defined]
            for bid in running:
                heartbeat(coord, bid)
            coord._check_liveness()
        coord._restore_preferred_leaders()
        for name, topic in coord.state.topics.items():
            for i, ps in enumerate(topic.partitions):
                if set(ps.replicas) & set(running):
                    assert ps.leader in running and ps.leader in ps.isr, f"seed {seed}: {name}-{i} {ps}"
    finally:
        coord.close()
