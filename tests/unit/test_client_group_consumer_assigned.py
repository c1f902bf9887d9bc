"""A group consumer in assign mode (``assign()``, no subscription: no member of the group, but
its group id holds the committed offsets) auto-commits as Kafka's does with
``enable_auto_commit``: every ``auto_commit_interval_ms`` inside ``poll`` and ``maintain``,
and at ``close``. Its commits go out outside any generation (generation -1, no member), which
the coordinator takes only while the group has no members; a refusal is logged once and left
to the next interval, never raised out of poll, maintain or close.

A real GroupConsumer on a ManualClock, a fake broker leading t-0 and a scripted coordinator
(tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fabric import protocol as P
from fabric.client.group import GroupConsumer
from fabric.client.group_commit import COMMIT_TIMEOUT_MS
from fabric.errors import RequestTimeout, SubscriptionConflictError
from tests.unit.builders_group_consumer import (T0, BrokerRepliesReactor, OffsetsCoordinator, OnePartitionBroker,
                                                consumer_config)
from tests.unit.fakes import ScriptedCoordinatorLink

AUTO_COMMIT_INTERVAL_MS = 1000


class _Assigned:
    """A GroupConsumer of group g assigned t-0, and what it talks to."""

    def __init__(self, start: int | None = 0, assign: bool = True, **kw: Any) -> None:
        """``start``: where t-0 is seeked to (None: not at all); ``assign``: False leaves the
        consumer with neither an assignment nor a subscription."""
        self.broker = OnePartitionBroker()
        self.reactor = BrokerRepliesReactor(self.broker)
        self.coordinator = OffsetsCoordinator()
        self.link = ScriptedCoordinatorLink(self.coordinator)
        self.consumer = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
            self.broker, self.reactor, self.link, auto_commit_interval_ms=AUTO_COMMIT_INTERVAL_MS, **kw))
        if not assign:
            return
        self.consumer.assign([T0])
        if start is not None:
            self.consumer.seek(T0, start)

    def poll(self, max_records: int = 10) -> list[int]:
        return [r.offset for r in self.consumer.poll(1000, max_records=max_records)]

    def commits(self) -> list[dict]:
        return [h for command, h in self.link.calls if command == P.OFFSET_COMMIT]


@pytest.fixture
def assigned() -> Iterator[Callable[..., _Assigned]]:
    made: list[_Assigned] = []

    def make(**kw: Any) -> _Assigned:
        made.append(_Assigned(**kw))
        return made[-1]
    yield make
    for a in made:
        a.consumer.close()


def test_poll_auto_commits_the_positions_once_the_interval_passes(assigned) -> None:  # noqa: ANN001
    a = assigned()
    assert a.poll() == list(range(0, 10))
    assert a.commits() == []
    a.reactor.clock.advance(AUTO_COMMIT_INTERVAL_MS)
    assert a.poll() == list(range(10, 20))
    assert a.commits() == [{"group": "g", "member_id": "", "generation": -1, "offsets": [["t", 0, 10, "", 1]],
                           "topic_ids": {"t": "id-t"}}]
    assert a.coordinator.committed[T0] == 10


def test_maintain_auto_commits_and_never_an_offset_that_did_not_move(assigned) -> None:  # noqa: ANN001
    a = assigned()
    a.poll()
    for _ in range(3):
        a.reactor.clock.advance(AUTO_COMMIT_INTERVAL_MS)
        a.consumer.maintain()
    assert [h["offsets"] for h in a.commits()] == [[["t", 0, 10, "", 1]]]


def test_close_commits_the_positions(assigned) -> None:  # noqa: ANN001
    a = assigned()
    a.poll()
    a.consumer.close()  # before the interval: the close itself commits
    assert a.coordinator.committed[T0] == 10


def test_close_commits_no_further_than_the_hosts_bounds(assigned) -> None:  # noqa: ANN001
    a = assigned()
    a.poll()
    a.consumer.auto_commit_bounds = {T0: 4}  # records 4.. went to a host's client, unconfirmed
    a.reactor.clock.advance(AUTO_COMMIT_INTERVAL_MS)
    a.consumer.maintain()
    assert a.coordinator.committed[T0] == 4
    a.consumer.close()
    assert len(a.commits()) == 1 and a.coordinator.committed[T0] == 4


def test_without_auto_commit_nothing_is_committed(assigned) -> None:  # noqa: ANN001
    a = assigned(enable_auto_commit=False)
    a.poll()
    a.reactor.clock.advance(3 * AUTO_COMMIT_INTERVAL_MS)
    a.poll()
    a.consumer.maintain()
    a.consumer.close()
    assert a.commits() == []


def test_a_refusal_is_logged_once_and_tried_again_only_at_the_next_interval(
        assigned, caplog: pytest.LogCaptureFixture) -> None:  # noqa: ANN001
    a = assigned()
    a.coordinator.members.add("m-9")  # someone else's live group: it alone commits
    caplog.set_level(logging.DEBUG, logger="fabric.client.group")
    started_ms = a.reactor.clock.now_ms()
    polls = 0
    while a.reactor.clock.now_ms() < started_ms + 3 * AUTO_COMMIT_INTERVAL_MS:
        a.poll(max_records=1)  # raises nothing
        a.consumer.maintain()
        a.reactor.clock.advance(10)
        polls += 1
    assert polls > 100
    assert 1 <= len(a.commits()) <= 4, f"{len(a.commits())} commits in 3 intervals: retried at every poll"
    a.consumer.close()  # refused again: not raised
    assert len(a.commits()) <= 5 and T0 not in a.coordinator.committed
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "non_empty_group" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


def test_a_consumer_started_at_the_committed_offset_commits_nothing_until_it_moves(assigned) -> None:  # noqa: ANN001
    a = assigned()
    a.coordinator.committed[T0] = 30
    a.consumer.seek(T0, a.consumer.committed(T0))  # as the consumer service's assign does
    for _ in range(2):
        a.reactor.clock.advance(AUTO_COMMIT_INTERVAL_MS)
        a.consumer.maintain()
    a.consumer.close()
    assert a.commits() == []


def test_an_auto_commit_that_could_not_be_sent_is_not_raised_and_is_tried_again(assigned) -> None:  # noqa: ANN001
    a = assigned()
    a.poll()
    sent = a.link.request
    unreachable = [RequestTimeout("no metadata: cannot find the coordinator")]

    def request(command: bytes, header: dict, **kw: Any) -> None:
        if unreachable:
            raise unreachable.pop()
        sent(command, header, **kw)
    a.link.request = request
    a.reactor.clock.advance(AUTO_COMMIT_INTERVAL_MS)
    a.consumer.maintain()  # raises nothing
    assert a.commits() == []
    a.reactor.clock.advance(AUTO_COMMIT_INTERVAL_MS)
    a.consumer.maintain()
    assert a.coordinator.committed[T0] == 10, "one commit that was never sent stopped every later auto-commit"


@pytest.mark.parametrize("reset", ["latest", "earliest"])
def test_a_partition_never_positioned_starts_at_the_groups_committed_offset(assigned, reset: str) -> None:  # noqa: ANN001
    """As Kafka's assign() with a group id: the auto_offset_reset position of a partition the
    group holds an offset for would be auto-committed, moving the group past records nobody
    got (latest) or back (earliest)."""
    a = assigned(start=None, auto_offset_reset=reset)
    a.coordinator.committed[T0] = 30
    returned = []
    for _ in range(3):
        returned += a.poll()
        a.reactor.clock.advance(AUTO_COMMIT_INTERVAL_MS)
    a.consumer.maintain()
    assert a.coordinator.committed[T0] == 60, "the group's offset moved to where the application never was"
    assert returned == list(range(30, 60))


@pytest.mark.parametrize("reset", ["latest", "earliest"])
def test_without_auto_commit_a_partition_never_positioned_starts_at_the_committed_offset_too(assigned, reset: str) -> None:  # noqa: ANN001
    """Kafka's consumer positions an assigned partition at the group's committed offset
    whatever enable.auto.commit says: an application that commits what it processed and is
    restarted resumes there. Started at latest, it skipped every record between its last
    commit and the log end; at earliest, it read the whole log again."""
    a = assigned(start=None, auto_offset_reset=reset, enable_auto_commit=False)
    a.coordinator.committed[T0] = 30
    assert a.poll() == list(range(30, 40))
    a.consumer.commit()
    assert a.coordinator.committed[T0] == 40


def test_a_partition_seeked_to_an_end_is_not_moved_to_the_committed_offset(assigned) -> None:  # noqa: ANN001
    a = assigned(start=None)
    a.coordinator.committed[T0] = 30
    a.consumer.seek_to_beginning([T0])
    assert a.poll() == list(range(0, 10))


# -- re-assigning, and switching between assign() and subscribe() ---------------------------------
T1 = ("t", 1)


def test_assign_commits_the_positions_of_the_partitions_it_drops_and_only_those(assigned) -> None:  # noqa: ANN001
    """As Kafka's assign() with auto-commit: the partitions a new assignment leaves out are
    committed first, else their positions are lost and their records delivered again."""
    a = assigned()
    a.poll()
    a.consumer.assign([T0, T1])  # t-0 kept, with its position: nothing to commit for it
    assert a.commits() == []
    a.consumer.assign([T1])
    assert [h["offsets"] for h in a.commits()] == [[["t", 0, 10, "", 1]]]
    assert a.coordinator.committed.get(T0) == 10, "the position of the dropped t-0 was lost uncommitted"


def test_assign_commits_a_dropped_partition_no_further_than_the_hosts_bounds(assigned) -> None:  # noqa: ANN001
    a = assigned()
    a.poll()
    a.consumer.auto_commit_bounds = {T0: 4}  # records 4.. went to a host's client, unconfirmed
    a.consumer.assign([T1])
    assert a.coordinator.committed.get(T0) == 4


def test_without_auto_commit_assign_commits_nothing(assigned) -> None:  # noqa: ANN001
    a = assigned(enable_auto_commit=False)
    a.poll()
    a.consumer.assign([T1])
    assert a.commits() == []


def test_subscribe_after_assign_is_refused_and_the_positions_stay(assigned) -> None:  # noqa: ANN001
    """As Kafka's IllegalStateException: subscribing would drop the assigned positions
    uncommitted (their records delivered again, or skipped with auto_offset_reset latest)."""
    a = assigned()
    assert a.poll() == list(range(0, 10))
    with pytest.raises(SubscriptionConflictError) as e:
        a.consumer.subscribe(["t"])
    assert e.value.code == P.SUBSCRIPTION_CONFLICT and "unsubscribe()" in e.value.message
    assert a.consumer.subscription == [] and a.consumer.position(T0) == 10
    assert a.poll() == list(range(10, 20))
    assert P.JOIN_GROUP not in a.link.commands()


def test_assign_while_subscribed_is_refused_and_the_membership_stays(assigned) -> None:  # noqa: ANN001
    a = assigned(assign=False)
    a.consumer.subscribe(["t"])
    assert a.poll() == list(range(0, 10))  # joined: the group gave it t-0
    with pytest.raises(SubscriptionConflictError):
        a.consumer.assign([T1])
    assert a.consumer.assignment() == [T0] and a.consumer.position(T0) == 10
    assert a.poll() == list(range(10, 20))


def test_unsubscribe_commits_an_assigned_consumers_positions_and_then_it_may_subscribe(assigned) -> None:  # noqa: ANN001
    a = assigned()
    a.poll()
    a.consumer.unsubscribe()
    assert a.coordinator.committed.get(T0) == 10, "unsubscribe dropped the positions uncommitted"
    assert a.consumer.assignment() == []
    a.consumer.subscribe(["t"])
    assert a.poll() == list(range(10, 20)), "the member starts at the committed offset"


def test_unsubscribe_commits_no_further_than_the_hosts_bounds(assigned) -> None:  # noqa: ANN001
    a = assigned()
    a.poll()
    a.consumer.auto_commit_bounds = {T0: 4}
    a.consumer.unsubscribe()
    assert a.coordinator.committed.get(T0) == 4


def test_assign_of_nothing_is_unsubscribe(assigned) -> None:  # noqa: ANN001
    """As Kafka's assign() of an empty collection: a subscribed consumer leaves its group."""
    a = assigned(assign=False)
    a.consumer.subscribe(["t"])
    a.poll()
    a.consumer.assign([])
    assert a.consumer.subscription == [] and a.consumer.assignment() == []
    assert a.coordinator.committed.get(T0) == 10 and not a.coordinator.members


