"""The group consumer (``fabric.client.group.GroupConsumer``), built for real with a scripted
coordinator link and no heartbeat thread (tests/unit/fakes.py): no endless rejoin loop inside
``poll``, a join with the member id it was handed (KIP-394), a retried unstable offset fetch,
``max_poll_interval_ms`` (the heartbeat thread leaves for a member that stopped polling), and
the settings checked at construction. Its sockets only ever point at a closed loopback port."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fabric import protocol as P
from fabric.client.group import GroupConsumer
from fabric.client.group_link import CoordinatorLink, HeartbeatSettings, HeartbeatThread
from fabric.clock import ManualClock
from fabric.errors import CodedError, FabricError, RemoteError, RequestTimeout
from nodes.local_cluster import wait_until
from tests.unit.fakes import FakeReactor, NoHeartbeat, RecordingClient, ScriptedCoordinatorLink

NOWHERE = "127.0.0.1:1"


@pytest.fixture
def make_member() -> Iterator[Callable[..., tuple[GroupConsumer, ScriptedCoordinatorLink]]]:
    made: list[GroupConsumer] = []

    def make(answer: Callable[[bytes, dict], dict], clock: Any = None, **kw: Any) -> tuple[GroupConsumer, ScriptedCoordinatorLink]:
        link = ScriptedCoordinatorLink(answer)
        c = GroupConsumer(NOWHERE, group_id="g", coordinator=link, heartbeat_factory=NoHeartbeat.make, clock=clock, **kw)
        made.append(c)
        return c, link
    yield make
    for c in made:
        c.close()


def _refusing(error: RemoteError) -> Callable[[bytes, dict], dict]:
    calls = [0]

    def answer(command: bytes, header: dict) -> dict:
        calls[0] += 1
        time.sleep(0.005)  # a real call takes time; the reactor has no socket to wait on here
        if calls[0] > 200:
            raise RuntimeError("still rejoining after 200 coordinator calls")
        raise error
    return answer


def _group(member_id: str = "m-2", generation: int = 4) -> Callable[[bytes, dict], dict]:
    """A coordinator that hands out ``member_id`` first (KIP-394), then takes the join."""
    def answer(command: bytes, header: dict) -> dict:
        if command == P.JOIN_GROUP:
            if not header["member_id"]:
                return {"group": "g", "member_id": member_id, "member_id_required": True}
            return {"member_id": header["member_id"], "generation": generation}
        if command == P.SYNC_GROUP:
            return {"generation": generation, "assignment": []}
        return {"offsets": []}
    return answer


def test_poll_raises_a_join_error_that_retrying_cannot_cure(make_member) -> None:  # noqa: ANN001
    c, link = make_member(_refusing(RemoteError(P.INCONSISTENT_GROUP_PROTOCOL, "group uses range")))
    c.subscribe(["t"])
    with pytest.raises(RemoteError) as e:
        c.poll(100)
    assert e.value.code == P.INCONSISTENT_GROUP_PROTOCOL and link.commands() == [P.JOIN_GROUP]
    with pytest.raises(RemoteError):
        c.poll(100)  # the next poll tries again
    assert link.commands() == [P.JOIN_GROUP] * 2


def test_poll_returns_at_its_timeout_while_the_coordinator_is_away(make_member) -> None:  # noqa: ANN001
    c, link = make_member(_refusing(RequestTimeout("no reply")))
    c.subscribe(["t"])
    started = time.monotonic()
    assert c.poll(300) == []
    assert time.monotonic() - started < 5 and link.calls
    # a hosted instance: maintain never waits, and tries again once the backoff has passed
    # (one attempt at most per call: then the instance's requests are served)
    before = len(link.calls)
    started = time.monotonic()

    def tried_again() -> bool:
        c.maintain()
        assert len(link.calls) <= before + 1, "two attempts in one maintain"
        return len(link.calls) == before + 1
    wait_until(tried_again, 5, interval_s=0.01, what="maintain to try the join again")
    assert time.monotonic() - started < 5


def test_group_consumer_joins_again_with_the_member_id_it_was_handed(make_member) -> None:  # noqa: ANN001
    c, link = make_member(_group("m-7", 1), clock=ManualClock(1000), enable_auto_commit=False)
    c.subscribe(["t"])
    c.poll(0)
    joins = [h for cmd, h in link.calls if cmd == P.JOIN_GROUP]
    assert [j["member_id"] for j in joins] == ["", "m-7"] and joins[0]["require_member_id"]
    assert c.member_id == "m-7" and c.generation == 1


def test_member_that_stops_polling_leaves_the_group_and_rejoins_on_the_next_poll(make_member) -> None:  # noqa: ANN001
    clock = ManualClock(1000)
    c, link = make_member(_group("m-2", 4), clock=clock, max_poll_interval_ms=5000, enable_auto_commit=False)
    c.subscribe(["t"])
    c.poll(0)
    assert c.heartbeat_state() == (True, "m-2", 4)
    beat = HeartbeatThread(c, HeartbeatSettings("g", "loom-consumer", 1000, 10_000), "tcp://" + NOWHERE)
    hb = _HeartbeatClient()
    clock.advance(4000)
    beat.beat(hb)
    assert [cmd for cmd, _ in hb.calls] == [P.HEARTBEAT]
    clock.advance(1500)  # poll() not called for 5.5 s
    beat.beat(hb)
    assert hb.calls[-1] == (P.LEAVE_GROUP, {"group": "g", "member_id": "m-2"})
    assert c.heartbeat_state() == (False, "", -1)
    beat.beat(hb)
    assert len(hb.calls) == 2, "a member that left kept heartbeating"
    link.calls.clear()
    c.poll(0)
    assert link.calls[0][0] == P.JOIN_GROUP and link.calls[0][1]["member_id"] == ""
    assert c.member_id == "m-2" and c.heartbeat_state()[0]


class _HeartbeatClient:
    """Stands in for the heartbeat thread's BlockingClient: every call answered {}."""

    def __init__(self) -> None:
        self.calls: list[tuple[bytes, dict]] = []

    def call(self, command: bytes, header: dict, **_kw: Any) -> tuple[dict, list]:
        self.calls.append((command, header))
        return {}, []


