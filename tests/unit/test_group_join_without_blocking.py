"""A group consumer's join does not block ``poll`` or ``maintain`` past their timeout.

JOIN_GROUP is answered only when the rebalance completes -- when every member has joined, up to
``rebalance_timeout_ms`` -- and ``poll(0)`` (and the consumer service's ``maintain``, which hosts
one instance per thread and serves that instance's REST and WebSocket requests between calls)
waited for it, up to ``rebalance_timeout_ms`` + 5 s, whatever its timeout: a REST client's
fetch with ``timeout_ms=0`` during a rebalance waited half a minute, and its gateway call timed
out. The join now goes on across polls, as Kafka's poll does since KIP-266: JOIN_GROUP,
SYNC_GROUP and the committed offsets' OFFSET_FETCH are sent one after the other as their answers
arrive, and a poll returns at its timeout with what it has.

A real GroupConsumer and CoordinatorLink on a ManualClock, a fake broker leading t-0, and a
coordinator client that answers on the consumer's next reactor pass and holds JOIN_GROUP until
the test releases it (tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from fabric import protocol as P
from fabric.client.group import CommitFailed, GroupConsumer
from fabric.client.group_link import HeartbeatSettings, HeartbeatThread
from fabric.errors import RemoteError
from tests.unit.builders_group_consumer import T0, HeldWorld

REBALANCE_TIMEOUT_MS = 30_000


def _world(**kw: Any) -> HeldWorld:
    return HeldWorld(P.JOIN_GROUP, rebalance_timeout_ms=REBALANCE_TIMEOUT_MS, enable_auto_commit=False, **kw)


@pytest.fixture
def world() -> Iterator[HeldWorld]:
    w = _world()
    yield w
    w.close()


def test_poll_0_and_maintain_return_at_once_while_the_join_waits_for_the_rebalance(world: HeldWorld) -> None:
    c = world.consumer
    c.subscribe(["t"])
    started = world.clock.now_ms()
    assert c.poll(0) == []
    assert world.clock.now_ms() - started < 1000, "poll(0) waited for the rebalance"
    assert world.client.joins() == 1 and c.generation == -1
    c.maintain()
    assert world.clock.now_ms() - started < 1000, "maintain() waited for the rebalance"
    assert c.poll(500) == [] and world.clock.now_ms() - started < 2000
    assert world.client.joins() == 1, "a second join while the first waits"
    world.client.release()  # the rebalance completes
    records = c.poll(1000)
    assert c.generation == 1 and c.assignment() == [T0]
    assert [r.offset for r in records][:3] == [0, 1, 2]


def test_a_join_that_times_out_is_tried_again_and_polls_still_return_at_their_timeout(world: HeldWorld) -> None:
    c = world.consumer
    c.subscribe(["t"])
    deadline = world.clock.now_ms() + REBALANCE_TIMEOUT_MS + 10_000
    while world.clock.now_ms() < deadline and world.client.joins() < 2:
        before = world.clock.now_ms()
        assert c.poll(1000) == []
        assert world.clock.now_ms() - before <= 1100, "a poll outlasted its timeout"
    assert world.client.joins() == 2, "the join that timed out was not tried again"
    world.client.release()
    c.poll(1000)
    assert c.generation == 1 and c.assignment() == [T0]


def test_the_answer_to_a_join_given_up_changes_nothing(world: HeldWorld) -> None:
    c = world.consumer
    c.subscribe(["t"])
    c.poll(0)
    c.unsubscribe()
    world.client.release()
    world.reactor.run_once(0)  # the join's answer arrives
    assert c.poll(0) == []
    assert c.generation == -1 and c.assignment() == [] and not c.subscription
    assert [cmd for cmd, _ in world.client.calls] == [P.JOIN_GROUP], "the abandoned join went on"


def test_a_join_error_that_retrying_cannot_cure_is_raised_from_poll() -> None:
    w = _world()

    def refusing(command: bytes, header: dict) -> dict:
        raise RemoteError(P.INCONSISTENT_GROUP_PROTOCOL, "the group uses another assignor")
    w.client.answer = refusing
    w.client.holding = False
    try:
        w.consumer.subscribe(["t"])
        with pytest.raises(RemoteError) as e:
            w.consumer.poll(1000)
        assert e.value.code == P.INCONSISTENT_GROUP_PROTOCOL
        with pytest.raises(RemoteError):
            w.consumer.poll(1000)  # and the next poll tries again
        assert w.client.joins() == 2
    finally:
        w.close()


# -- what may change while the join waits ---------------------------------------------------------
class _HeartbeatClient:
    """Stands in for the heartbeat thread's BlockingClient: every call answered {}."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, dict]] = []

    def call(self, command: bytes, header: dict, **_kw: Any) -> tuple[dict, list]:
        self.calls.append((command, dict(header)))
        return {}, []


