"""A topic deleted and re-created with the same name is another topic (matched by id).

Broker 3 misses both the delete and the re-create (it drops the coordinator's traffic) and
still holds the old topic's replicas when it hears of the new topic, in which it leads one
partition: it must delete the old replicas (their topic id was deleted explicitly), start the
new ones empty, and never serve (or replicate) the old records as the new topic's. A broker
that was down at the delete deletes the old replica when it returns."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.client import Admin, Producer

pytestmark = pytest.mark.timeout(90)

TOPIC = "again"
PARTITIONS = 3


def _produce(bootstrap: str, tag: bytes) -> None:
    with Producer(bootstrap, acks="all") as p:
        for i in range(30):
            p.send(TOPIC, tag + b"-%d" % i, partition=i % PARTITIONS)
        p.flush(30)


def test_a_recreated_topic_never_serves_the_old_topics_records(cluster_factory) -> None:
    c = cluster_factory(3, overrides={"faults": {"enabled": True}})
    admin = Admin(c.bootstrap)
    try:
        admin.create_topic(TOPIC, PARTITIONS, 3)
        c.wait_topic_ready(admin, TOPIC)
        _produce(c.bootstrap, b"old")
        old_id = admin.metadata().topics[TOPIC].topic_id
        c.call("broker-3", P.FAULTS, {"block": ["coordinator"]})  # it hears nothing of what follows
        admin.delete_topic(TOPIC)
        admin.create_topic(TOPIC, PARTITIONS, 3)
        assert admin.metadata().topics[TOPIC].topic_id != old_id
        c.call("broker-3", P.FAULTS, {"block": []})
        c.wait_topic_ready(admin, TOPIC, timeout_s=30)
        assert admin.list_offsets(TOPIC) == {p: 0 for p in range(PARTITIONS)}, "old records served as the new topic's"
        rows = [r for b in c.broker_names() for r in c.stats(b)["partitions"] if r["topic"] == TOPIC]
        assert rows and all(r["log_end_offset"] == 0 for r in rows), rows
        data = Path(c.raw["cluster"]["data_dir"])
        assert not list(data.glob("broker-*/*.stray")), "explicitly deleted: nothing to set aside"
    finally:
        admin.close()
