"""A consumer whose partition's log an unclean election truncated under its position, on a real
cluster: it reads the records the new leader writes from the truncation point on.

Two brokers, unclean leader election on, min.insync.replicas 1. Records a0..a9 reach both
replicas; the follower stops, leaves the ISR, and the leader takes b0..b19 (offsets 10..29),
which the consumer reads (position 30). The leader is SIGKILLed and the follower started again:
elected uncleanly, its log ends at 10, and the producer writes c0..c4 there (offsets 10..14)
while the consumer is not polling. The consumer's next fetch names the epoch of the last record
it read; the new leader answers where its log parts from it (10), and the consumer reads c0..c4.
Reset by ``auto_offset_reset`` ``latest`` instead -- an out-of-range position -- it went to 15,
past them, and never read them.

So too where the follower held none of the records the consumer read: its whole log is written
after the election, in an epoch newer than any the consumer read, and parts from the one read at
its start."""

from __future__ import annotations

from typing import Callable

import pytest

from fabric.client import Admin, Consumer, Producer
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.timeout(240)

TOPIC = "truncated"


def _produce(bootstrap: str, values: list[bytes]) -> None:
    with Producer(bootstrap, acks="all", linger_ms=1) as p:
        futures = [p.send(TOPIC, v, partition=0) for v in values]
        p.flush(60)
        for f in futures:
            f.result(timeout=0)


def _read(c: Consumer, until: Callable[[list], bool], what: str) -> list:
    got: list = []

    def done() -> bool:
        got.extend(c.poll(200))
        return until(got)
    wait_until(done, 60, interval_s=0.01, what=what)
    return got


def _unclean(cluster_factory: Callable[..., Cluster]) -> Cluster:
    return cluster_factory(2, overrides={"replication": {"unclean_leader_election": True},
                                         "topics": {"min_insync_replicas": 1}})


def test_a_consumer_reads_what_a_new_leader_wrote_after_an_unclean_election_truncated_its_log(
        cluster_factory: Callable[..., Cluster]) -> None:
    cluster = _unclean(cluster_factory)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(TOPIC, 1, replication_factor=2)
        cluster.wait_topic_ready(admin, TOPIC)
        _produce(cluster.bootstrap, [b"a%d" % i for i in range(10)])
        part = admin.metadata().partition(TOPIC, 0)
        leader, follower = part.leader, next(r for r in part.replicas if r != part.leader)
        wait_until(lambda: [r["log_end_offset"] for r in cluster.stats(f"broker-{follower}")["partitions"]
                            if r["topic"] == TOPIC] == [10], 20, what="the follower to hold a0..a9")
        cluster.stop(f"broker-{follower}")
        wait_until(lambda: tuple(admin.metadata().partition(TOPIC, 0).isr) == (leader,), 30,
                   what="the stopped follower to leave the ISR")
        _produce(cluster.bootstrap, [b"b%d" % i for i in range(20)])

        with Consumer(cluster.bootstrap, auto_offset_reset="latest") as c:
            c.assign([(TOPIC, 0)])
            c.seek((TOPIC, 0), 0)
            got = _read(c, lambda got: len(got) >= 30, "the consumer to read a0..a9 and b0..b19")
            assert [r.value for r in got] == [b"a%d" % i for i in range(10)] + [b"b%d" % i for i in range(20)]
            assert c.position((TOPIC, 0)) == 30

            cluster.kill(f"broker-{leader}")
            cluster.start_node(f"broker-{follower}")
            wait_until(lambda: admin.metadata().partition(TOPIC, 0).leader == follower, 60,
                       what="the follower to be elected (uncleanly)")
            _produce(cluster.bootstrap, [b"c%d" % i for i in range(5)])  # offsets 10..14 of its log

            got = _read(c, lambda got: len(got) >= 5, "the consumer to read c0..c4, written after the truncation")
            assert [(r.offset, r.value) for r in got] == [(10 + i, b"c%d" % i) for i in range(5)]


def test_a_consumer_reads_a_new_leaders_whole_log_when_it_held_none_of_the_records_read(
        cluster_factory: Callable[..., Cluster]) -> None:
    """The follower stops before the first record: the leader alone takes b0..b19, which the
    consumer reads (position 20, epoch e). Elected uncleanly, the follower's log is empty, and
    c0..c29 are written there (offsets 0..29). Its epochs are all newer than e: answered no place
    to part from, the consumer read on from 20 (c20..c29), never reading c0..c19."""
    cluster = _unclean(cluster_factory)
    with Admin(cluster.bootstrap) as admin:
        admin.create_topic(TOPIC, 1, replication_factor=2)
        cluster.wait_topic_ready(admin, TOPIC)
        part = admin.metadata().partition(TOPIC, 0)
        leader, follower = part.leader, next(r for r in part.replicas if r != part.leader)
        cluster.stop(f"broker-{follower}")
        wait_until(lambda: tuple(admin.metadata().partition(TOPIC, 0).isr) == (leader,), 30,
                   what="the stopped follower to leave the ISR")
        _produce(cluster.bootstrap, [b"b%d" % i for i in range(20)])

        with Consumer(cluster.bootstrap, auto_offset_reset="latest") as c:
            c.assign([(TOPIC, 0)])
            c.seek((TOPIC, 0), 0)
            got = _read(c, lambda got: len(got) >= 20, "the consumer to read b0..b19")
            assert [r.value for r in got] == [b"b%d" % i for i in range(20)]

            cluster.kill(f"broker-{leader}")
            cluster.start_node(f"broker-{follower}")
            wait_until(lambda: admin.metadata().partition(TOPIC, 0).leader == follower, 60,
                       what="the follower to be elected (uncleanly)")
            _produce(cluster.bootstrap, [b"c%d" % i for i in range(30)])  # offsets 0..29 of its log

            got = _read(c, lambda got: len(got) >= 30 or any(r.value == b"c29" for r in got),
                        "the consumer to read up to c29")
            assert [(r.offset, r.value) for r in got] == [(i, b"c%d" % i) for i in range(30)]
