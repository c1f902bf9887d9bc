"""What a REST consumer instance (``nodes.consumer_instance.Instance``) auto-commits. The records of a
fetch answer may never reach the REST client (it timed out, the connection dropped, the
gateway worker died mid-answer), so, as with Kafka's REST proxy, whose consumer auto-commits
inside the *next* poll, an auto-commit (the timer in ``maintain()``, a revocation, the idle
expiry's close, a gateway reclaiming a dead process's instance) never covers the latest
answer until the client comes back with its next request. An explicit commit of the
positions, and the client's own delete, cover everything handed out.

The same holds for an assigned instance (no subscription), whose auto-commits go out outside
any generation.

A real Instance with a real GroupConsumer on a ManualClock: a scripted coordinator that keeps
the committed offsets, and one fake broker leading t-0 whose replies land in the consumer's
next reactor pass (tests/unit/builders_group_consumer.py). Driven on the test thread, one
request at a time, as its thread would."""

from __future__ import annotations

from typing import Iterator

import pytest

import nodes.consumer_instance as consumer_mod
from fabric import protocol as P
from fabric.errors import RemoteError
from tests.unit.builders_group_consumer import AUTO_COMMIT_INTERVAL_MS, T0, RestInstance as _Rig


@pytest.fixture
def rig() -> Iterator[_Rig]:
    made = _Rig()
    yield made
    made.instance._close()


