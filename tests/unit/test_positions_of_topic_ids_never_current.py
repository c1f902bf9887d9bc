"""A position set from outside names the topic id it is an offset of (a group's committed
offset: OFFSET_FETCH's ``topic_ids``; ``seek(..., topic_id=)``). While the consumer's metadata
does not name that id it waits -- the id may be newer than the metadata (a topic just made
again). It may wait only as long as the id may still become its topic's: once the coordinator's
metadata, asked for after the position was set, names another id (or no such topic), the id is
deleted or never was, and ids are never used again. Then:

- a group's committed offset (and ``seek(..., committed=True)``, as a REST instance's assign
  seeks to them) is of a topic deleted since: the partition starts at the new topic's log start,
  as where the metadata lists the id as deleted -- also when it is no longer listed (more than
  256 deletions since);
- an application's ``seek(..., topic_id=)`` naming an id neither its topic's nor listed as
  deleted makes ``poll`` raise RemoteError(unknown_topic_id) for that partition until the
  application seeks it again.

Before, such a partition waited for metadata naming the id: forever.

What must still wait: an answer to a request sent before the position was set, a broker's copy
(which may be behind the coordinator), anything while the coordinator is silent.

Real Consumer and GroupConsumer objects on the fake cluster of
tests/unit/test_reading_begins_at_fresh_metadata.py (log end 1000, log start 0).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import pytest

from fabric import protocol as P
from fabric.client.consumer import Consumer
from fabric.client.group import GroupConsumer
from fabric.errors import RemoteError, RequestTimeout
from tests.unit.builders_group_consumer import T0, RestInstance
from tests.unit.test_partitions_newer_than_the_reading import NEW_ID, _poll_until
from tests.unit.test_reading_begins_at_fresh_metadata import COORDINATOR, _Cluster, _consumer, _group_consumer, \
    _SubscribedTopics

GONE_ID = "id-long-gone"  # deleted long ago: no longer in the metadata's list of deleted ids
COMMITTED = 900           # what group g committed of t-0 (``_group_consumer``)


def _first_of_t0(c: Consumer, polls: int = 30) -> int | None:
    got = _poll_until(c, lambda got: any(g[:2] == T0 for g in got), polls)
    return next((o for t, p, o in got if (t, p) == T0), None)


# -- ids that will never be current ----------------------------------------------------------------
@pytest.mark.parametrize("topic_id", ["no-such-id", GONE_ID])
@pytest.mark.parametrize("group", [False, True])
def test_a_seek_naming_an_id_not_listed_makes_poll_raise_until_the_partition_is_sought_again(
        group: bool, topic_id: str) -> None:
    """An id that never was, or one deleted too long ago to be listed: the consumer cannot tell
    them apart, and the application is told."""
    cluster = _Cluster()
    c = _group_consumer(cluster, _SubscribedTopics(cluster)) if group else _consumer(cluster)
    try:
        c.assign([T0])
        c.seek(T0, 500, topic_id=topic_id)
        with pytest.raises(RemoteError) as raised:
            _poll_until(c, bool, 10)
        assert raised.value.code == P.UNKNOWN_TOPIC_ID, raised.value
        assert topic_id in str(raised.value)
        with pytest.raises(RemoteError):  # every poll says so, until the application seeks
            c.poll(1000)
        assert c.position(T0) is None
        c.seek(T0, 500)
        assert _first_of_t0(c) == 500
    finally:
        c.close()


@pytest.mark.parametrize("how", ["subscribed", "assigned", "seek committed"])
def test_a_committed_offset_of_a_topic_deleted_and_no_longer_listed_starts_at_the_new_topics_log_start(
        how: str) -> None:
    """The group committed 900 of t-0 in a topic deleted since (more deletions than the metadata
    lists came after): the topic the metadata names is newer than the group's reading."""
    cluster = _Cluster()
    coordinator = _SubscribedTopics(cluster)
    coordinator.topic_ids["t"] = GONE_ID
    c = _group_consumer(cluster, coordinator)
    try:
        if how == "subscribed":
            c.subscribe(["t"])
        else:
            c.assign([T0])
        if how == "seek committed":
            c.seek(T0, COMMITTED, topic_id=GONE_ID, committed=True)
        assert _first_of_t0(c) == 0, f"t-0 at {c.position(T0)}: the committed offset of a deleted topic was waited for"
    finally:
        c.close()