def test_a_heartbeat_answered_with_a_rejoin_error_flags_a_rejoin(make_member) -> None:  # noqa: ANN001
    c, _ = make_member(_group("m-2", 4), clock=ManualClock(1000), enable_auto_commit=False)
    c.subscribe(["t"])
    c.poll(0)

    class Rebalancing(_HeartbeatClient):
        def call(self, command: bytes, header: dict, **_kw: Any) -> tuple[dict, list]:
            raise RemoteError(P.REBALANCE_IN_PROGRESS, "a member joined")
    HeartbeatThread(c, HeartbeatSettings("g", "c", 1000, 10_000), "tcp://" + NOWHERE).beat(Rebalancing())
    assert c.heartbeat_state() == (False, "m-2", 4)


@pytest.mark.parametrize("kw", [dict(session_timeout_ms=10_000, heartbeat_interval_ms=-1),
                                dict(session_timeout_ms=10_000, heartbeat_interval_ms=10_000),
                                dict(max_poll_interval_ms=0)])
def test_settings_that_would_spin_or_expire_the_member_are_refused(kw: dict) -> None:
    with pytest.raises(FabricError):
        GroupConsumer(NOWHERE, group_id="g", **kw)


# -- the coordinator link ----------------------------------------------------------------------
def test_the_link_retries_a_retriable_error_such_as_an_unstable_offset_fetch() -> None:
    reactor = FakeReactor(ManualClock(1000))
    client = _AnsweringClient([RemoteError(P.UNSTABLE_OFFSET_COMMIT, "a commit is in flight"), {"offsets": [["t", 0, 9, ""]]}])
    link = CoordinatorLink(reactor, reactor.clock, lambda: client)
    assert link.call(P.OFFSET_FETCH, {"group": "g"}) == {"offsets": [["t", 0, 9, ""]]}
    assert [c for c, *_ in client.sent] == [P.OFFSET_FETCH] * 2


def test_the_link_gives_up_after_retry_ms_and_not_on_a_final_error() -> None:
    reactor = FakeReactor(ManualClock(1000))
    client = _AnsweringClient([RemoteError(P.NOT_COORDINATOR, "loading")] * 100)
    link = CoordinatorLink(reactor, reactor.clock, lambda: client)
    with pytest.raises(RemoteError) as e:
        link.call(P.JOIN_GROUP, {}, retry_ms=1000)
    assert e.value.code == P.NOT_COORDINATOR and 2 <= len(client.sent) <= 7
    final = _AnsweringClient([RemoteError(P.INVALID_CONFIG, "no")])
    with pytest.raises(RemoteError):
        CoordinatorLink(reactor, reactor.clock, lambda: final).call(P.JOIN_GROUP, {})
    assert len(final.sent) == 1


class _AnsweringClient(RecordingClient):
    """A RecordingClient that answers each request at once with the next scripted reply."""

    def __init__(self, replies: list) -> None:
        super().__init__()
        self.replies = list(replies)

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable, timeout_ms: int = 0) -> None:
        super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            self.answer_last(command, None, err=reply)
        else:
            self.answer_last(command, reply)


def test_poll_0_does_not_wait_for_metadata_that_names_the_coordinator() -> None:
    """No broker answers (the cluster is down, or not yet up): the metadata names no
    coordinator. poll(0) looked for it, up to 10 s, before its first JOIN_GROUP -- and the
    consumer service's maintain() with it, every call. It asks for metadata and returns; a
    blocking call (committed()) still waits its budget for the coordinator."""
    c = GroupConsumer(NOWHERE, group_id="g", heartbeat_factory=NoHeartbeat.make, enable_auto_commit=False)
    try:
        c.subscribe(["t"])
        started = time.monotonic()
        assert c.poll(0) == []
        c.maintain()
        assert c.poll(0) == []
        took_s = time.monotonic() - started
        assert took_s < 2, f"poll(0) and maintain() took {took_s:.1f} s without a coordinator"
    finally:
        c.close()


def test_an_offset_fetch_answer_without_offsets_is_a_join_error_not_a_dead_consumer(make_member) -> None:  # noqa: ANN001
    """An OFFSET_FETCH answer that cannot be read (a coordinator's bug) raised KeyError inside the
    reply's callback: the join hung (or the consumer's reactor stopped). It is a malformed answer,
    raised by poll like any error retrying cannot cure, and the next poll joins again."""
    answers = [{"newer_than_reading": {}}, {"offsets": []}]

    def answer(command: bytes, header: dict) -> dict:
        if command == P.OFFSET_FETCH:
            return answers.pop(0)
        return _group()(command, header)
    c, link = make_member(answer)
    c.subscribe(["t"])
    with pytest.raises(CodedError) as e:
        c.poll(100)
    assert e.value.code == P.MALFORMED_REQUEST
    c.poll(100)
    assert c.assignment() == [] and not answers and link.commands().count(P.OFFSET_FETCH) == 2
