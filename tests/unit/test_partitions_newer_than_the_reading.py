"""A partition that appears while a consumer reads its topic -- the topic deleted and made again
under its name, or given more partitions -- holds only records written after the consumer began
reading. It starts at its log start whatever ``auto_offset_reset`` says: ``latest`` skipped every
record written to it between its creation and the moment the consumer noticed it (the loss Kafka
documents for partitions added under ``latest``, KAFKA-12261), ``none`` stopped a consumer that
had a position all along. A group's committed offset of the new partition wins, as for any
assignment, and so does an explicit seek. A group consumer also starts at its log start a partition
the coordinator names newer than the group's reading of its topic (OFFSET_FETCH's
``newer_than_reading``): a member that joined after the partition was made cannot tell itself.

Real Consumer and GroupConsumer objects on the fake broker and scripted coordinator of
tests/unit/builders_group_consumer.py (log end 1000: ``latest`` starts at 1000, the log start 0).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from fabric import protocol as P
from fabric.client.consumer import Consumer
from fabric.client.group import GroupConsumer
from fabric.errors import RemoteError
from fabric.metadata import ClusterMetadata, PartitionInfo, TopicInfo
from tests.unit.builders_group_consumer import (LOG_END_OFFSET, T0, BrokerRepliesReactor, OffsetsCoordinator,
                                                OnePartitionBroker, consumer_config)
from tests.unit.fakes import ScriptedCoordinatorLink, as_leader_wrote, make_batch

NEW_ID = "id-t2"
T1 = ("t", 1)
POLICIES = ["latest", "earliest", "none"]


def _poll_until(consumer: Consumer, done: Callable[[list[tuple[str, int, int]]], bool],
                polls: int = 60) -> list[tuple[str, int, int]]:
    """Poll (each poll 1 s of the manual clock) until ``done(records so far)``; the records as
    (topic, partition, offset)."""
    got: list[tuple[str, int, int]] = []
    for _ in range(polls):
        got += [(r.topic, r.partition, r.offset) for r in consumer.poll(1000, max_records=10)]
        if done(got):
            break
    return got


def _first_of(tp: tuple[str, int]) -> Callable[[list], bool]:
    return lambda got: any((t, p) == tp for t, p, _ in got)


def _first_offset(got: list[tuple[str, int, int]], tp: tuple[str, int]) -> int | None:
    return next((o for t, p, o in got if (t, p) == tp), None)


class _GrowingBroker(OnePartitionBroker):
    """Broker 1 leading every partition of t (each with records 0..LOG_END_OFFSET-1): a FETCH of
    several partitions is answered for each; one at the log end waits (a long poll) until a
    reactor pass with nothing else to deliver (``_LongPollReactor``), or t changes, and is then
    answered with nothing, as when its wait runs out."""

    def __init__(self, partitions: int = 1) -> None:
        super().__init__()
        self.parked: list[Callable[[], None]] = []
        self._set_partitions(partitions, "id-t")

    def make_topic_again(self, topic_id: str) -> None:
        t = self.metadata.topics["t"]
        self._set_partitions(len(t.partitions), topic_id, (t.topic_id,))

    def _set_partitions(self, n: int, topic_id: str, deleted: tuple[str, ...] = ()) -> None:
        md = self.metadata
        parts = tuple(PartitionInfo("t", p, 1, 1, (1,), (1,)) for p in range(n))
        self.metadata = ClusterMetadata(md.version + 1, "c", md.brokers, {"t": TopicInfo("t", parts, {}, topic_id)},
                                        coordinator="tcp://coordinator",
                                        deleted_topic_ids=md.deleted_topic_ids + deleted)
        self.replies += self.parked
        self.parked = []

    def add_partitions(self, n: int) -> None:
        t = self.metadata.topics["t"]
        self._set_partitions(len(t.partitions) + n, t.topic_id)

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command != P.FETCH or self._other_topic(header):
            return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)
        entries, datas = [], []
        for topic, partition, offset, _max_bytes, _epoch, *_last_epoch in header["parts"]:
            n = min(10, LOG_END_OFFSET - offset)
            entries.append([topic, partition, 0, LOG_END_OFFSET, LOG_END_OFFSET, 0, None])
            datas.append(as_leader_wrote(make_batch(n), offset, 1) if n > 0 else b"")
        (self.replies if any(datas) else self.parked).append(lambda: callback({"parts": entries}, datas, None))
        return len(self.replies)


class _LongPollReactor(BrokerRepliesReactor):
    """``BrokerRepliesReactor``: a pass with no reply to deliver waits out its timeout, and the
    broker's long polls waiting are answered (empty) in the next pass."""

    broker: _GrowingBroker

    def run_once(self, timeout_ms_max: int = 1000) -> None:
        super().run_once(timeout_ms_max)
        if not self.broker.replies:
            self.broker.replies, self.broker.parked = self.broker.parked, []


