"""How a topic was when a consumer began reading it is judged by metadata at least as new as that
moment, asked of the coordinator: a partition that metadata names started before the reading, and
with nothing to start from starts by ``auto_offset_reset`` (``latest``: the log end).

Judged by the metadata the consumer held when it began reading -- taken long before, as a consumer
asks for metadata only when it needs to -- or by a broker's copy behind the coordinator, a topic made
(or given partitions) before the reading looked newer than it: its partitions started at their log
start under ``latest``, and the whole log was read again.

Real Consumer and GroupConsumer objects on the fake broker of
tests/unit/test_partitions_newer_than_the_reading.py (log end 1000: ``latest`` starts at 1000).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable

import pytest

from fabric import protocol as P
from fabric.client.admin import EARLIEST
from fabric.client.consumer import Consumer
from fabric.client.group import GroupConsumer
from fabric.errors import RemoteError
from fabric.clock import ManualClock
from fabric.metadata import ClusterMetadata, PartitionInfo, TopicInfo
from tests.unit.builders_group_consumer import LOG_END_OFFSET, T0, OffsetsCoordinator, consumer_config
from tests.unit.fakes import FakeReactor, ScriptedCoordinatorLink
from tests.unit.test_consumer_failover import BOOTSTRAP as CF_BOOTSTRAP
from tests.unit.test_consumer_failover import Net
from tests.unit.test_consumer_failover import endpoint as cf_endpoint
from tests.unit.test_consumer_failover import metadata as cf_metadata
from tests.unit.test_partitions_newer_than_the_reading import (NEW_ID, _GroupOfT, _GrowingBroker, _LongPollReactor,
                                                               _made_again, _poll_until, _rebalance)

U0, U1 = ("u", 0), ("u", 1)
COORDINATOR = "tcp://coordinator"


class _Cluster(_GrowingBroker):
    """``_GrowingBroker`` with more topics (``add_topic``); an endpoint other than the
    coordinator's answers METADATA with ``copy`` when one is set (a broker's copy behind the
    coordinator's)."""

    def __init__(self) -> None:
        super().__init__()
        self.copy: ClusterMetadata | None = None
        self.held: list[Callable[[], None]] | None = None  # a list: the coordinator's METADATA answers wait there
        self.held_answer: ClusterMetadata | None = None  # what they name (None: the metadata when released)

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.METADATA and self.held is not None:
            named = self.held_answer
            self.held.append(lambda: callback({"metadata": (named or self.metadata).to_wire()}, [], None))
            return 0
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)

    def release(self) -> None:
        """The coordinator's METADATA answers held come."""
        assert self.held is not None
        self.replies += self.held
        self.held = None

    def add_topic(self, name: str, partitions: int) -> None:
        md = self.metadata
        parts = tuple(PartitionInfo(name, p, 1, 1, (1,), (1,)) for p in range(partitions))
        self.metadata = ClusterMetadata(md.version + 1, "c", md.brokers,
                                        {**md.topics, name: TopicInfo(name, parts, {}, f"id-{name}")},
                                        coordinator=COORDINATOR, deleted_topic_ids=md.deleted_topic_ids)

    def client(self, endpoint: str) -> Any:
        return self if endpoint == COORDINATOR or self.copy is None else _BrokerCopy(self)


class _BrokerCopy:
    """A broker other than the coordinator: its metadata is the cluster's ``copy``."""

    def __init__(self, cluster: _Cluster) -> None:
        self.cluster = cluster

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.METADATA:
            copy = self.cluster.copy
            assert copy is not None
            self.cluster.replies.append(lambda: callback({"metadata": copy.to_wire()}, [], None))
            return len(self.cluster.replies)
        return _GrowingBroker.request(self.cluster, command, header, payloads, callback=callback, timeout_ms=timeout_ms)

    def cancel(self, request_id: int) -> bool:
        return False

    def close(self) -> None:
        pass


class _SubscribedTopics(OffsetsCoordinator):
    """Group g whose one member owns every partition, in the cluster's metadata, of the topics of
    its last join; nothing committed (-1)."""

    def __init__(self, cluster: _Cluster) -> None:
        super().__init__()
        self.cluster = cluster
        self.uncommitted = -1
        self.topic_ids = {"t": "id-t", "u": "id-u"}
        self.topics: list[str] = []

    def __call__(self, command: bytes, header: dict) -> dict:
        if command == P.JOIN_GROUP:
            self.topics = list(header["topics"])
            return {"member_id": header["member_id"] or "m-1", "generation": 1}
        if command == P.SYNC_GROUP:
            md = self.cluster.metadata
            return {"generation": 1, "assignment": [[t, p.partition] for t in self.topics if t in md.topics
                                                     for p in md.topics[t].partitions]}
        return super().__call__(command, header)


