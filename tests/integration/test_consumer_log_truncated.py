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

So too where the follower held none of the records (a0..a9 not written): its whole log is written
after the election, in epochs newer than any the consumer read, and parts from it at its start."""

from __future__ import annotations

from typing import Callable

import pytest

from fabric.client import Admin, Consumer, Producer
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.timeout(240)

TOPIC = "truncated"


def _produce(bootstrap: str, values: list[bytes], acks: str | int = "all") -> None:
    with Producer(bootstrap, acks=acks, linger_ms=1) as p:
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


@pytest.mark.parametrize("held,written", [(10, 5), (0, 30)], ids=["truncated", "held_none"])
def test_a_consumer_reads_what_a_new_leader_wrote_after_an_unclean_election_truncated_its_log(
        cluster_factory: Callable[..., Cluster], held: int, written: int) -> None:
    """``held``: the records a0.. both replicas hold before the follower stops; ``written``: the
    records c0.. the new leader takes at its log end. Where it held none (its whole log written
    after the election, in epochs newer than any the consumer read), the consumer, answered no
    place where the logs part, read on from its position 20 (c20..c29) and never read c0..c19."""
    cluster = cluster_factory(2, overrides={"replication": {"unclean_leader_election": True},
                                            "topics": {"min_insync_replicas": 1}})
    with Admin(cluster.bootstrap) as admin:
        a = [b"a%d" % i for i in range(held)]
        leader, follower = _replicated(cluster, admin, a)
        cluster.stop(f"broker-{follower}")
        wait_until(lambda: tuple(admin.metadata().partition(TOPIC, 0).isr) == (leader,), 30,
                   what="the stopped follower to leave the ISR")
        b = [b"b%d" % i for i in range(20)]
        _produce(cluster.bootstrap, b)

        with Consumer(cluster.bootstrap, auto_offset_reset="latest") as c:
            c.assign([(TOPIC, 0)])
            c.seek((TOPIC, 0), 0)
            got = _read(c, lambda got: len(got) >= held + 20, "the consumer to read the a and b records")
            assert [r.value for r in got] == a + b
            assert c.position((TOPIC, 0)) == held + 20

            cluster.kill(f"broker-{leader}")
            cluster.start_node(f"broker-{follower}")
            wait_until(lambda: admin.metadata().partition(TOPIC, 0).leader == follower, 60,
                       what="the follower to be elected (uncleanly)")
            _produce(cluster.bootstrap, [b"c%d" % i for i in range(written)])  # from its log end, ``held``

            last = b"c%d" % (written - 1)
            got = _read(c, lambda got: any(r.value == last for r in got), "the consumer to read the c records")
            assert [(r.offset, r.value) for r in got] == [(held + i, b"c%d" % i) for i in range(written)]


def _log_end(cluster: Cluster, broker: int) -> list[int]:
    return [r["log_end_offset"] for r in cluster.stats(f"broker-{broker}")["partitions"] if r["topic"] == TOPIC]


def _replicated(cluster: Cluster, admin: Admin, values: list[bytes]) -> tuple[int, int]:
    """TOPIC made (one partition, two replicas) and ``values`` written to it, on both replicas:
    (its leader, its follower)."""
    admin.create_topic(TOPIC, 1, replication_factor=2)
    cluster.wait_topic_ready(admin, TOPIC)
    if values:
        _produce(cluster.bootstrap, values)
    part = admin.metadata().partition(TOPIC, 0)
    leader, follower = part.leader, next(r for r in part.replicas if r != part.leader)
    wait_until(lambda: _log_end(cluster, follower) == [len(values)], 20,
               what=f"the follower to hold {len(values)} records")
    return leader, follower


def test_a_consumer_that_read_an_epoch_the_new_leader_never_had_reads_from_where_it_began(
        cluster_factory: Callable[..., Cluster]) -> None:
    """Both replicas hold a0..a9 (epoch e1); the follower B is stopped and the leader A takes
    x0..x4 (10..14, acks=1: acknowledged). A is killed and B, started again, is elected (e2) with
    its log ending at 10: it takes b0..b9 there, which the consumer reads (position 20, having
    begun epoch e2 at 10). B is killed and A, started again (it never followed B), is elected
    uncleanly (e3) and takes c0..c4 at 15..19. A never had e2: it answers the end of e1 in its
    log, 15, above where the consumer began reading e2. The logs part at 10: the consumer reads
    x0..x4 and c0..c4. Moved back only to 15, it skipped x0..x4, acknowledged and in the final
    log."""
    cluster = cluster_factory(2, overrides={"replication": {"unclean_leader_election": True},
                                            "topics": {"min_insync_replicas": 1}})
    with Admin(cluster.bootstrap) as admin:
        a_log = [b"a%d" % i for i in range(10)]
        a, b = _replicated(cluster, admin, a_log)
        cluster.stop(f"broker-{b}")
        x_values = [b"x%d" % i for i in range(5)]
        _produce(cluster.bootstrap, x_values, acks=1)
        a_log += x_values
        cluster.kill(f"broker-{a}")
        cluster.start_node(f"broker-{b}")
        wait_until(lambda: admin.metadata().partition(TOPIC, 0).leader == b, 60, what="B to be elected")
        [held] = _log_end(cluster, b)
        assert held == 10, f"B's log ends at {held}, not at a0..a9's end"
        b_values = [b"b%d" % i for i in range(10)]
        _produce(cluster.bootstrap, b_values)  # offsets held.. of B's log

        with Consumer(cluster.bootstrap, auto_offset_reset="latest") as c:
            c.assign([(TOPIC, 0)])
            c.seek((TOPIC, 0), 0)
            got = _read(c, lambda got: len(got) >= held + 10, "the consumer to read B's log")
            assert [r.value for r in got] == a_log[:held] + b_values

            cluster.kill(f"broker-{b}")
            cluster.start_node(f"broker-{a}")
            wait_until(lambda: admin.metadata().partition(TOPIC, 0).leader == a, 60,
                       what="A to be elected (uncleanly)")
            c_values = [b"c%d" % i for i in range(5)]
            _produce(cluster.bootstrap, c_values)  # offsets 15..19 of A's log
            a_log += c_values

            got = _read(c, lambda got: any(r.value == b"c4" for r in got), "the consumer to read c4")
            assert [(r.offset, r.value) for r in got] == list(enumerate(a_log))[held:]