def _heartbeat(c: GroupConsumer) -> HeartbeatThread:
    return HeartbeatThread(c, HeartbeatSettings("g", "c", 1000, 10_000), "tcp://127.0.0.1:1")


def test_a_join_for_topics_no_longer_subscribed_takes_no_assignment_and_joins_again(world: HeldWorld) -> None:
    """subscribe() to other topics while JOIN_GROUP waits: the generation that join completes
    assigns by the old subscription. Taken, it told on_assign of t-0 and its poll returned t's
    records to an application subscribed to u only (and revoked them at the next poll). Kafka's
    consumer joins again instead ("assignment does not match the subscription")."""
    c = world.consumer
    joined_with: list[list[str]] = []

    def by_subscription(command: bytes, header: dict) -> dict:  # t-0 only to a member subscribed to t
        if command == P.JOIN_GROUP:
            joined_with.append(list(header["topics"]))
        if command == P.SYNC_GROUP:
            return {"generation": 1, "assignment": [list(T0)] if "t" in joined_with[-1] else []}
        return world.coordinator(command, header)
    world.client.answer = by_subscription
    told: list = []
    c.on_assign = lambda tps: told.append(("assigned", tps))
    c.on_revoke = lambda tps: told.append(("revoked", tps))
    c.subscribe(["t"])
    assert c.poll(0) == []
    c.subscribe(["u"])  # while the join for t waits for the rebalance
    world.client.release()
    records = c.poll(1000) + c.poll(1000)
    assert {(r.topic, r.partition) for r in records} == set(), "records of a topic no longer subscribed"
    assert told == [("assigned", [])], f"the application was told of another subscription's partitions: {told}"
    assert joined_with == [["t"], ["u"]] and c.assignment() == []


def test_heartbeats_keep_a_joining_member_in_the_group_while_the_application_is_away(world: HeldWorld) -> None:
    """Between two polls the join waits in the consumer's socket: once the rebalance completes,
    the coordinator drops a member that neither syncs nor heartbeats for its session timeout.
    Heartbeats stopped at the revocation, and the poll that started the join returned: an
    application working longer than the session between two polls (allowed up to
    max_poll_interval_ms) was dropped each time it rejoined -- a rebalance of the whole group
    each time -- and, if its SYNC_GROUP was answered before, took at its next poll the
    partitions the coordinator had handed on meanwhile."""
    c = world.consumer
    c.subscribe(["t"])
    c.poll(0)
    hb = _HeartbeatClient()
    _heartbeat(c).beat(hb)
    assert hb.calls == [], "a heartbeat before the member has an id"
    world.client.release()
    world.reactor.run_once(0)  # the JOIN answer: SYNC_GROUP goes out, the application is away
    world.clock.advance(4000)
    _heartbeat(c).beat(hb)
    assert hb.calls == [(P.HEARTBEAT, {"group": "g", "member_id": "m-1", "generation": 1})]
    c.poll(1000)
    assert c.assignment() == [T0]
    # a rejoin of a member of generation 1: it heartbeats as what it knows while JOIN_GROUP waits
    c.request_rejoin(1, reset_member=False)
    world.client.holding = True
    c.poll(0)
    assert c.assignment() == [] and c._join is not None
    world.clock.advance(4000)
    _heartbeat(c).beat(hb)
    assert hb.calls[-1] == (P.HEARTBEAT, {"group": "g", "member_id": "m-1", "generation": 1})


