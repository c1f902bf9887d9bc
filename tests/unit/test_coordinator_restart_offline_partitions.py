"""A restarted coordinator elects the partitions it stored offline once their in-sync replicas
are heard from, also when those brokers are the same processes as before (only paused: no new
incarnation, so no restart of theirs to react to).

A restarted coordinator takes every broker for alive for one session (its start's grace), so
the heartbeats of brokers that were alive all along bring no "came back" of theirs: partitions
that went offline while every broker was paused (SIGSTOP) stayed offline for good -- the produce
nemesis' seed 110, offline for over 90 s with all three brokers running and heard.

Real ``Coordinator`` objects on one data directory; the second is the first restarted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from fabric import protocol as P
from fabric.clock import ManualClock
from nodes.coordinator.node import Coordinator
from nodes.coordinator.store import PartitionState, TopicState
from tests.unit.builders_broker import coordinator, heartbeat
from tests.unit.fakes import request

NOW_MS = 1_000_000
PASS_MS = 100  # the liveness check's period here
INCARNATIONS = {1: "p-1", 2: "p-2", 3: "p-3"}


def _coordinator(tmp_path: Path) -> Coordinator:
    """The coordinator on ``tmp_path``'s data dir, started: it has heard no broker yet."""
    return coordinator(tmp_path, ManualClock(NOW_MS), heard=())


def _heartbeat(coord: Coordinator, broker_id: int) -> None:
    heartbeat(coord, broker_id, INCARNATIONS[broker_id])