def test_an_answer_is_auto_committed_only_once_the_client_comes_back(rig: _Rig) -> None:
    assert rig.fetch() == list(range(0, 10))
    rig.idle(3 * AUTO_COMMIT_INTERVAL_MS)  # the answer may never have reached the client
    assert rig.committed == 0, "records 0..9 were committed while their answer may be lost: the next member skips them"
    assert rig.fetch() == list(range(10, 20))  # the client read 0..9: it asks for more
    rig.idle(3 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 10, "the first answer (0..9) is confirmed by the next request; 10..19 is not"
    rig.request("assignment")  # any request of the client confirms what it got
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 20


def test_an_explicit_commit_of_the_positions_covers_the_latest_answer(rig: _Rig) -> None:
    rig.fetch()
    rig.request("commit", offsets=None)
    assert rig.committed == 10


@pytest.mark.parametrize("end", ["idle-expiry", "reclaimed-by-the-gateway"])
def test_closing_an_instance_the_client_left_does_not_commit_its_latest_answer(rig: _Rig, end: str) -> None:
    rig.fetch()
    rig.fetch()
    if end == "idle-expiry":
        rig.instance._close()  # the service's idle expiry stops the instance: its thread closes it
    else:  # a gateway process replaced the one that was answering: it deletes that one's instances
        rig.request("delete", owner="gateway:gw-1:old-process")
        rig.instance._close()
    assert rig.committed == 10, "the close committed the answer 10..19, which may have died with its HTTP answer"


def test_the_clients_delete_commits_the_positions(rig: _Rig) -> None:
    rig.fetch()
    rig.request("delete")
    rig.instance._close()  # the thread closes the instance after answering the delete
    assert rig.committed == 10


def test_a_rebalance_between_requests_does_not_commit_the_latest_answer(rig: _Rig) -> None:
    rig.fetch()
    rig.fetch()
    rig.instance.consumer.request_rejoin(1, reset_member=False)  # a heartbeat answered "rebalance"
    rig.idle(100)  # maintain() rejoins: the revocation commits, and the same partition comes back
    assert rig.committed == 10
    assert rig.fetch() == list(range(10, 20)), "the new assignment starts at the committed offset: again, not skipped"


def test_records_given_back_for_the_byte_limit_stay_uncommitted_and_come_again(rig: _Rig) -> None:
    assert rig.fetch(max_bytes=1) == [0]  # one record fits; 1..9 are given back (a seek to 1)
    rig.request("assignment")
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 1
    assert rig.fetch() == list(range(1, 11))
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 1


def test_a_seek_back_under_an_answer_commits_nothing_past_it(rig: _Rig) -> None:
    rig.fetch()
    rig.fetch()
    rig.request("seek", to="offsets", offsets=[["t", 0, 5]])  # the client reads 5.. again
    assert rig.fetch() == list(range(5, 15))
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed <= 5, f"committed {rig.committed}: past the first record of the answer 5..14"


def test_a_fetch_that_gives_its_records_back_leaves_nothing_held(rig: _Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A poll that outlasted its caller: no records go out, the position goes back, and the
    records before it (confirmed by this very request) are committed."""
    rig.fetch()
    waited_ms = iter([0.0, 10_000.0])  # not at the start of the fetch; after its poll, long
    monkeypatch.setattr(consumer_mod, "_waited_ms", lambda h: next(waited_ms))
    with pytest.raises(RemoteError) as e:
        rig.fetch(budget_ms=1000, _received=0.0)
    assert e.value.code == P.REQUEST_TIMED_OUT
    monkeypatch.undo()
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 10
    assert rig.fetch() == list(range(10, 20))



def test_an_assigned_instance_commits_its_positions_again_after_a_commit_back(rig: _Rig) -> None:
    """An assigned instance (no subscription) commits outside any generation, which may move the
    group's offset back. Once the records after it are read again, a commit of the positions must
    be sent: they equal what was committed before, which is no longer what the group holds."""
    rig.request("subscribe", topics=[])
    rig.request("assign", partitions=[["t", 0]])
    assert rig.fetch(max_records=20) == list(range(0, 20))
    rig.request("commit", offsets=None)
    assert rig.committed == 20
    rig.request("commit", offsets=[["t", 0, 5]])  # the client will process 5.. again
    rig.request("seek", to="offsets", offsets=[["t", 0, 5]])
    assert rig.committed == 5
    assert rig.fetch(max_records=15) == list(range(5, 20))
    rig.request("commit", offsets=None)
    assert rig.committed == 20, "the commit of the positions sent nothing: 5..19 come again after every restart"


# -- an assigned instance: auto-commits outside any generation, held back the same way ------------
def _assigned(rig: _Rig) -> _Rig:
    """The rig's instance, out of the group (its member left) and assigned t-0."""
    rig.request("subscribe", topics=[])
    rig.request("assign", partitions=[["t", 0]])
    assert not rig.coordinator.members
    return rig


def test_an_assigned_instance_auto_commits_an_answer_once_the_client_comes_back(rig: _Rig) -> None:
    _assigned(rig)
    assert rig.fetch() == list(range(0, 10))
    rig.idle(3 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 0, "records 0..9 were committed while their answer may be lost"
    assert rig.fetch() == list(range(10, 20))
    rig.idle(3 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 10, "an assigned instance with auto-commit on committed nothing"
    rig.request("assignment")
    rig.idle(2 * AUTO_COMMIT_INTERVAL_MS)
    assert rig.committed == 20


def test_an_assigned_instance_auto_commits_inside_the_clients_next_fetch(rig: _Rig) -> None:
    _assigned(rig)
    rig.fetch()
    rig.reactor.clock.advance(AUTO_COMMIT_INTERVAL_MS)  # no maintain() in between
    rig.fetch()
    assert rig.committed == 10


@pytest.mark.parametrize("end", ["idle-expiry", "reclaimed-by-the-gateway"])
def test_closing_an_assigned_instance_the_client_left_does_not_commit_its_latest_answer(rig: _Rig, end: str) -> None:
    _assigned(rig)
    rig.fetch()
    rig.fetch()
    if end == "reclaimed-by-the-gateway":
        rig.request("delete", owner="gateway:gw-1:old-process")
    rig.instance._close()
    assert rig.committed == 10, "the close left 0..9 uncommitted, or committed the answer 10..19"


def test_the_clients_delete_of_an_assigned_instance_commits_the_positions(rig: _Rig) -> None:
    _assigned(rig)
    rig.fetch()
    rig.fetch()
    rig.request("delete")
    rig.instance._close()
    assert rig.committed == 20


# -- subscribed or assigned: one at a time, and nothing dropped uncommitted -----------------------
def test_subscribing_an_assigned_instance_is_refused_and_its_positions_stay(rig: _Rig) -> None:
    _assigned(rig)
    rig.fetch()
    with pytest.raises(RemoteError) as e:
        rig.request("subscribe", topics=["t"])
    assert e.value.code == P.SUBSCRIPTION_CONFLICT and "unsubscribe" in e.value.message
    assert rig.request("assignment")["positions"] == [["t", 0, 10]]
    assert rig.fetch() == list(range(10, 20)), "the subscription dropped the assigned position"


def test_assigning_a_subscribed_instance_is_refused_as_a_conflict(rig: _Rig) -> None:
    rig.fetch()
    with pytest.raises(RemoteError) as e:
        rig.request("assign", partitions=[["t", 0]])
    assert e.value.code == P.SUBSCRIPTION_CONFLICT


def test_unsubscribing_an_assigned_instance_commits_its_positions(rig: _Rig) -> None:
    _assigned(rig)
    rig.fetch()
    rig.request("subscribe", topics=[])  # the request confirms the answer 0..9
    assert rig.committed == 10
    rig.request("subscribe", topics=["t"])
    assert rig.fetch() == list(range(10, 20))


def test_reassigning_an_instance_commits_the_partitions_it_drops(rig: _Rig) -> None:
    _assigned(rig)
    rig.fetch()
    rig.request("assign", partitions=[["t", 1]])
    assert rig.committed == 10, "the position of t-0, no longer assigned, was lost uncommitted"


def test_an_assign_that_cannot_look_up_the_committed_offsets_leaves_the_instance_as_it_was() -> None:
    """Without auto-commit nothing else moves a partition without a position to the group's
    committed offset: a half-done assign would start it at auto_offset_reset (latest: past
    the records after the commit)."""
    rig = _Rig(enable_auto_commit=False, auto_offset_reset="latest")
    try:
        rig.request("subscribe", topics=[])
        rig.coordinator.committed[T0] = 30
        answer = rig.link.answer

        def coordinator_moving(command: bytes, header: dict) -> dict:
            if command == P.OFFSET_FETCH:
                raise RemoteError(P.NOT_COORDINATOR, "the coordinator moved")
            return answer(command, header)
        rig.link.answer = coordinator_moving
        with pytest.raises(RemoteError):
            rig.request("assign", partitions=[["t", 0]])
        rig.link.answer = answer
        assert rig.request("assignment")["partitions"] == [], "a failed assign left t-0 assigned without a position"
        rig.request("assign", partitions=[["t", 0]])  # the client tries again
        assert rig.fetch() == list(range(30, 40))
    finally:
        rig.instance._close()


def test_an_assign_looks_up_every_new_partitions_committed_offset_in_one_request() -> None:
    """Up to 10,000 partitions may be assigned at once: one lookup each (each retried for up
    to 10 s) outlasted the gateway's call while the assignment went on. One OFFSET_FETCH for
    all, as Kafka's committed(Set<TopicPartition>)."""
    rig = _Rig(enable_auto_commit=False)
    try:
        rig.request("subscribe", topics=[])
        parts = [("t", p) for p in range(50)]
        rig.coordinator.committed.update({tp: 7 * p for tp in parts for p in [tp[1]] if p % 2})
        before = len(rig.link.calls)
        rig.request("assign", partitions=[list(tp) for tp in parts])
        fetches = [h for command, h in rig.link.calls[before:] if command == P.OFFSET_FETCH]
        assert len(fetches) == 1 and sorted(map(tuple, fetches[0]["partitions"])) == parts, fetches
        positions = {(t, p): o for t, p, o in rig.request("assignment")["positions"]}
        assert positions == {tp: 7 * tp[1] if tp[1] % 2 else 0 for tp in parts}  # the fake answers 0 for none
        before = len(rig.link.calls)
        answer = rig.request("committed", partitions=[list(tp) for tp in parts])
        assert len([c for c, _ in rig.link.calls[before:] if c == P.OFFSET_FETCH]) == 1
        assert {(t, p): o for t, p, o in answer["offsets"]} == {tp: 7 * tp[1] if tp[1] % 2 else 0 for tp in parts}
    finally:
        rig.instance._close()


@pytest.mark.parametrize("reset, after", [("earliest", 2), ("latest", 1000)])
def test_an_assigned_partition_with_nothing_committed_starts_at_the_reset_without_a_second_lookup(
        reset: str, after: int) -> None:
    """The assign looked the committed offsets up already: a partition with none starts at
    auto_offset_reset at once, not after the consumer's own lookup asked the coordinator again
    (one more round trip, and one more client fetch, before its first records)."""
    rig = _Rig(enable_auto_commit=False, auto_offset_reset=reset)
    try:
        rig.request("subscribe", topics=[])
        rig.coordinator.uncommitted = -1
        before = len(rig.link.calls)
        rig.request("assign", partitions=[["t", 0]])
        assert rig.fetch(max_records=2) == ([0, 1] if reset == "earliest" else [])  # the log ends at 1000
        fetches = [h for command, h in rig.link.calls[before:] if command == P.OFFSET_FETCH]
        assert len(fetches) == 1, "the committed offset was looked up twice"
        assert dict(((t, p), o) for t, p, o in rig.request("assignment")["positions"])[T0] == after
    finally:
        rig.instance._close()
