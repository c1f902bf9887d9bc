"""A subscriber misses what a PUB published before its subscription reached it (the zguide's
slow joiner): a delta published between a broker's registration and the moment its metadata
subscription took effect -- a topic created just after the cluster started -- stayed unknown
to that replica until the coordinator's next version push, up to a second, and every
``acks=all`` produce to the topic waited as long. The coordinator's PUB is an XPUB that answers
each subscription with the version at once (the broker's gap check then asks for a snapshot:
the Clone pattern), and the broker's snapshot requests are never lost on the way: one asked
for while another is in flight follows it, a refused one is asked for again (a timed-out one
at the next version push), and a push dropped before registering brings one right after.

The broker tests: a real ``Broker`` + ``Coordinator`` with requests and pushes delivered by hand
(``Loopback``). The coordinator test: a real XPUB on a ManualClock (its once-a-second version
push never fires) and a real subscriber.
"""

from __future__ import annotations

import time
from pathlib import Path

import zmq

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.config import load_config
from fabric.errors import RequestQueueFullError, RequestTimeout
from fabric.reactor import Reactor
from fabric.zmtp_sub import ZmtpSubscriber
from nodes.broker.metadata_intake import METADATA_RETRY_MS
from nodes.coordinator.node import Coordinator
from nodes.coordinator.store import PartitionState, TopicState
from tests.harness import make_config
from tests.unit.builders_broker import new_broker

DEADLINE_S = 10.0


def _run_until(condition, *reactors: Reactor, poll_ms: int = 5, what: object = "condition not reached") -> None:  # noqa: ANN001
    """Run the reactors a pass each until ``condition()``, within DEADLINE_S."""
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, what() if callable(what) else what
        for reactor in reactors:
            reactor.run_once(poll_ms)


def _create_topic(coord, name: str) -> None:  # noqa: ANN001
    """A topic of which broker 1 is a follower, committed: its delta is published."""
    coord.state.topics[name] = TopicState([PartitionState(2, 0, [2, 1, 3], [2, 1, 3])], {})
    coord.commit()


def _commands(loop) -> list[bytes]:  # noqa: ANN001
    return [cmd for cmd, _, _ in loop.requests]


def _registered(broker, loop) -> None:  # noqa: ANN001
    broker._register()
    loop.run_until_idle()
    assert broker._registered