def test_a_rest_instance_assigned_a_partition_committed_in_an_unlisted_deleted_topic_reads_from_the_log_start() -> None:
    rest = RestInstance()
    rest.coordinator.committed[T0] = 500
    rest.coordinator.topic_ids["t"] = GONE_ID
    rest.request("subscribe", topics=[])
    rest.request("assign", partitions=[["t", 0]])
    got = rest.fetch_records()
    assert got[:1] == [0], f"read {got[:1]} (position {rest.instance.consumer.position(T0)})"


# -- ids that may still become current: the partition waits ------------------------------------------
class _SilentCoordinatorCluster(_Cluster):
    """``_Cluster`` whose coordinator, while ``silent``, lets every METADATA ask time out."""

    def __init__(self) -> None:
        super().__init__()
        self.silent = False

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.METADATA and self.silent:
            self.replies.append(lambda: callback(None, [], RequestTimeout("metadata timed out")))
            return len(self.replies)
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


def _new_topic_behind_the_brokers(cluster: _Cluster, coordinator: _SubscribedTopics) -> None:
    """t made again (NEW_ID) and the group committed 900 of it; the brokers' copies of the
    metadata still name the old topic."""
    cluster.copy = cluster.metadata
    cluster.make_topic_again(NEW_ID)
    coordinator.topic_ids["t"] = NEW_ID


@pytest.mark.parametrize("how", ["committed", "seek"])
def test_a_position_in_an_id_newer_than_the_metadata_waits_while_only_brokers_stale_copies_answer(how: str) -> None:
    """``seek``: the application seeks to 900 of the new topic, naming its id."""
    cluster = _SilentCoordinatorCluster()
    coordinator = _SubscribedTopics(cluster)
    _new_topic_behind_the_brokers(cluster, coordinator)
    cluster.silent = True
    c = _group_consumer(cluster, coordinator)
    try:
        if how == "committed":
            c.subscribe(["t"])
        else:
            c.assign([T0])
            c.seek(T0, COMMITTED, topic_id=NEW_ID)
        got = _poll_until(c, bool, 30)
        assert got == [] and c.position(T0) == COMMITTED, \
            f"given up on the word of brokers' copies: read {got[:1]}, position {c.position(T0)}"
        assert c.metadata.topics["t"].topic_id == "id-t", "the scenario needs the brokers' copies only"
        cluster.silent = False
        assert _first_of_t0(c) == COMMITTED, "the new topic's committed offset was lost"
    finally:
        c.close()


def test_a_committed_offset_newer_than_the_metadata_waits_out_a_coordinator_answer_asked_for_before_it() -> None:
    """A metadata request to the coordinator is on its way when the group's committed offset of
    the new topic comes; its answer names the old topic (it was sent before): not a verdict."""
    cluster = _Cluster()
    coordinator = _SubscribedTopics(cluster)
    c = _group_consumer(cluster, coordinator)
    try:
        coordinator.committed.clear()
        c.subscribe(["t"])
        for _ in range(10):
            c.poll(100)
        assert c.position(T0) == 1000, "the scenario needs t-0 read from the log end first"
        old = cluster.metadata
        cluster.held, cluster.held_answer = [], old
        c._refresh_metadata()
        c.reactor.advance(1000)
        assert cluster.held, "no metadata request went out"
        assert c._md_in_flight
        cluster.make_topic_again(NEW_ID)
        coordinator.topic_ids["t"] = NEW_ID
        coordinator.committed[T0] = COMMITTED
        c.request_rejoin(c.generation, False)
        for _ in range(5):
            c.poll(100)
        assert c.position(T0) == COMMITTED and T0 in c._ahead_of_metadata, "the scenario needs t-0 waiting"
        cluster.release()  # the answer to the request sent before: the old topic
        assert _first_of_t0(c) == COMMITTED, f"t-0 at {c.position(T0)}: the new topic's committed offset was lost"
    finally:
        c.close()


