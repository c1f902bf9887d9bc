"""A REST consumer instance assigned partitions of a topic it reads (``POST …/assignments``): a new
one with nothing committed starts where the consumer starts a partition with nothing to start
from -- its log start when it appeared while the instance read its topic, else
``auto.offset.reset`` -- as a client consumer's ``assign`` does. The instance sought such a
partition to the log end itself (``latest``), skipping every record written to a partition added
while it read the topic.

The consumer service's ``Instance`` on the fake broker of
tests/unit/test_partitions_newer_than_the_reading.py (log end 1000: ``latest`` starts at 1000).
"""

from __future__ import annotations

import pytest

from nodes.consumer_instance import Instance, InstanceHost
from tests.unit.builders_group_consumer import LOG_END_OFFSET, T0, consumer_config, serve
from tests.unit.fakes import ScriptedCoordinatorLink
from tests.unit.test_partitions_newer_than_the_reading import (T1, _GroupOfT, _GroupThatJudges, _GrowingBroker,
                                                                _LongPollReactor)


def _assigned_instance(policy: str, partitions: int = 1, newer: dict | None = None) -> tuple[Instance, _GrowingBroker]:
    """An instance of group g (``auto.offset.reset`` ``policy``) assigned t-0 of t (``partitions``
    partitions), read from g's committed offset 900; ``newer``: what the coordinator's OFFSET_FETCH
    answers name newer than the group's reading (None: nothing, as an older coordinator)."""
    broker = _GrowingBroker(partitions)
    coordinator = _GroupOfT(broker) if newer is None else _GroupThatJudges(broker, newer)
    coordinator.committed[T0] = 900
    config = consumer_config(broker, _LongPollReactor(broker), ScriptedCoordinatorLink(coordinator),
                             auto_offset_reset=policy)
    instance = Instance(InstanceHost("consumer-1", ["127.0.0.1:1"], 60_000, lambda e: None), "g", "rest-1", config, 0)
    serve(instance, "create")
    serve(instance, "assign", partitions=[list(T0)])
    return instance, broker


def _first_offsets(instance: Instance, fetches: int = 30) -> dict[tuple[str, int], int]:
    """The first offset fetched of each partition, over up to ``fetches`` fetches."""
    first: dict[tuple[str, int], int] = {}
    for _ in range(fetches):
        for r in serve(instance, "fetch", timeout_ms=1000, max_records=10)["records"]:
            first.setdefault((r.topic, r.partition), r.offset)
        if T1 in first:
            break
    return first


@pytest.mark.parametrize("policy", ["latest", "earliest"])
def test_a_partition_added_while_the_instance_read_its_topic_and_then_assigned_starts_at_its_log_start(
        policy: str) -> None:
    instance, broker = _assigned_instance(policy)
    try:
        assert _first_offsets(instance).get(T0) == 900
        broker.add_partitions(1)  # t-1: 1000 records before the client assigns it
        serve(instance, "assign", partitions=[list(T0), list(T1)])
        assert _first_offsets(instance).get(T1) == 0, f"t-1's records written before the assign were skipped ({policy})"
    finally:
        instance.consumer.close()


def test_a_partition_there_when_the_instance_began_reading_starts_by_the_policy() -> None:
    """The other side: t-1 there from the start, assigned later with nothing committed: ``latest``."""
    instance, _ = _assigned_instance("latest", partitions=2)
    try:
        assert _first_offsets(instance).get(T0) == 900
        serve(instance, "assign", partitions=[list(T0), list(T1)])
        for _ in range(20):
            if instance.consumer.position(T1) is not None:
                break
            serve(instance, "fetch", timeout_ms=100, max_records=10)
        assert instance.consumer.position(T1) == LOG_END_OFFSET
    finally:
        instance.consumer.close()


def test_a_new_instance_assigned_a_partition_newer_than_the_groups_reading_starts_at_its_log_start() -> None:
    """The instance (a new one: t had both partitions when it began reading) is assigned t-1,
    which the coordinator says was made after the group began reading t: its log start, not
    ``latest`` -- another consumer of the group read t before t-1 was made."""
    instance, _ = _assigned_instance("latest", partitions=2, newer={"t": [1]})
    try:
        assert _first_offsets(instance).get(T0) == 900
        serve(instance, "assign", partitions=[list(T0), list(T1)])
        assert _first_offsets(instance).get(T1) == 0, "t-1's records written before the assign were skipped"
    finally:
        instance.consumer.close()
