"""The cluster core end to end, on real processes: three brokers and a coordinator on loopback.

Keyed records go through the client library (acks=all) and come back through a consumer:
each exactly once, on the partition their key maps to, in order per partition, at the offset
the producer was told. Then every node is stopped (SIGTERM; and SIGKILL under fsync
``always``) and started again: topics, placement and every acknowledged record survive.
"""

from __future__ import annotations

import signal
import time
from collections import defaultdict

import pytest

from fabric.client import Admin, Consumer, Producer
from fabric.records import Record, partition_for_key
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.timeout(120)

KEYS = 500
PARTITIONS = 3


def _produce_keyed(bootstrap: str, topic: str, count: int, *, start: int = 0) -> dict[tuple[int, int], tuple[bytes, int]]:
    """Send ``count`` keyed records (acks=all) and wait for every ack. Returns
    (partition, offset) -> (key, per-key sequence) as the producer was told."""
    futures = []
    with Producer(bootstrap, acks="all", linger_ms=5, request_timeout_ms=10_000) as p:
        for i in range(start, start + count):
            key = b"key-%d" % (i % KEYS)
            seq = i // KEYS
            futures.append((key, seq, p.send(topic, b"%s:%d" % (key, seq), key=key)))
        p.flush(timeout=90)
    acked = {}
    for key, seq, f in futures:
        md = f.result(timeout=0)
        assert (md.partition, md.offset) not in acked, f"two records acknowledged at {md}"
        acked[(md.partition, md.offset)] = (key, seq)
    return acked


def _consume_all(bootstrap: str, topic: str, expected: int, timeout_s: float = 60.0) -> list[Record]:
    """Every record from the earliest offset of every partition; bounded in time."""
    out: list[Record] = []
    with Consumer(bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in range(PARTITIONS)])
        deadline = time.monotonic() + timeout_s
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(c.poll(timeout_ms=500))
        out.extend(c.poll(timeout_ms=300))  # anything beyond what was sent would show here
    return out


def _check(records: list[Record], acked: dict[tuple[int, int], tuple[bytes, int]]) -> None:
    assert len(records) == len(acked), f"consumed {len(records)} records, {len(acked)} were acknowledged"
    seen: dict[tuple[int, int], tuple[bytes, int]] = {}
    last_offset: dict[int, int] = defaultdict(lambda: -1)
    last_seq: dict[bytes, int] = defaultdict(lambda: -1)
    for r in records:
        key, _, seq = r.value.partition(b":")
        assert key == r.key
        assert r.partition == partition_for_key(r.key, PARTITIONS), f"{r.key!r} on partition {r.partition}"
        assert r.offset == last_offset[r.partition] + 1, f"partition {r.partition}: offset {r.offset} after {last_offset[r.partition]}"
        last_offset[r.partition] = r.offset
        assert int(seq) > last_seq[r.key], f"{r.key!r}: sequence {int(seq)} after {last_seq[r.key]}"
        last_seq[r.key] = int(seq)
        seen[(r.partition, r.offset)] = (r.key, int(seq))
    assert seen == acked  # each record exactly once, where the producer was told it is


def _placement(admin: Admin, topic: str) -> list[tuple[int, ...]]:
    return [p.replicas for p in admin.metadata().topics[topic].partitions]


def _create(cluster: Cluster, topic: str) -> Admin:
    admin = Admin(cluster.bootstrap)
    admin.create_topic(topic, partitions=PARTITIONS, replication_factor=3)
    cluster.wait_topic_ready(admin, topic)
    return admin


def test_hundred_thousand_keyed_records_round_trip(cluster_factory) -> None:
    cluster = cluster_factory(3)
    admin = _create(cluster, "orders")
    try:
        acked = _produce_keyed(cluster.bootstrap, "orders", 100_000)
        hw = admin.list_offsets("orders")
        assert sum(hw.values()) == 100_000  # nothing written twice
        assert all(hw.values()), "every partition got records"
        _check(_consume_all(cluster.bootstrap, "orders", 100_000), acked)
        # every replica holds the same log end as its leader once replication settles
        def replicas_equal() -> bool:
            ends = defaultdict(set)
            for name in cluster.broker_names():
                for p in cluster.stats(name)["partitions"]:
                    if p["topic"] == "orders":
                        ends[p["partition"]].add(p["log_end_offset"])
            return all(len(v) == 1 for v in ends.values()) and len(ends) == PARTITIONS
        wait_until(replicas_equal, 20, what="replicas to reach the leader's log end")
    finally:
        admin.close()


@pytest.mark.parametrize("sig, fsync", [(signal.SIGTERM, "interval"), (signal.SIGKILL, "always")],
                         ids=["sigterm", "sigkill-fsync-always"])
def test_full_restart_keeps_topics_placement_and_records(cluster_factory, sig: int, fsync: str) -> None:
    cluster = cluster_factory(3, fsync=fsync)
    admin = _create(cluster, "ledger")
    admin.create_topic("other", partitions=2, replication_factor=2, configs={"retention.ms": 3_600_000})
    cluster.wait_topic_ready(admin, "other")
    try:
        count = 20_000 if fsync == "always" else 30_000
        acked = _produce_keyed(cluster.bootstrap, "ledger", count)
        before = {t: _placement(admin, t) for t in ("ledger", "other")}
        configs_before = admin.metadata().topics["other"].configs
        for name in cluster.node_names:  # every node at once: no orderly hand-over
            cluster.kill(name, sig)
        assert all(p.poll() is not None for p in cluster.procs.values())
        cluster.start()
        cluster.wait_topic_ready(admin, "ledger", timeout_s=30)
        assert sorted(admin.list_topics()) == ["ledger", "other"]
        assert {t: _placement(admin, t) for t in ("ledger", "other")} == before
        assert admin.metadata().topics["other"].configs == configs_before
        _check(_consume_all(cluster.bootstrap, "ledger", count), acked)
        # and the restarted cluster takes new writes after the old ones, with no offset reused
        more = _produce_keyed(cluster.bootstrap, "ledger", 3_000, start=count)
        assert not set(more) & set(acked)
        _check(_consume_all(cluster.bootstrap, "ledger", count + 3_000), {**acked, **more})
    finally:
        admin.close()