class _GroupOfT(OffsetsCoordinator):
    """Group g whose one member owns every partition of t the broker's metadata names; a join
    after the partitions changed is generation 2."""

    def __init__(self, broker: _GrowingBroker) -> None:
        super().__init__()
        self.broker = broker
        self.uncommitted = -1
        self.generation = 1

    def __call__(self, command: bytes, header: dict) -> dict:
        if command == P.JOIN_GROUP:
            return {"member_id": header["member_id"] or "m-1", "generation": self.generation}
        if command == P.SYNC_GROUP:
            parts = self.broker.metadata.topics["t"].partitions
            return {"generation": self.generation, "assignment": [["t", p.partition] for p in parts]}
        return super().__call__(command, header)


def _member_of_growing_topic(policy: str, partitions: int = 1) -> tuple[GroupConsumer, _GrowingBroker, _GroupOfT]:
    """A member of group g subscribed to t (``partitions`` partitions, nothing committed)."""
    broker = _GrowingBroker(partitions)
    reactor = _LongPollReactor(broker)
    coordinator = _GroupOfT(broker)
    link = ScriptedCoordinatorLink(coordinator)
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(broker, reactor, link, auto_offset_reset=policy))
    c.subscribe(["t"])
    return c, broker, coordinator


def _made_again(broker: _GrowingBroker, coordinator: _GroupOfT, topic_id: str, partitions: int = 1,
                committed: dict | None = None) -> None:
    """t deleted and made again as ``topic_id`` with ``partitions`` partitions: the broker and the
    coordinator know (it forgets the old topic's offsets; ``committed``: those of the new one)."""
    broker._set_partitions(partitions, topic_id, (broker.metadata.topics["t"].topic_id,))
    coordinator.topic_ids["t"] = topic_id
    coordinator.committed = dict(committed or {})


def _first_below(c: Consumer, offset: int) -> tuple[str, int, int] | None:
    """Poll until a record of t-0 below ``offset`` comes (the new topic's): the first such."""
    got = _poll_until(c, lambda got: any(g[:2] == T0 and g[2] < offset for g in got))
    return next((g for g in got if g[:2] == T0 and g[2] < offset), None)


def _rebalance(c: GroupConsumer, coordinator: _GroupOfT) -> None:
    """The coordinator saw the partitions change: the heartbeat thread is told to join again."""
    coordinator.generation += 1
    c.request_rejoin(c.generation, False)


def _assigned_consumer(policy: str) -> tuple[Consumer, _GrowingBroker]:
    broker = _GrowingBroker()
    reactor = _LongPollReactor(broker)
    return Consumer("127.0.0.1:1", clock=reactor.clock, reactor=reactor, client_factory=broker.client,
                    auto_offset_reset=policy), broker


# -- a topic made again under a consumer that reads it ---------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
def test_an_assigned_consumer_reads_a_topic_made_again_from_its_log_start_whatever_its_policy(policy: str) -> None:
    c, broker = _assigned_consumer(policy)
    try:
        c.assign([T0])
        c.seek(T0, 900)
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        broker.make_topic_again(NEW_ID)  # 1000 records written to the new topic before the consumer noticed
        assert _first_below(c, 900) == ("t", 0, 0), \
            f"the new topic's records before the consumer noticed it were skipped ({policy})"
    finally:
        c.close()


