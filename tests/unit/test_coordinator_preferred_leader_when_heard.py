"""A broker the coordinator hears for the first time (or again, alive after being dead) takes
no leadership it is the preferred (first) replica of at that moment: only the periodic
preferred-leader check (``election.preferred_leaders``, every
``replication.preferred_leader_check_ms``) moves a partition to its first replica, and only
where that replica is in the ISR -- which says its leader took it in once it had caught up.

A sign of life says nothing of what the broker holds. A move at a broker's first heartbeat
(9398899, undone) made a broker leader on ISR membership nothing had confirmed: after a
coordinator restart, the stored ISR can still name a follower its leader found lagging while
the coordinator was down (the leader's shrink is pending and sent again, nodes/broker/isr.py),
and the lagging follower led before that retry landed. (A topic made while the cluster started
had its unheard replicas in the ISR by placement, having fetched nothing; they are no longer
put there: tests/unit/test_coordinator_placement_in_the_start_grace.py.)

What a first heartbeat still does: elect offline partitions the broker may lead
(``election.on_broker_up``), never one it is out of the ISR of, and never a new process of it
(its restart took it out of the ISRs first).

Real ``Coordinator`` objects on a ManualClock.
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


@pytest.fixture
def starting(tmp_path: Path) -> Iterator[Coordinator]:
    """A fresh cluster's coordinator just started: brokers 1-3 alive by its grace, none heard."""
    coord = coordinator(tmp_path, ManualClock(NOW_MS), heard=())
    try:
        yield coord
    finally:
        coord.close()


def _leaders(coord: Coordinator, topic: str) -> list[tuple[int, int]]:
    """Each partition's (leader, leader epoch)."""
    return [(ps.leader, ps.leader_epoch) for ps in coord.state.topics[topic].partitions]


def _published_leaders(coord: Coordinator, topic: str) -> list[int]:
    """The leaders as a METADATA request is answered (what `loom status` and clients see)."""
    return [p.leader for p in coord.metadata().topics[topic].partitions]


def test_a_broker_out_of_the_isr_or_not_heard_takes_no_leadership(starting: Coordinator) -> None:
    """Broker 2 is heard but out of partition 1's ISR; broker 3 is alive by the grace only:
    neither leads anything it was not elected for."""
    starting.state.topics["t"] = TopicState([PartitionState(1, 1, [2, 1, 3], [1, 3]),
                                             PartitionState(1, 1, [3, 1, 2], [1, 2, 3])], {})
    starting.commit()
    heartbeat(starting, 1)
    heartbeat(starting, 2)
    assert _leaders(starting, "t") == [(1, 1), (1, 1)]
    assert starting.electable() == {1, 2}


def _restarted(tmp_path: Path, parts: list[PartitionState]) -> Coordinator:
    """A coordinator that heard brokers 1-3 as processes ``p-<id>`` with topic ``t`` of ``parts``,
    restarted: it has heard none yet. The caller closes it."""
    first = coordinator(tmp_path, ManualClock(NOW_MS), heard=())
    try:
        for bid in (1, 2, 3):
            heartbeat(first, bid)
        first.state.topics["t"] = TopicState(parts, {})
        first.commit()
    finally:
        first.close()
    return coordinator(tmp_path, ManualClock(NOW_MS), heard=())


def test_after_a_coordinator_restart_a_broker_in_the_stored_isr_gets_its_partitions_back_at_the_periodic_check(
        tmp_path: Path) -> None:
    """Every broker is "first heard" after a coordinator restart: one in the stored ISR leads
    its preferred partitions from the next periodic check, not from its first heartbeat (by
    then its leader has had a check's interval to report it lagging, if it does)."""
    coord = _restarted(tmp_path, [PartitionState(2, 5, [1, 2, 3], [1, 2, 3]), PartitionState(2, 5, [2, 3, 1], [1, 2, 3])])
    try:
        heartbeat(coord, 2)
        heartbeat(coord, 1)
        heartbeat(coord, 3)
        assert _leaders(coord, "t") == [(2, 5), (2, 5)]
        assert _published_leaders(coord, "t") == [2, 2]
        coord._restore_preferred_leaders()
        assert _leaders(coord, "t") == [(1, 6), (2, 5)]
    finally:
        coord.close()