def test_the_coordinators_answer_naming_the_id_is_read_at_the_committed_offset() -> None:
    cluster = _Cluster()
    coordinator = _SubscribedTopics(cluster)
    _new_topic_behind_the_brokers(cluster, coordinator)
    c = _group_consumer(cluster, coordinator)
    try:
        c.subscribe(["t"])
        assert _first_of_t0(c) == COMMITTED
        assert c.metadata.coordinator == COORDINATOR
    finally:
        c.close()


def test_a_committed_offset_of_a_topic_deleted_and_not_made_again_reads_the_new_topic_from_its_log_start() -> None:
    """The coordinator's metadata has no topic t (deleted, its id no longer listed): given up, the
    partition has nothing to fetch until t is made again, and then starts at its log start -- never
    at the old topic's committed offset."""
    cluster = _Cluster()
    coordinator = _SubscribedTopics(cluster)
    coordinator.topic_ids["t"] = GONE_ID
    made = cluster.metadata
    cluster.metadata = replace(made, version=made.version + 1, topics={})
    c = _group_consumer(cluster, coordinator)
    try:
        c.assign([T0])
        assert _poll_until(c, bool, 10) == []
        assert not c._ahead_of_metadata and c.position(T0) is None, "t-0 still waits for the deleted topic's id"
        cluster.metadata = replace(made, version=made.version + 2)  # t made again (its id: id-t)
        assert _first_of_t0(c) == 0
    finally:
        c.close()


class _RestoredCoordinatorCluster(_Cluster):
    """``_Cluster`` whose coordinator answers METADATA with ``restored`` when set: a coordinator
    started from an old copy of its state (docs/replication.md), behind what the brokers took."""

    def __init__(self) -> None:
        super().__init__()
        self.restored: Any = None

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        restored = self.restored
        if command == P.METADATA and restored is not None:
            self.replies.append(lambda: callback({"metadata": restored.to_wire()}, [], None))
            return len(self.replies)
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


@pytest.mark.parametrize("how", ["committed", "seek"])
def test_a_coordinator_answer_older_than_the_consumers_metadata_gives_no_position_up(how: str) -> None:
    """The coordinator was put back from an old copy of its state (version 1, the old topic);
    the consumer's metadata is a broker's copy at version 6, also behind the topic made again
    (NEW_ID), whose offset 900 the group committed. The coordinator's answer, older than the
    metadata the consumer holds, is no verdict on NEW_ID: judged, the consumer's metadata -- a
    broker's copy -- gave the position up (read again from the log start, or ``poll`` raising).
    Once the coordinator serves its state again (put back from a newer copy), the offset is read."""
    cluster = _RestoredCoordinatorCluster()
    coordinator = _SubscribedTopics(cluster)
    old = cluster.metadata
    cluster.copy = replace(old, version=old.version + 5)
    cluster.make_topic_again(NEW_ID)
    made_again = cluster.metadata = replace(cluster.metadata, version=old.version + 10)
    cluster.restored = old
    coordinator.topic_ids["t"] = NEW_ID
    c = _group_consumer(cluster, coordinator)
    try:
        c.assign([T0])
        if how == "seek":
            c.seek(T0, COMMITTED, topic_id=NEW_ID)
        got = _poll_until(c, bool, 10)
        assert got == [] and c.position(T0) == COMMITTED and T0 in c._ahead_of_metadata, \
            f"given up on an answer older than the consumer's metadata: read {got[:1]}, position {c.position(T0)}"
        assert c.metadata.version == old.version + 5, "the scenario needs the broker's copy held"
        cluster.restored, cluster.copy = None, made_again  # put back from a newer copy of its state
        assert _first_of_t0(c) == COMMITTED, "the new topic's committed offset was lost"
    finally:
        c.close()
