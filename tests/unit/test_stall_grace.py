"""A node that was itself stalled does not judge others by the silence it did not listen to.

Real ``Coordinator``/``Broker`` objects on a ``ManualClock``: the clock jumps over a stall and
the next reactor pass runs before any heartbeat queued meanwhile has been read -- the race a
real SIGSTOP/SIGCONT loses when ZeroMQ's I/O thread has not yet delivered them.
"""

from __future__ import annotations

from pathlib import Path

import zmq

from fabric import wire
from fabric.clock import ManualClock
from fabric.config import load_config
from nodes.coordinator.node import Coordinator
from tests.harness import make_config, wait_until
from tests.unit.builders_broker import coordinator_with_a_member, leader_of_one_partition

STALL_MS = 10_000


def test_stalled_coordinator_gives_brokers_and_members_a_session_from_its_resume(tmp_path: Path) -> None:
    coord, clock, session_ms = coordinator_with_a_member(tmp_path)
    try:
        clock.advance(STALL_MS)  # SIGSTOP ... SIGCONT; nothing read yet
        coord.reactor.run_once(0)
        assert coord.alive == {1, 2, 3}
        assert "m-1" in coord.groups.groups["g"].members and coord.groups.groups["g"].generation == 1
        assert coord.stall_watch.stalls == 1
        # judged again from the resume on: a broker heard since stays, the silent ones go after a session
        for _ in range(2 * session_ms // 100):
            clock.advance(100)
            coord._seen(1)
            coord.reactor.run_once(0)
        assert coord.alive == {1}
        group = coord.groups.groups.get("g")
        assert group is None or "m-1" not in group.members
    finally:
        coord.close()


def test_stalled_leader_does_not_shrink_the_isr_by_silence_it_did_not_hear(tmp_path: Path) -> None:
    broker, clock, sent = leader_of_one_partition(tmp_path)
    try:
        lag_ms = broker.config.replication.replica_lag_time_max_ms
        clock.advance(lag_ms + STALL_MS)
        broker.reactor.run_once(0)
        assert not [h for h in sent if "parts" in h], "the ISR shrank on silence nobody listened to"
        for _ in range(lag_ms // 100 + 5):  # still silent a whole lag time after the resume: now they go
            clock.advance(100)
            broker.reactor.run_once(0)
        assert [h["parts"][0]["isr"] for h in sent if "parts" in h] == [[1]]
    finally:
        broker.close()


def test_heartbeats_waiting_in_the_socket_are_read_before_a_liveness_verdict(tmp_path: Path) -> None:
    # the coordinator was busy (passes that did not read its SUB socket) for longer than the
    # session while broker 1's heartbeats queued up: they count, they are not silence
    config = load_config(make_config(tmp_path, 3, engine="memory"))
    clock = ManualClock(start_ms=1_000_000)
    coord = Coordinator(config, "coordinator", clock=clock)
    node = config.node("broker-1")
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.bind(f"tcp://{node.host}:{node.publish_port}")
    try:
        for bid in (1, 2, 3):
            coord._seen(bid)
        step_ms = coord.stall_watch.threshold_ms // 2
        for _ in range(config.liveness.session_timeout_ms // step_ms + 1):
            clock.advance(step_ms)
            coord.stall_watch.tick()  # busy passes, no stall, nothing read
        heartbeat = wire.encode_heartbeat(wire.Heartbeat("broker-1", "broker", 4242, clock.wall_ms(), broker_id=1))
        wait_until(lambda: pub.send_multipart(heartbeat)
                   or coord.sub.poll(0), 10, what="a heartbeat waiting on the coordinator's SUB socket")
        coord._check_liveness()
        assert 1 in coord.alive and 2 not in coord.alive
    finally:
        pub.close(0)
        coord.close()