@pytest.mark.parametrize("rebalance", [False, True])
@pytest.mark.parametrize("policy", POLICIES)
def test_a_member_reads_a_topic_made_again_from_its_log_start_whatever_its_policy(policy: str, rebalance: bool) -> None:
    """``rebalance``: the coordinator saw the topic go and come back and the group joins again
    (the partition is assigned anew, nothing committed of the new topic), before the member's
    metadata names the new topic."""
    c, broker, coordinator = _member_of_growing_topic(policy)
    try:
        coordinator.committed[T0] = 900
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        _made_again(broker, coordinator, NEW_ID)
        if rebalance:
            _rebalance(c, coordinator)
        assert _first_below(c, 900) == ("t", 0, 0), \
            f"the new topic's records before the member noticed it were skipped ({policy})"
    finally:
        c.close()


def test_a_member_started_by_the_committed_offset_of_a_deleted_topic_reads_the_new_one_from_its_log_start() -> None:
    """The assignment's committed offset is of the topic the metadata lists as deleted (made
    again after the coordinator answered): the group read that topic, so the new one is newer."""
    c, broker, coordinator = _member_of_growing_topic("latest")
    try:
        coordinator.committed[T0] = 900
        broker.make_topic_again(NEW_ID)  # the coordinator's answer still names id-t
        got = _poll_until(c, bool)
        assert got[:1] == [("t", 0, 0)], f"read {got[:3]}...: the new topic's first records were skipped"
    finally:
        c.close()


# -- partitions added while a member is subscribed ------------------------------------------------
@pytest.mark.parametrize("policy", POLICIES)
def test_a_partition_added_while_a_member_is_subscribed_is_read_from_its_log_start(policy: str) -> None:
    c, broker, coordinator = _member_of_growing_topic(policy)
    try:
        coordinator.committed[T0] = 900
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        broker.add_partitions(1)  # t-1 gets 1000 records before the group rebalances
        _rebalance(c, coordinator)
        got = _poll_until(c, _first_of(T1))
        assert _first_offset(got, T1) == 0, f"t-1's records written before the rebalance were skipped ({policy})"
    finally:
        c.close()


def test_a_partition_there_when_the_member_subscribed_starts_by_the_policy() -> None:
    """The other side: a partition with nothing committed that the topic had when the member
    subscribed starts at ``auto_offset_reset`` (``latest``: the log end), as before."""
    c, _, coordinator = _member_of_growing_topic("latest", partitions=2)
    try:
        coordinator.committed[T0] = 900
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        assert c.position(T1) == LOG_END_OFFSET
    finally:
        c.close()


# -- what still wins over the log start ------------------------------------------------------------
def test_a_committed_offset_of_the_new_topic_wins_over_its_log_start() -> None:
    """t made again; the group committed 300 of the new topic (another owner read it) by the time
    the member is given t-0 again: it starts there, not at 0."""
    c, broker, coordinator = _member_of_growing_topic("latest")
    try:
        coordinator.committed[T0] = 900
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        _made_again(broker, coordinator, NEW_ID, committed={T0: 300})
        _rebalance(c, coordinator)
        assert _first_below(c, 900) == ("t", 0, 300)
    finally:
        c.close()


@pytest.mark.parametrize("committed", [300, None])
def test_an_assigned_group_consumer_starts_a_topic_made_again_at_the_groups_committed_offset_of_it(
        committed: int | None) -> None:
    """An assigned consumer (no membership) of group g reads t; t is made again and an operator
    resets g's offset of the new topic to 300 (``loom group reset-offsets``: the group has no
    members). The consumer starts there; with nothing committed, at the log start."""
    broker = _GrowingBroker()
    reactor = _LongPollReactor(broker)
    coordinator = _GroupOfT(broker)
    link = ScriptedCoordinatorLink(coordinator)
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(broker, reactor, link, auto_offset_reset="latest"))
    try:
        coordinator.committed[T0] = 900
        c.assign([T0])
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        _made_again(broker, coordinator, NEW_ID, committed=None if committed is None else {T0: committed})
        assert _first_below(c, 900) == ("t", 0, committed or 0)
    finally:
        c.close()


def test_a_topic_made_again_twice_is_read_from_the_last_ones_log_start() -> None:
    c, broker, coordinator = _member_of_growing_topic("latest")
    try:
        coordinator.committed[T0] = 900
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        _made_again(broker, coordinator, NEW_ID)
        assert _first_below(c, 900) == ("t", 0, 0)
        _made_again(broker, coordinator, "id-t3")  # again, while the member reads the second one at 10
        assert _first_below(c, 10) == ("t", 0, 0)
    finally:
        c.close()