def test_a_member_that_stops_polling_mid_join_leaves_and_takes_no_assignment() -> None:
    """max_poll_interval_ms also while the join goes on: the heartbeat thread leaves for a member
    whose application stopped polling, and the join under way brings it nothing (its member
    left): the next poll joins again as a new member."""
    w = _world(max_poll_interval_ms=5000)
    try:
        c = w.consumer
        told: list = []
        c.on_assign = told.append
        c.subscribe(["t"])
        c.poll(0)
        w.client.release()
        for _ in range(3):  # JOIN_GROUP, SYNC_GROUP, OFFSET_FETCH answered: the application is away
            w.reactor.run_once(0)
        w.clock.advance(6000)
        hb = _HeartbeatClient()
        _heartbeat(c).beat(hb)
        assert hb.calls == [(P.LEAVE_GROUP, {"group": "g", "member_id": "m-1"})]
        assert c.heartbeat_state() == (False, "", -1)
        w.client.calls.clear()
        c.poll(1000)
        joins = [h for cmd, h in w.client.calls if cmd == P.JOIN_GROUP]
        assert joins and joins[0]["member_id"] == "", "the member that left took the assignment of its join"
        assert told == [[T0]] and c.heartbeat_state() == (True, "m-1", 1)
    finally:
        w.close()


@pytest.mark.parametrize("asynchronous", [False, True])
def test_a_commit_while_a_join_is_under_way_fails_as_a_rebalance(world: HeldWorld, asynchronous: bool) -> None:
    """Between the JOIN_GROUP answer and the assignment the member holds the new generation
    but none of its partitions: a commit then went out in that generation and, for a partition
    it had before, was refused as partition_not_assigned -- an error no application handles
    as "rebalanced". As Kafka's (RebalanceInProgressException, a CommitFailedException) it
    fails as a rebalance, without being sent."""
    seen: list = []
    c = world.consumer
    c.on_commit = lambda offsets, err: seen.append(err)
    c.subscribe(["t"])
    world.client.release()
    c.poll(1000)
    assert c.assignment() == [T0]
    c.request_rejoin(c.generation, reset_member=False)  # a heartbeat answered "rebalance"
    world.client.holding = True
    c.poll(0)  # revokes, and the JOIN_GROUP waits
    sent = len(world.client.calls)
    if asynchronous:
        c.commit({T0: 5}, asynchronous=True)
        assert len(seen) == 1 and isinstance(seen[0], CommitFailed) and seen[0].code == P.REBALANCE_IN_PROGRESS
    else:
        with pytest.raises(CommitFailed) as e:
            c.commit({T0: 5})
        assert e.value.code == P.REBALANCE_IN_PROGRESS
    assert [cmd for cmd, _ in world.client.calls[sent:]] == [], "the commit went out"


def test_joining_says_when_a_join_is_due_or_under_way(world: HeldWorld) -> None:
    """What a host that drives the member between its own requests (the consumer service's
    instance thread) reads to call maintain() often while a join goes on: each of its steps is
    taken up only by poll or maintain, every 100 ms for an idle instance -- a REST client's
    first records took a second where a blocking join took 100 ms."""
    c = world.consumer
    assert not c.joining
    c.subscribe(["t"])
    assert c.joining
    c.poll(0)
    assert c.joining
    world.client.release()
    c.poll(1000)
    assert c.assignment() == [T0] and not c.joining


def test_an_instance_maintains_its_consumer_often_while_it_joins() -> None:
    from types import SimpleNamespace

    from nodes.consumer_instance import JOIN_MAINTAIN_INTERVAL_S, MAINTAIN_INTERVAL_S, Instance, InstanceHost
    inst = Instance(InstanceHost("consumer-1", ["tcp://127.0.0.1:1"], 1000, lambda e: None), "g", "i", {}, 0)
    assert inst._maintain_interval_s() == MAINTAIN_INTERVAL_S  # no consumer yet
    inst.consumer = SimpleNamespace(joining=True)  # type: ignore[assignment]
    assert inst._maintain_interval_s() == JOIN_MAINTAIN_INTERVAL_S < MAINTAIN_INTERVAL_S / 5
    inst.consumer = SimpleNamespace(joining=False)  # type: ignore[assignment]
    assert inst._maintain_interval_s() == MAINTAIN_INTERVAL_S