def test_a_broker_restarted_while_the_coordinator_was_down_takes_no_leadership_when_first_heard(tmp_path: Path) -> None:
    """Heard first as a new process: it may have lost an unflushed tail, so its restart takes it
    out of the ISRs first (down, then up) -- in no ISR, it leads nothing it preferred."""
    coord = _restarted(tmp_path, [PartitionState(2, 5, [1, 2, 3], [1, 2, 3])])
    try:
        heartbeat(coord, 2)
        heartbeat(coord, 1, "p-1-new")
        ps = coord.state.topics["t"].partitions[0]
        assert (ps.leader, ps.leader_epoch) == (2, 5) and 1 not in ps.isr
    finally:
        coord.close()


def test_a_broker_back_alive_is_elected_where_it_is_the_last_isr_member_and_moves_nothing_else(tmp_path: Path) -> None:
    """A broker judged dead stays in the ISR of a partition only as its last member: that one is
    offline and elected when it comes back (``on_broker_up``); the partitions it left the ISR
    of wait for the leader to take it back and the periodic check."""
    coord = coordinator(tmp_path, ManualClock(NOW_MS), heard=())
    try:
        coord.state.topics["t"] = TopicState([PartitionState(1, 1, [1, 2, 3], [1, 2, 3]),
                                              PartitionState(1, 1, [2, 1, 3], [1])], {})
        coord.commit()
        for bid in (1, 2, 3):
            heartbeat(coord, bid)
        for _ in range(coord.config.liveness.session_timeout_ms // PASS_MS + 1):  # broker 1 silent
            coord.clock.advance(PASS_MS)  # type: ignore[attr-defined]
            heartbeat(coord, 2)
            heartbeat(coord, 3)
            coord._check_liveness()
        assert coord.alive == {2, 3}
        parts = coord.state.topics["t"].partitions
        assert [(ps.leader, ps.isr) for ps in parts] == [(2, [2, 3]), (-1, [1])]
        heartbeat(coord, 1)
        assert [(ps.leader, ps.isr) for ps in parts] == [(2, [2, 3]), (1, [1])]
    finally:
        coord.close()


def test_a_lagging_preferred_replica_heard_after_a_coordinator_restart_does_not_take_over_before_its_leader_reports(
        tmp_path: Path) -> None:
    """Broker 2 leads t-0 and has found broker 1 (its preferred replica) behind by more than the
    lag time while the coordinator was down; its ALTER_ISR dropping broker 1 is sent again once
    the coordinator is back. Broker 1 -- running all along, still in the stored ISR -- is heard
    before that retry: it should not lead, and the shrink should land."""
    coord = _restarted(tmp_path, [PartitionState(2, 5, [1, 2, 3], [1, 2, 3])])
    try:
        heartbeat(coord, 2)
        heartbeat(coord, 3)
        ps = coord.state.topics["t"].partitions[0]
        proposal = {"topic": "t", "partition": 0, "leader_epoch": ps.leader_epoch,
                    "partition_epoch": ps.partition_epoch, "isr": [2, 3]}  # made before broker 1 was heard
        heartbeat(coord, 1)
        reply = coord._on_alter_isr(request(P.ALTER_ISR, broker_id=2, incarnation="p-2", parts=[proposal]))
        assert reply["parts"][0]["error"] == 0, reply
        ps = coord.state.topics["t"].partitions[0]
        assert (ps.leader, ps.leader_epoch, ps.isr) == (2, 5, [2, 3])
        coord._restore_preferred_leaders()  # out of the ISR: the periodic check leaves it too
        assert (ps.leader, ps.leader_epoch) == (2, 5)
    finally:
        coord.close()
