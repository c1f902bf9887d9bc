"""A broker forgets a deleted topic's metrics: its per-topic counters (records and bytes in and
out) go with the topic's last partition here.

They stayed for good: every topic a broker had ever led or served kept four series in its
registry, in every STATS reply the monitor takes each second and in the monitor's exposition
and history -- and past ``SERIES_PER_METRIC_MAX`` topic names ever written, a new topic's
counters were dropped (Kafka removes a topic's broker metrics with the topic)."""

from __future__ import annotations

import pytest

from fabric.client import Admin, Consumer, Producer
from fabric.metrics import decode_samples
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(60)

TOPICS = 10
TOPIC_METRICS = {"loom_broker_records_in_total", "loom_broker_bytes_in_total", "loom_broker_records_out_total",
                 "loom_broker_bytes_out_total"}


def topics_counted(cluster, broker: str) -> set[str]:
    """The topics the broker's per-topic counters name."""
    return {s.labels[0] for s in decode_samples(cluster.stats(broker).get("metrics")) if s.name in TOPIC_METRICS}


def write_and_read(bootstrap: str, topic: str) -> None:
    with Producer(bootstrap, acks="all") as p:
        p.send(topic, b"v", partition=0).result(20)
    with Consumer(bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, 0)])
        wait_until(lambda: c.poll(timeout_ms=200), 10, what=f"a record of {topic}")


def test_a_deleted_topics_counters_go_with_it(cluster_factory) -> None:
    c = cluster_factory(1)
    with Admin(c.bootstrap) as admin:
        admin.create_topic("kept", partitions=1, replication_factor=1)
        c.wait_topic_ready(admin, "kept")
        write_and_read(c.bootstrap, "kept")
        gone = [f"gone-{i}" for i in range(TOPICS)]
        for name in gone:
            admin.create_topic(name, partitions=1, replication_factor=1)
            c.wait_topic_ready(admin, name)
            write_and_read(c.bootstrap, name)
        assert set(gone) <= topics_counted(c, "broker-1")
        for name in gone:
            admin.delete_topic(name)
        wait_until(lambda: not set(gone) & topics_counted(c, "broker-1"), 10,
                   what=f"broker-1 to forget the deleted topics' counters (it counts {sorted(topics_counted(c, 'broker-1'))})")
        assert "kept" in topics_counted(c, "broker-1"), "a live topic's counters stay"