def test_a_topic_made_again_with_more_partitions_is_read_from_the_log_start_of_each() -> None:
    c, broker, coordinator = _member_of_growing_topic("latest")
    try:
        coordinator.committed[T0] = 900
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        _made_again(broker, coordinator, NEW_ID, partitions=2)
        _rebalance(c, coordinator)
        got = _poll_until(c, lambda got: _first_of(T1)(got) and any(g[:2] == T0 and g[2] < 900 for g in got))
        assert _first_offset(got, T1) == 0 and _first_offset([g for g in got if g[2] < 900], T0) == 0, \
            f"read {sorted(set((t, p) for t, p, _ in got))}: {got[:3]}..."
    finally:
        c.close()


@pytest.mark.parametrize("to", ["end", 500])
def test_an_explicit_seek_after_the_topic_was_made_again_wins(to: Any) -> None:
    c, broker = _assigned_consumer("latest")
    try:
        c.assign([T0])
        c.seek(T0, 900)
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        broker.make_topic_again(NEW_ID)
        for _ in range(50):  # the consumer learns of the new topic
            if c.metadata.topics["t"].topic_id == NEW_ID:
                break
            c.poll(100)
        if to == "end":
            c.seek_to_end([T0])
            for _ in range(20):
                if c.position(T0) is not None:
                    break
                c.poll(100)
            assert c.position(T0) == LOG_END_OFFSET, "seek_to_end was overridden by the log start"
        else:
            c.seek(T0, to)
            assert _poll_until(c, bool)[:1] == [("t", 0, to)]
    finally:
        c.close()


def test_none_still_raises_for_a_partition_the_topic_had_when_reading_began() -> None:
    """``none`` is for a partition with no position at all: one there from the start, never
    positioned, still makes poll raise."""
    c, _ = _assigned_consumer("none")
    try:
        c.assign([T0])
        with pytest.raises(RemoteError) as raised:
            for _ in range(10):
                c.poll(100)
        assert raised.value.code == P.OFFSET_OUT_OF_RANGE
    finally:
        c.close()


def test_none_raises_while_the_metadata_is_asked_for_again_and_again() -> None:
    """t-5, which the metadata does not list (no leader), has the consumer ask for metadata at
    every pass. ``none`` for t-0 waits for one metadata answer (it may show t-0 new), then raises
    -- not only in a pass with no metadata request on its way, which never came."""
    c, _ = _assigned_consumer("none")
    try:
        c.assign([("t", 5), T0])
        with pytest.raises(RemoteError) as raised:
            for _ in range(30):
                c.poll(100)
        assert raised.value.code == P.OFFSET_OUT_OF_RANGE and "t-0" in raised.value.message
    finally:
        c.close()


# -- the group's judgement: partitions newer than the group's reading (the coordinator's) ---------
class _GroupThatJudges(_GroupOfT):
    """``_GroupOfT`` whose OFFSET_FETCH answer lists ``newer`` as newer than the group's reading
    (nodes/coordinator/group_readings.py), as a coordinator that knows it does; None: an older
    coordinator, which sends no such field."""

    def __init__(self, broker: _GrowingBroker, newer: Any) -> None:
        super().__init__(broker)
        self.newer = newer

    def __call__(self, command: bytes, header: dict) -> dict:
        answer = super().__call__(command, header)
        if command == P.OFFSET_FETCH and self.newer is not None:
            answer["newer_than_reading"] = self.newer
        return answer


def _new_member_of_two_partitions(policy: str, newer: Any,
                                  **kw: Any) -> tuple[GroupConsumer, _GrowingBroker, _GroupThatJudges]:
    """A new member (a process that never read t) of group g, subscribed to t of two partitions,
    nothing committed."""
    broker = _GrowingBroker(2)
    reactor = _LongPollReactor(broker)
    coordinator = _GroupThatJudges(broker, newer)
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(broker, reactor, ScriptedCoordinatorLink(coordinator),
                                                                     auto_offset_reset=policy), **kw)
    c.subscribe(["t"])
    return c, broker, coordinator


