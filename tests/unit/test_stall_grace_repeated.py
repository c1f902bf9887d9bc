"""Stall grace forgives only the silence nobody listened to: a node that stalls again and again
still counts the silence it did hear, so a dead peer is found within a session of listening
time, however often the node stalls.

Real ``Coordinator``/``Broker`` on a ``ManualClock``: each stall is one clock jump just over the
node's stall threshold, followed by normal passes.
"""

from __future__ import annotations

from pathlib import Path

from nodes.broker.node import STALL_THRESHOLD_MS
from tests.unit.builders_broker import coordinator_with_a_member, leader_of_one_partition

PASS_MS = 100
CYCLES_MAX = 40


def test_a_dead_broker_is_declared_dead_although_the_coordinator_keeps_stalling(tmp_path: Path) -> None:
    coord, clock, session_ms = coordinator_with_a_member(tmp_path)  # m-1 never heartbeats: dead too
    try:
        listened_ms = 0
        for _ in range(CYCLES_MAX):  # broker 3 is dead from the start; 1 and 2 keep heartbeating
            clock.advance(coord.stall_watch.threshold_ms + PASS_MS)  # a stall (a slow fsync, GC, SIGSTOP)
            coord._seen(1), coord._seen(2)  # their queued heartbeats
            coord.reactor.run_once(0)
            for _ in range(session_ms // 2 // PASS_MS):  # then half a session of normal passes
                clock.advance(PASS_MS)
                listened_ms += PASS_MS
                coord._seen(1), coord._seen(2)
                coord.reactor.run_once(0)
            if 3 not in coord.alive:
                break
        assert coord.stall_watch.stalls >= 2
        assert 3 not in coord.alive, (f"broker 3, silent for {listened_ms} ms of listening (session "
                                      f"{session_ms} ms), escaped detection through repeated stalls")
        assert listened_ms <= 2 * session_ms + session_ms // 2
        assert coord.alive == {1, 2}
        group = coord.groups.groups.get("g")
        assert group is None or "m-1" not in group.members, "a dead group member escaped through repeated stalls"
    finally:
        coord.close()


def test_a_stuck_follower_leaves_the_isr_although_the_leader_keeps_stalling(tmp_path: Path) -> None:
    broker, clock, sent = leader_of_one_partition(tmp_path)
    lag_ms = broker.config.replication.replica_lag_time_max_ms
    try:
        part = broker.partitions[("t", 0)]
        listened_ms = 0
        for _ in range(CYCLES_MAX):  # broker 3 never fetches; broker 2 stays caught up
            clock.advance(STALL_THRESHOLD_MS + PASS_MS)
            part.record_follower_fetch(2, part.log_end_offset, clock.now_ms())
            broker.reactor.run_once(0)
            for _ in range(lag_ms // 2 // PASS_MS):
                clock.advance(PASS_MS)
                listened_ms += PASS_MS
                part.record_follower_fetch(2, part.log_end_offset, clock.now_ms())
                broker.reactor.run_once(0)
            if any("parts" in h for h in sent):
                break
        assert [h["parts"][0]["isr"] for h in sent if "parts" in h] == [[1, 2]], \
            f"follower 3, stuck for {listened_ms} ms of listening (lag max {lag_ms} ms), stayed in the ISR"
        assert listened_ms <= 2 * lag_ms + lag_ms // 2
    finally:
        broker.close()


def test_forgiven_ms_moves_a_sign_of_life_by_the_stall_never_past_the_resume() -> None:
    """The one rule by which the monitor (its NodeViews), the supervisor's monitor watch, the
    brokers and the coordinator forgive their own stall (fabric/stall.py)."""
    from fabric.stall import forgiven_ms
    assert forgiven_ms(5_000, 20_000, 10_000) == 15_000  # the 5 s heard before the stall still count
    assert forgiven_ms(19_000, 20_000, 5_000) == 20_000  # never later than the resume
    heard = forgiven_ms(0, 10_000, 5_000)  # stalls again and again: what was heard adds up
    assert forgiven_ms(heard, 20_000, 5_000) == 10_000