@pytest.fixture
def restarted(tmp_path: Path) -> Iterator[Coordinator]:
    """A coordinator that heard every broker, then nothing for a session (every partition
    offline: leader -1, its ISR kept, stored), restarted."""
    coord = _coordinator(tmp_path)
    try:
        coord.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3]),
                                              PartitionState(2, 0, [2, 3, 1], [2, 3]),
                                              PartitionState(3, 0, [3, 1, 2], [3])], {})
        coord.commit()
        for bid in INCARNATIONS:
            _heartbeat(coord, bid)
        for _ in range(coord.config.liveness.session_timeout_ms // PASS_MS + 1):  # running all along: no stall
            coord.clock.advance(PASS_MS)  # type: ignore[attr-defined]
            coord._check_liveness()
        assert coord.alive == set()
    finally:
        coord.close()
    again = _coordinator(tmp_path)
    try:
        assert [ps.leader for ps in again.state.topics["t"].partitions] == [-1, -1, -1]
        yield again
    finally:
        again.close()


def _leaders(coord: Coordinator) -> list[int]:
    return [ps.leader for ps in coord.state.topics["t"].partitions]


def test_offline_partitions_get_leaders_when_their_paused_brokers_are_heard_again(restarted: Coordinator) -> None:
    for bid in INCARNATIONS:  # the same processes, resumed: each one's first heartbeat elects
        _heartbeat(restarted, bid)  # what it is the first heard in-sync replica of
    # the ISRs keep the brokers not heard yet when each was elected: they may hold what the
    # leader lacks after a restart of its own
    stored = restarted.store.load().topics["t"].partitions
    assert [(ps.leader, ps.isr) for ps in stored] == [(1, [1, 2, 3]), (2, [2, 3]), (3, [3])]
    assert _leaders(restarted) == [1, 2, 3]
    assert restarted.metadata().partition("t", 0).leader == 1  # type: ignore[union-attr]


def test_a_broker_alive_only_by_the_restart_grace_is_not_elected(restarted: Coordinator) -> None:
    """Until a broker is heard, the restarted coordinator has no sign that it runs: an offline
    partition's leader comes from the in-sync replicas it heard."""
    _heartbeat(restarted, 3)
    assert [(ps.leader, ps.isr) for ps in restarted.state.topics["t"].partitions] == [(3, [1, 2, 3]), (3, [2, 3]), (3, [3])]
    _heartbeat(restarted, 1)  # nothing left offline: the leaders stay (the ISRs grow back through them)
    assert _leaders(restarted) == [3, 3, 3]


def test_a_registration_of_a_known_process_is_a_sign_of_life_too(restarted: Coordinator) -> None:
    # broker 2's process registers (its first answer was lost): a process the state names
    restarted._on_register(request(P.BROKER_REGISTER, broker_id=2, incarnation=INCARNATIONS[2],
                                   cluster_id=restarted.state.cluster_id))
    assert _leaders(restarted) == [2, 2, -1]


@pytest.fixture
def restarted_led(tmp_path: Path) -> Iterator[Coordinator]:
    """A coordinator restarted over partitions that have leaders, which has heard brokers 2 and 3
    since its start and not yet broker 1 (alive by the start's grace only: maybe dead)."""
    coord = _coordinator(tmp_path)
    try:
        coord.state.topics["t"] = TopicState([PartitionState(2, 0, [2, 1, 3], [2, 1, 3]),
                                              PartitionState(3, 0, [1, 3, 2], [1, 3, 2])], {})
        coord.commit()
    finally:
        coord.close()
    again = _coordinator(tmp_path)
    try:
        _heartbeat(again, 2)
        _heartbeat(again, 3)
        yield again
    finally:
        again.close()


def test_a_leaders_death_in_the_start_grace_elects_a_heard_broker(restarted_led: Coordinator) -> None:
    """Broker 2 dies before broker 1 was ever heard: its partition goes to broker 3, which runs,
    not to broker 1, of which nothing says it does (it would lead nothing until its session ran
    out, and then be replaced)."""
    coord = restarted_led
    coord.alive.discard(2)
    coord._on_broker_down(2)
    assert _leaders(coord) == [3, 3]


def test_leadership_does_not_move_to_a_preferred_replica_not_yet_heard(restarted_led: Coordinator) -> None:
    coord = restarted_led
    coord._restore_preferred_leaders()
    assert _leaders(coord) == [2, 3]  # partition 1's preferred replica, broker 1, not yet heard
    _heartbeat(coord, 1)
    coord._restore_preferred_leaders()
    assert _leaders(coord) == [2, 1]


# -- what the grace must not cost: acknowledged records (a restarted broker, unclean election)
# and the leader's place in its ISR. Brokers alive by the grace only are not elected, but they
# may run and hold everything acknowledged: a broker restarted since (a new process, maybe
# without its unflushed tail) is not elected past them, nor a replica outside the ISR.

def _restarted_over(tmp_path: Path, *partitions: PartitionState, configs: dict | None = None) -> Coordinator:
    """A coordinator that stored topic ``t`` of ``partitions`` (every broker's process as in
    INCARNATIONS), restarted: it has heard no broker yet."""
    coord = _coordinator(tmp_path)
    try:
        coord.state.topics["t"] = TopicState(list(partitions), dict(configs or {}))
        coord.state.incarnations.update(INCARNATIONS)
        coord.commit()
    finally:
        coord.close()
    return _coordinator(tmp_path)


def test_a_broker_restarted_while_the_coordinator_was_down_is_not_elected_past_the_isr_it_may_lack(tmp_path: Path) -> None:
    """Broker 1 restarted (a new process: it may have lost an unflushed tail that brokers 2 and
    3, in the ISR, acknowledged) and registers before their heartbeats reach the restarted
    coordinator. It leaves the ISRs as on any restart; the partition it led waits for 2 or 3
    instead of being given to it alone (then 2 and 3 truncate to its log: acknowledged records
    lost)."""
    coord = _restarted_over(tmp_path, PartitionState(1, 0, [1, 2, 3], [1, 2, 3]), PartitionState(2, 0, [2, 1, 3], [1, 2, 3]))
    try:
        coord._on_register(request(P.BROKER_REGISTER, broker_id=1, incarnation="p-1-new",
                                   cluster_id=coord.state.cluster_id))
        assert [(ps.leader, ps.isr) for ps in coord.state.topics["t"].partitions] == [(-1, [2, 3]), (2, [2, 3])]
        _heartbeat(coord, 3)
        assert [(ps.leader, ps.isr) for ps in coord.state.topics["t"].partitions] == [(3, [2, 3]), (2, [2, 3])]
    finally:
        coord.close()


def test_a_restarted_follower_heard_first_leaves_the_isr_and_is_not_elected_when_the_leader_dies(tmp_path: Path) -> None:
    coord = _restarted_over(tmp_path, PartitionState(2, 0, [2, 1, 3], [1, 2, 3]))
    try:
        coord._on_register(request(P.BROKER_REGISTER, broker_id=1, incarnation="p-1-new",
                                   cluster_id=coord.state.cluster_id))
        _heartbeat(coord, 2)
        coord.alive.discard(2)  # the leader crashes before broker 3 (alive by the grace) is heard
        coord._on_broker_down(2)
        (ps,) = coord.state.topics["t"].partitions
        assert ps.leader != 1 and 1 not in ps.isr, (ps.leader, ps.isr)
    finally:
        coord.close()


def test_the_grace_does_not_drop_the_leader_from_its_own_isr(tmp_path: Path) -> None:
    """The leader, broker 1, is not yet heard (alive by the grace); a follower dies: the ISR
    keeps the leader (an ISR without its leader is one no ALTER_ISR may produce)."""
    coord = _restarted_over(tmp_path, PartitionState(1, 0, [1, 2, 3], [1, 2, 3]))
    try:
        _heartbeat(coord, 2)
        _heartbeat(coord, 3)
        coord.alive.discard(3)
        coord._on_broker_down(3)
        (ps,) = coord.state.topics["t"].partitions
        assert (ps.leader, ps.isr) == (1, [1, 2])
    finally:
        coord.close()


UNCLEAN = {"unclean.leader.election.enable": True}


def test_no_unclean_election_while_an_in_sync_replica_may_run(tmp_path: Path) -> None:
    """An offline partition whose only in-sync replica, broker 1, is alive by the grace: the
    first heard replica outside the ISR is not elected uncleanly (broker 1, heard next, holds
    every acknowledged record) -- but it is once broker 1 has been silent for its session."""
    coord = _restarted_over(tmp_path, PartitionState(-1, 3, [1, 2, 3], [1]), PartitionState(-1, 3, [1, 2, 3], [1]),
                            configs=UNCLEAN)
    try:
        _heartbeat(coord, 2)
        assert _leaders(coord) == [-1, -1]
        _heartbeat(coord, 1)
        assert [(ps.leader, ps.isr) for ps in coord.state.topics["t"].partitions] == [(1, [1]), (1, [1])]
    finally:
        coord.close()


def test_an_unclean_election_waits_out_the_grace_of_the_in_sync_replica(tmp_path: Path) -> None:
    coord = _restarted_over(tmp_path, PartitionState(-1, 3, [1, 2, 3], [1]), configs=UNCLEAN)
    try:
        _heartbeat(coord, 2)
        assert _leaders(coord) == [-1]
        for _ in range(coord.config.liveness.session_timeout_ms // PASS_MS + 1):  # broker 1 never heard
            coord.clock.advance(PASS_MS)  # type: ignore[attr-defined]
            _heartbeat(coord, 2)
            _heartbeat(coord, 3)
            coord._check_liveness()
        assert coord.alive == {2, 3}
        assert [(ps.leader, ps.isr) for ps in coord.state.topics["t"].partitions] == [(2, [2])]
    finally:
        coord.close()


def test_a_leaders_death_in_the_grace_is_no_unclean_election_past_an_in_sync_replica(tmp_path: Path) -> None:
    coord = _restarted_over(tmp_path, PartitionState(2, 3, [2, 3, 1], [1, 2]), configs=UNCLEAN)
    try:
        _heartbeat(coord, 2)
        _heartbeat(coord, 3)
        coord.alive.discard(2)
        coord._on_broker_down(2)  # broker 1, in sync, is alive by the grace: the partition waits for it
        assert [(ps.leader, ps.isr) for ps in coord.state.topics["t"].partitions] == [(-1, [1])]
        _heartbeat(coord, 1)
        assert _leaders(coord) == [1]
    finally:
        coord.close()


def test_an_election_in_the_grace_keeps_the_in_sync_replicas_not_yet_heard(tmp_path: Path) -> None:
    """Broker 1 (the leader) and then broker 2 restarted while the coordinator was down; broker 3,
    in sync, is not heard yet (paused a moment). The election after broker 1's restart goes to
    broker 2 (heard: its old process's heartbeat), and must keep broker 3 in the ISR: dropped
    from it, broker 2's own restart then found itself the last in-sync replica and was elected
    alone with an empty log (broker 3's acknowledged records lost when it follows)."""
    coord = _restarted_over(tmp_path, PartitionState(1, 0, [1, 2, 3], [1, 2, 3]))
    try:
        _heartbeat(coord, 2)
        coord._on_register(request(P.BROKER_REGISTER, broker_id=1, incarnation="p-1-new",
                                   cluster_id=coord.state.cluster_id))
        assert [(ps.leader, ps.isr) for ps in coord.state.topics["t"].partitions] == [(2, [2, 3])]
        coord._on_register(request(P.BROKER_REGISTER, broker_id=2, incarnation="p-2-new",
                                   cluster_id=coord.state.cluster_id))
        assert [(ps.leader, ps.isr) for ps in coord.state.topics["t"].partitions] == [(-1, [3])]
        _heartbeat(coord, 3)
        assert _leaders(coord) == [3]
    finally:
        coord.close()
