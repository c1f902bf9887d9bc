"""The batch APIs end to end on real processes (three brokers, acks=all): records queued with
``Producer.send_many`` come back through ``Consumer.poll`` and ``GroupConsumer.poll_batch``
exactly once, keyed ones on the partition ``send`` picks, in order per partition, at the
offsets the producer was told; a group of one that reads with ``poll_batch`` commits the end
of every partition."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest

from fabric.client import Admin, Consumer, GroupConsumer, Producer
from fabric.records import partition_for_key
from tests.harness import Cluster

pytestmark = pytest.mark.timeout(90)
PARTITIONS = 3


CLUSTER_OPTIONS: dict = {}  # one 3-broker cluster for the module (tests/conftest.py)


def _topic(cluster: Cluster, name: str) -> str:
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(name, partitions=PARTITIONS, replication_factor=3)
        cluster.wait_topic_ready(admin, name)
    return name


def test_send_many_records_come_back_once_in_order_where_send_puts_them(cluster: Cluster) -> None:
    topic = _topic(cluster, "many-keyed")
    keys = [b"key-%d" % (i % 37) for i in range(3000)]
    values = [b"value-%05d" % i for i in range(3000)]
    with Producer(cluster.bootstrap, acks="all", batch_records_max=200) as p:
        keyed = p.send_many(topic, values, keys=keys)
        keyless = p.send_many(topic, [b"plain-%05d" % i for i in range(2000)])
        p.flush(timeout=60)
    told = keyed.result(0) + keyless.result(0)
    assert [md.partition for md in keyed.result(0)] == [partition_for_key(k, PARTITIONS) for k in keys]
    with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in range(PARTITIONS)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < 5000 and time.monotonic() < deadline:
            got += c.poll(timeout_ms=500)
    at = {(r.partition, r.offset): r.value for r in got}
    assert len(got) == len(at) == 5000
    sent = values + [b"plain-%05d" % i for i in range(2000)]
    assert [at[(md.partition, md.offset)] for md in told] == sent  # each where the producer was told
    per_partition = defaultdict(list)
    for r in got:
        per_partition[r.partition].append(r.value)
    for p, vals in per_partition.items():  # order per partition is the order given
        assert vals == [v for v, md in zip(sent, told) if md.partition == p]


def test_a_group_of_one_reads_views_and_commits_the_end_of_every_partition(cluster: Cluster) -> None:
    topic = _topic(cluster, "many-views")
    with Producer(cluster.bootstrap, acks="all") as p:
        ends = {}
        for md in p.send_many(topic, [b"r%06d" % i for i in range(20_000)]).result(60):
            ends[md.partition] = md.offset + 1
    c = GroupConsumer(cluster.bootstrap, group_id="views", auto_offset_reset="earliest", enable_auto_commit=False)
    try:
        c.subscribe([topic])
        seen: dict[int, list[int]] = defaultdict(list)
        values = []
        deadline = time.monotonic() + 40
        while sum(map(len, seen.values())) < 20_000 and time.monotonic() < deadline:
            for view in c.poll_batch(timeout_ms=500, max_records=3000):
                assert len(view) <= 3000
                seen[view.partition] += list(view.offsets)
                values += view.values
        c.commit()
        assert sorted(values) == [b"r%06d" % i for i in range(20_000)]
        for p, offsets in seen.items():
            assert offsets == list(range(ends[p])), f"partition {p}: offsets not contiguous from 0"
            assert c.committed((topic, p)) == ends[p]
    finally:
        c.close()