def test_the_version_at_a_subscription_makes_up_for_a_delta_published_before_it(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    _registered(broker, loop)
    _create_topic(coord, "early")
    assert loop.take_pushes(), "the creation was published"  # and lost: not subscribed yet
    coord._on_subscription([b"\x01" + P.TOPIC_METADATA])     # the subscription reaches the XPUB
    coord.reactor.run_once(0)                                # the version goes out after the pass
    for frames in loop.take_pushes():
        loop.push(frames)
    assert _commands(loop) == [P.METADATA], "the version at the subscription did not bring a snapshot"
    loop.run_until_idle()
    assert broker.partitions[("early", 0)].leader_id == 2


def test_only_a_subscription_that_takes_in_the_metadata_topic_is_answered(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    for frames, answered in (([b"\x01" + P.TOPIC_HEARTBEAT], False), ([b"\x00" + P.TOPIC_METADATA], False),
                             ([b"\x01"], True), ([b"\x01" + P.TOPIC_METADATA], True), ([b"\x01", b"x"], False)):
        coord._on_subscription(frames)
        coord.reactor.run_once(0)
        kinds = [wire.decode_pub(f, P.PUB_METADATA_VERSION).kind for f in loop.take_pushes()]
        assert kinds == ([P.PUB_METADATA_VERSION] if answered else []), frames


def test_subscriptions_read_in_one_pass_get_one_version_after_it(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    for _ in range(5):  # five brokers reconnecting after a restart
        coord._on_subscription([b"\x01" + P.TOPIC_METADATA])
    assert loop.take_pushes() == []
    coord.reactor.run_once(0)
    assert len(loop.take_pushes()) == 1
    coord._on_subscription([b"\x01" + P.TOPIC_METADATA])  # a later one is answered again
    coord.reactor.run_once(0)
    assert len(loop.take_pushes()) == 1


def test_a_push_read_before_the_registration_answer_brings_a_snapshot_after_it(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    broker._register()
    answers = loop.serve(P.BROKER_REGISTER)  # the coordinator answers at its current version...
    _create_topic(coord, "early")              # ...then publishes a change,
    for frames in loop.take_pushes():          # which the broker reads before the answer
        loop.push(frames)
    loop.deliver(answers)
    assert broker._registered and ("early", 0) not in broker.partitions
    assert _commands(loop) == [P.METADATA], "the dropped push was not made up"
    loop.run_until_idle()
    assert broker.partitions[("early", 0)].leader_id == 2


def test_a_push_read_before_the_registration_answer_and_no_newer_costs_no_snapshot(nodes) -> None:  # noqa: ANN001
    """The version the coordinator sends at a new subscription usually comes before the
    registration answer, at the same version: no second snapshot for nothing at every start."""
    broker, coord, loop = nodes
    broker._register()
    coord._publish_metadata()                  # the version at our subscription...
    for frames in loop.take_pushes():          # ...read before the answer
        loop.push(frames)
    loop.deliver(loop.serve(P.BROKER_REGISTER))
    assert broker._registered and _commands(loop) == []


def test_pushes_dropped_while_registering_again_are_made_up(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    _registered(broker, loop)
    broker._reregister_as_new_incarnation()
    broker.reactor.run_once(0)                 # the registration goes out
    answers = loop.serve(P.BROKER_REGISTER)
    _create_topic(coord, "raced")              # published after the answer was made...
    for frames in loop.take_pushes():          # ...and read by the broker before it
        loop.push(frames)
    loop.deliver(answers)
    loop.run_until_idle()
    assert ("raced", 0) in broker.partitions, f"broker at {broker.metadata.version}, coordinator at {coord.state.version}"


def test_a_snapshot_asked_for_while_one_is_in_flight_follows_it(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    _registered(broker, loop)
    broker._refresh_metadata()                  # one in flight
    answers = loop.serve(P.METADATA)            # answered at version V...
    _create_topic(coord, "later")               # ...then V+1 is published and lost
    loop.take_pushes()
    broker._refresh_metadata()                  # asked for again (the version push showed the gap)
    assert _commands(loop) == []                # one at a time
    loop.deliver(answers)                       # the answer at V arrives
    assert _commands(loop) == [P.METADATA], "the second ask was swallowed by the first"
    loop.run_until_idle()
    assert ("later", 0) in broker.partitions


def _fail_the_request(loop, err: Exception) -> None:  # noqa: ANN001
    (_, _, callback), = loop.requests
    loop.requests.clear()
    callback(None, [], err)


def test_a_refused_snapshot_request_is_made_again_backing_off(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    _registered(broker, loop)
    _create_topic(coord, "later")
    loop.take_pushes()
    broker._refresh_metadata()
    delays = []
    for attempt in range(5):
        _fail_the_request(loop, RequestQueueFullError("send queue to the coordinator is full"))
        assert _commands(loop) == []
        retry = broker._refresh_retry
        delays.append(retry.deadline_ms - broker.clock.now_ms())
        if attempt == 0:  # the reactor runs the first retry when it is due; the later ones are run at once
            broker.clock.advance(delays[-1] - 1)
            broker.reactor.run_once(0)
            assert _commands(loop) == [], "made again before its delay"
            broker.clock.advance(1)
            broker.reactor.run_once(0)
        else:
            run = retry.fn  # a cancelled timer lets go of its callback
            retry.cancel()
            run()
        assert _commands(loop) == [P.METADATA]
    assert [round(d, -2) for d in delays] == [200, 400, 800, 1600, 2000]
    loop.run_until_idle()
    assert ("later", 0) in broker.partitions
    assert broker._refresh_backoff_ms == METADATA_RETRY_MS  # an answer starts the backoff over


def test_a_timed_out_snapshot_request_waits_for_the_next_version_push(nodes) -> None:  # noqa: ANN001
    """The coordinator is away: requests made meanwhile would only queue up on the connection;
    its version push (every second, and at once when the subscription comes back) asks again."""
    broker, coord, loop = nodes
    _registered(broker, loop)
    _create_topic(coord, "later")
    loop.take_pushes()
    broker._refresh_metadata()
    _fail_the_request(loop, RequestTimeout())
    assert broker._refresh_retry is None and not broker._refresh_in_flight
    coord._publish_metadata()  # the version push shows the gap
    for frames in loop.take_pushes():
        loop.push(frames)
    assert _commands(loop) == [P.METADATA]
    loop.run_until_idle()
    assert ("later", 0) in broker.partitions


def test_a_request_that_goes_out_replaces_the_retry_due(nodes) -> None:  # noqa: ANN001
    broker, coord, loop = nodes
    _registered(broker, loop)
    broker._refresh_metadata()
    _fail_the_request(loop, RequestQueueFullError("full"))
    retry = broker._refresh_retry
    broker._refresh_metadata()  # a version push showed a gap before the retry was due
    assert retry.cancelled and broker._refresh_retry is None
    loop.run_until_idle()
    assert _commands(loop) == []


def test_the_coordinators_xpub_sends_its_version_to_each_new_subscriber_at_once(tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, 3, engine="memory"))
    coord = Coordinator(config, "coordinator", clock=ManualClock(start_ms=1_000_000))  # no timer fires
    reactor = Reactor()
    versions: list[list[bytes]] = []
    subs = []
    try:
        for _ in range(2):  # a second subscriber to the same topic is answered too (XPUB_VERBOSE)
            got: list[list[bytes]] = []
            sub = ZmtpSubscriber(reactor, got.append)
            sub.subscribe(P.TOPIC_METADATA)
            sub.connect(config.coordinator.pub_endpoint)
            subs.append(sub)
            _run_until(lambda: got, coord.reactor, reactor, what="no version sent to the new subscriber")
            versions.append(got[0])
        for frames in versions:
            msg = wire.decode_pub(frames, P.PUB_METADATA_VERSION)
            assert msg.header["version"] == coord.state.version and msg.header["state_id"] == coord.state_id
    finally:
        for sub in subs:
            sub.close()
        coord.close()


def test_the_brokers_metadata_subscription_runs_on_its_reactor_and_shows_in_stats(tmp_path: Path) -> None:
    broker = new_broker(tmp_path)
    endpoint = broker.config.coordinator.pub_endpoint
    pub = zmq.Context.instance().socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    pub.bind(endpoint)
    try:
        counts = lambda: broker.stats()["metadata_stream"]  # noqa: E731
        _run_until(lambda: all(c.connected for c in broker.sub._connections.values()), broker.reactor, what=counts)
        pub.close()  # the coordinator goes away
        _run_until(lambda: counts().get("disconnects", 0) >= 1, broker.reactor, what=counts)
    finally:
        pub.close()
        broker.close()