def _positions_taken(c: GroupConsumer, tps: list[tuple[str, int]]) -> dict:
    for _ in range(60):
        if c.assignment() == tps and all(c.position(tp) is not None for tp in tps):
            break
        c.poll(100, max_records=1)
    return {tp: c.position(tp) for tp in tps}


@pytest.mark.parametrize("policy", POLICIES)
def test_a_new_member_starts_a_partition_newer_than_the_groups_reading_at_its_log_start(policy: str) -> None:
    """The coordinator says t-1 was made after the group began reading t: the new member, which
    saw t with both partitions from the start, reads it from its log start whatever the policy."""
    c, _, coordinator = _new_member_of_two_partitions(policy, {"t": [1]})
    coordinator.committed[T0] = 900
    try:
        got = _poll_until(c, _first_of(T1))
        assert _first_offset(got, T1) == 0, f"t-1's records before the member's first fetch were skipped ({policy})"
        assert _first_offset(got, T0) in (None, 900)
    finally:
        c.close()


def test_a_partition_older_than_the_groups_reading_still_follows_the_policy() -> None:
    c, _, _ = _new_member_of_two_partitions("latest", {"t": [1]})
    try:
        got = _poll_until(c, _first_of(T1))
        assert _first_offset(got, T1) == 0 and c.position(T0) == LOG_END_OFFSET
    finally:
        c.close()


def test_without_the_coordinators_judgement_a_new_member_follows_the_policy_as_before() -> None:
    """An older coordinator sends no ``newer_than_reading``: the member behaves as before."""
    c, _, _ = _new_member_of_two_partitions("latest", None)
    try:
        assert _positions_taken(c, [T0, T1]) == {T0: LOG_END_OFFSET, T1: LOG_END_OFFSET}
    finally:
        c.close()


def test_a_committed_offset_and_a_seek_in_on_assign_win_over_the_groups_judgement() -> None:
    holder: list[GroupConsumer] = []
    c, _, coordinator = _new_member_of_two_partitions(
        "latest", {"t": [0, 1]}, on_assign=lambda tps: holder[0].seek(T1, 700))
    holder.append(c)
    coordinator.committed[T0] = 300  # a coordinator would not list it: the committed offset wins anyway
    try:
        got = _poll_until(c, lambda got: _first_of(T0)(got) and _first_of(T1)(got))
        assert (_first_offset(got, T0), _first_offset(got, T1)) == (300, 700)
    finally:
        c.close()


@pytest.mark.parametrize("newer", [[["t", 1]], {"t": 1}, {1: [1]}, "t-1", {"t": ["1"]}, {"t": [None]}, {"t": [True]}])
def test_a_malformed_judgement_starts_every_partition_with_nothing_committed_at_its_log_start(newer: Any) -> None:
    """An answer that cannot be read says nothing of the group's reading: by the policy
    (``latest``) a partition made after the group began reading would never have its records so
    far read; from its log start they are at most read again (fabric/client/group_link.py
    ``read_offset_fetch``)."""
    c, _, _ = _new_member_of_two_partitions("latest", newer)
    try:
        got = _poll_until(c, lambda got: _first_of(T0)(got) and _first_of(T1)(got))
        assert (_first_offset(got, T0), _first_offset(got, T1)) == (0, 0)
    finally:
        c.close()


@pytest.mark.parametrize("newer", [{"t": [1]}, None])
def test_an_assigned_consumer_starts_a_partition_newer_than_the_groups_reading_at_its_log_start(newer: Any) -> None:
    """A consumer of group g assigned t-0 and t-1 (no membership; nothing committed of t-1): the
    coordinator's lookup of the committed offsets names t-1 newer than the group's reading, and it
    starts at its log start; without that (an older coordinator), at ``latest`` as before."""
    broker = _GrowingBroker(2)
    reactor = _LongPollReactor(broker)
    coordinator = _GroupThatJudges(broker, newer)
    coordinator.committed[T0] = 900
    link = ScriptedCoordinatorLink(coordinator)
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(broker, reactor, link, auto_offset_reset="latest"))
    try:
        c.assign([T0, T1])
        got = _poll_until(c, lambda got: _first_of(T1)(got) or c.position(T1) == LOG_END_OFFSET)
        assert (_first_offset(got, T1), c.position(T1) is not None) == ((0, True) if newer else (None, True))
    finally:
        c.close()