def _group_consumer(cluster: _Cluster, coordinator: OffsetsCoordinator, policy: str = "latest") -> GroupConsumer:
    """A consumer of group g, which ``coordinator`` runs; g committed 900 of t-0."""
    coordinator.committed[T0] = 900
    return GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
        cluster, _LongPollReactor(cluster), ScriptedCoordinatorLink(coordinator), auto_offset_reset=policy))


def _consumer(cluster: _Cluster, group: bool = False) -> Consumer:
    """A consumer (``group``: a member of g) with ``latest``; g committed 900 of t-0."""
    if group:
        return _group_consumer(cluster, _SubscribedTopics(cluster))
    reactor = _LongPollReactor(cluster)
    return Consumer("127.0.0.1:1", clock=reactor.clock, reactor=reactor, client_factory=cluster.client,
                    auto_offset_reset="latest")


def _positioned(c: Consumer, tps: list[tuple[str, int]]) -> dict[tuple[str, int], int | None]:
    for _ in range(60):
        if all(c.position(tp) is not None for tp in tps):
            break
        c.poll(1000, max_records=10)
    return {tp: c.position(tp) for tp in tps}


@pytest.mark.parametrize("how", ["assign", "subscribe again"])
def test_a_topic_made_before_the_reading_began_starts_at_the_log_end_though_the_metadata_held_was_older(
        how: str) -> None:
    """The consumer reads t for a while (its metadata, taken then, names t only); u is made and
    written to; then the consumer begins reading u -- assigned it, or subscribed to it after an
    unsubscribe. u is older than the reading: ``latest`` starts it at its log end."""
    cluster = _Cluster()
    c = _consumer(cluster, group=how != "assign")
    try:
        if how == "assign":
            c.assign([T0])
            c.seek(T0, 900)
        else:
            assert isinstance(c, GroupConsumer)
            c.subscribe(["t"])
        assert _poll_until(c, bool), "t was not read"
        cluster.add_topic("u", 2)  # the consumer asks for no metadata meanwhile: its copy names t only
        assert "u" not in c.metadata.topics
        if how == "assign":
            c.assign([T0, U0, U1])
        else:
            assert isinstance(c, GroupConsumer)
            c.unsubscribe()
            c.subscribe(["u"])
        assert _positioned(c, [U0, U1]) == {U0: LOG_END_OFFSET, U1: LOG_END_OFFSET}, \
            "u, made before the consumer began reading it, was read again from its log start"
    finally:
        c.close()


@pytest.mark.parametrize("copy", ["without the topic", "with fewer partitions"])
@pytest.mark.parametrize("group", [False, True])
def test_a_new_consumer_whose_first_metadata_is_a_broker_copy_behind_the_coordinator_starts_at_the_log_end(
        copy: str, group: bool) -> None:
    """A new consumer's first metadata answer comes from a broker whose copy is behind the
    coordinator's: it lacks u, or names one of u's two partitions. u is older than the consumer."""
    cluster = _Cluster()
    if copy == "with fewer partitions":
        cluster.add_topic("u", 1)
    cluster.copy = cluster.metadata
    cluster.add_topic("u", 2)
    c = _consumer(cluster, group)
    try:
        if group:
            assert isinstance(c, GroupConsumer)
            c.subscribe(["u"])
        else:
            c.assign([U0, U1])
        assert _positioned(c, [U0, U1]) == {U0: LOG_END_OFFSET, U1: LOG_END_OFFSET}, \
            "u, older than the consumer, was read again from its log start"
    finally:
        c.close()


@pytest.mark.parametrize("group", [False, True])
def test_a_topic_made_after_the_reading_began_is_still_read_from_its_log_start(group: bool) -> None:
    """The other side: u made after the consumer began reading it (its metadata then had no u),
    while the coordinator's metadata is what the consumer asks."""
    cluster = _Cluster()
    c = _consumer(cluster, group)
    try:
        if group:
            assert isinstance(c, GroupConsumer)
            c.subscribe(["t", "u"])
        else:
            c.assign([T0, U0])
            c.seek(T0, 900)
        assert _poll_until(c, bool), "t was not read"
        cluster.add_topic("u", 1)
        if group:
            assert isinstance(c, GroupConsumer)
            c.request_rejoin(c.generation, False)
        got = _poll_until(c, lambda got: any(g[:2] == U0 for g in got))
        assert next(o for t, p, o in got if (t, p) == U0) == 0, "u's records written before the consumer saw it were skipped"
    finally:
        c.close()


