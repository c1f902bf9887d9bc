"""A broker's metadata subscription misses what the coordinator published before it reached
the coordinator's PUB (the zguide's slow joiner): a delta published between the broker's
registration and its subscription's handshake -- a topic created just after the cluster
started -- stayed unknown to that replica until the next version push, up to a second, and
every ``acks=all`` produce to the topic waited as long. After each handshake the broker asks
for a snapshot (the Clone pattern).

Real ``Broker`` + ``Coordinator`` with requests and pushes delivered by hand (``Loopback``),
whose ``handshake()`` stands for the subscription's; the last test runs the real subscription
against a libzmq PUB.
"""

from __future__ import annotations

import time
from pathlib import Path

import zmq

from fabric import protocol as P
from nodes.coordinator.store import PartitionState, TopicState
from tests.unit.builders_broker import md, new_broker

DEADLINE_S = 10.0


def _create_topic(coord, name: str) -> None:  # noqa: ANN001
    """A topic of which broker 1 is a replica, committed: its delta is published."""
    coord.state.topics[name] = TopicState([PartitionState(2, 0, [2, 1, 3], [2, 1, 3])], {})
    coord.commit()


def _commands(loop) -> list[bytes]:  # noqa: ANN001
    return [cmd for cmd, _, _ in loop.requests]


def test_a_delta_lost_before_the_handshake_is_made_up_by_a_snapshot_at_the_handshake(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    broker._register()
    loop.run_until_idle()
    assert broker._registered
    _create_topic(coord, "early")
    lost = loop.take_pushes()  # published before the subscription reached the coordinator
    assert lost, "the creation was published"
    loop.run_until_idle()
    assert ("early", 0) not in broker.partitions  # nothing told the broker yet
    loop.handshake()
    assert _commands(loop) == [P.METADATA], "no snapshot asked for at the handshake"
    loop.run_until_idle()
    part = broker.partitions[("early", 0)]
    assert part.role == "follower" and part.leader_id == 2


def test_a_handshake_before_the_registration_answer_brings_a_snapshot_after_it(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    broker._register()
    answers = loop.serve(P.BROKER_REGISTER)  # the coordinator answers at its current version...
    _create_topic(coord, "early")              # ...then publishes a change
    loop.take_pushes()                          # lost: the subscription was not there yet
    loop.handshake()                            # now it is, before the answer is read
    assert _commands(loop) == [], "a snapshot asked for before registering"
    loop.deliver(answers)
    assert broker._registered and ("early", 0) not in broker.partitions
    assert _commands(loop) == [P.METADATA], "no snapshot after registering"
    loop.run_until_idle()
    assert broker.partitions[("early", 0)].leader_id == 2
    loop.handshake()  # a later handshake (a restarted coordinator) asks again
    assert _commands(loop) == [P.METADATA]


def _bound(sock: zmq.Socket, endpoint: str) -> bool:
    try:
        sock.bind(endpoint)
        return True
    except zmq.ZMQError:
        return False


def test_the_real_subscription_asks_for_a_snapshot_at_each_handshake_with_the_coordinators_pub(tmp_path: Path) -> None:
    broker = new_broker(tmp_path)
    asked: list[bytes] = []

    def request(command: bytes, header: dict, payloads=(), *, callback, timeout_ms: int = 0) -> None:  # noqa: ANN001
        asked.append(command)
        if command == P.METADATA:  # answered at once, so that the next one is not held back
            callback({"metadata": md(1, {})}, [], None)
    broker.coordinator.request = request  # type: ignore[method-assign]
    broker.apply_metadata(md(1, {}))
    broker._registered = True  # as after its registration's answer
    endpoint = broker.config.coordinator.pub_endpoint
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    try:
        pub.bind(endpoint)

        def run_until(condition) -> None:  # noqa: ANN001
            deadline = time.monotonic() + DEADLINE_S
            while not condition():
                assert time.monotonic() < deadline, f"asked so far: {asked}"
                broker.reactor.run_once(5)
        run_until(lambda: P.METADATA in asked)
        pub.close()  # the coordinator restarts on its port
        run_until(lambda: broker.sub.counters["disconnects"] >= 1)
        n = asked.count(P.METADATA)
        pub = zmq.Context.instance().socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        run_until(lambda: _bound(pub, endpoint))  # libzmq releases the port on its own thread
        run_until(lambda: asked.count(P.METADATA) > n)
    finally:
        pub.close()
        broker.close()