class _RepliesOnThePass(ScriptedCoordinatorLink):
    """A coordinator link whose asynchronous requests reach the coordinator, and are answered,
    only in the consumer's next reactor pass -- as a socket's are; one closed before that pass
    drops them."""

    def __init__(self, answer: Callable[[bytes, dict], dict], broker: OnePartitionBroker) -> None:
        super().__init__(answer)
        self.broker = broker

    def request(self, command: bytes, header: dict, *, callback: Callable, timeout_ms: int = 0) -> None:
        def deliver() -> None:
            if self.connected:
                ScriptedCoordinatorLink.request(self, command, header, callback=callback)
        self.broker.replies.append(deliver)


@pytest.mark.parametrize("how", ["assign", "commit_async"])
def test_close_waits_for_the_asynchronous_commits_in_flight(assigned, how: str) -> None:  # noqa: ANN001
    """As Kafka's close: an asynchronous commit still on its way -- assign()'s of the partitions
    it dropped, or the application's commit(asynchronous=True) -- is waited for, not dropped
    with the connection (its records then came again to whoever read the partition next)."""
    a = assigned()
    a.link = _RepliesOnThePass(a.coordinator, a.broker)
    a.consumer._link = a.link
    a.poll()
    if how == "assign":
        a.consumer.assign([T1])
    else:
        a.consumer.commit(asynchronous=True)
    a.consumer.close()
    assert a.coordinator.committed.get(T0) == 10, "the commit in flight was dropped at close"
    assert a.consumer._async_commits_in_flight == 0


def test_close_waits_no_longer_than_a_commit_may_take(assigned) -> None:  # noqa: ANN001
    a = assigned()
    a.link = _RepliesOnThePass(a.coordinator, a.broker)
    a.consumer._link = a.link
    a.poll()
    a.link.request = lambda *args, **kw: None  # type: ignore[method-assign]  # a coordinator that never answers
    a.consumer.commit(asynchronous=True)
    start = a.reactor.clock.now_ms()
    a.consumer.close()
    assert a.reactor.clock.now_ms() - start <= COMMIT_TIMEOUT_MS + 1000