def test_an_assigned_group_consumer_that_read_the_old_topic_before_the_coordinator_answered_reads_the_new_one_from_its_log_start(
        ) -> None:
    """An assigned consumer of g reads t (id-t) from g's committed offset 900 by a broker's answer
    while the coordinator's is on its way; t is made again (nothing committed of it) before the
    coordinator answers. Its answer names the new t only, but the consumer read the old one: the
    new topic is newer than the reading, and starts at its log start, not at ``latest``."""
    cluster = _Cluster()
    cluster.copy = cluster.metadata
    cluster.held = []
    coordinator = _SubscribedTopics(cluster)
    c = _group_consumer(cluster, coordinator)
    try:
        c.assign([T0])
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        assert cluster.held, "the coordinator was not asked for metadata"
        _made_again(cluster, coordinator, NEW_ID)
        cluster.release()
        got = _poll_until(c, lambda got: any(o < 900 for _t, _p, o in got))
        assert next((o for _t, _p, o in got if o < 900), None) == 0, \
            f"positions {c.positions}: the new topic's records before the consumer noticed it were skipped"
    finally:
        c.close()


def test_none_does_not_raise_on_an_answer_to_metadata_asked_for_before_the_partition_began_waiting() -> None:
    """A member with ``none`` reads t-0 (id-t) from g's committed offset; a metadata request is on
    its way (its answer, held, names t as it was). t is made again and the group rebalances
    before the member's metadata names the new topic: t-0, nothing committed, waits for newer
    metadata, which shows it appeared while read (its log start). The answer to the request sent
    before it began waiting is not that: raised on it, ``none`` stopped the member."""
    cluster = _Cluster()
    coordinator = _GroupOfT(cluster)
    c = _group_consumer(cluster, coordinator, "none")
    try:
        c.subscribe(["t"])
        assert _poll_until(c, bool)[:1] == [("t", 0, 900)]
        cluster.held, cluster.held_answer = [], cluster.metadata
        c._refresh_metadata()  # a request on its way, as after a stall
        c.reactor.advance(1000)  # (sent once its backoff is over)
        assert cluster.held, "no metadata request went out"
        _made_again(cluster, coordinator, NEW_ID)
        _rebalance(c, coordinator)
        for _ in range(5):  # the rebalance: t-0 begins waiting
            c.poll(100)
        cluster.held_answer = None
        cluster.release()
        got = _poll_until(c, lambda got: any(o < 900 for _t, _p, o in got))
        assert next((o for _t, _p, o in got if o < 900), None) == 0
    except RemoteError as e:
        pytest.fail(f"none raised on metadata asked for before t-0 began waiting: {e}")
    finally:
        c.close()


def test_none_waits_for_the_coordinator_to_say_how_a_topic_was_when_the_reading_began() -> None:
    """A consumer with ``none`` reading t is assigned u-0 too, of a topic u that does not exist yet.
    Its next metadata answer is a broker's (the request before was refused, and a broker is asked
    next): it cannot tell whether u-0 is older than the reading, and the coordinator is asked. Raised
    then, ``none`` stopped the consumer for a partition that, once u is made, starts at its log start."""
    net, reactor = Net(), FakeReactor(ManualClock(1_000))
    c = Consumer(CF_BOOTSTRAP, clock=reactor.clock, reactor=reactor, client_factory=net.client, auto_offset_reset="none")
    try:
        c.assign([T0])
        c.seek(T0, 0)
        c.poll(0)
        net.answer_metadata(cf_metadata(1, {0: 1}))  # a broker's answer
        net.answer_metadata(cf_metadata(1, {0: 1}))  # the coordinator's: how t was
        c.poll(0)
        i, _ = net.fetch(1)
        net.answer_fetch(1, i, [(0, P.NOT_LEADER, -1)], [b""])  # metadata is asked for
        reactor.advance(1000)
        [(ep, i)] = net.open(P.METADATA)
        net.answer(ep, i, None, err=RemoteError(P.UNKNOWN_COMMAND, "refused"))  # the next goes to a broker
        c.assign([T0, U0])
        c.poll(0)
        reactor.advance(1000)
        [(ep, _)] = net.open(P.METADATA)
        assert ep == CF_BOOTSTRAP, "the scenario needs a broker's answer next"
        net.answer_metadata(cf_metadata(1, {0: 1}))
        for _ in range(3):
            c.poll(0)
        net.answer_metadata(cf_metadata(1, {0: 1}))  # the coordinator's: no u when the reading began
        c.poll(0)
        md = ClusterMetadata.from_wire(cf_metadata(2, {0: 1})["metadata"])  # u is made
        u = TopicInfo("u", (PartitionInfo("u", 0, 1, 1, (1,), (1,)),), {}, "id-u")
        reactor.advance(1000)
        c.poll(0)
        net.answer_metadata({"metadata": replace(md, topics={**md.topics, "u": u}).to_wire()})
        c.poll(0)
        asked = [s[1]["parts"] for s in net.clients[cf_endpoint(1)].sent if s[0] == P.LIST_OFFSETS]
        assert asked == [[["u", 0, EARLIEST]]], f"u-0 was asked {asked}"
    except RemoteError as e:
        pytest.fail(f"none raised before the coordinator said how u was when the reading began: {e}")
    finally:
        c.close()
