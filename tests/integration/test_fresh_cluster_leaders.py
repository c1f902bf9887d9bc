"""A topic made as soon as a cluster is started is led by its preferred replicas.

A started coordinator leads new partitions only by brokers it has heard (nodes/coordinator/topics.py
``place_partitions``); a broker answers PING before its registration lands (it retries every
200 ms while the coordinator is not up), so "every node answers PING" is not "ready". The
harness's ``start`` and ``loom up`` (nodes/launcher.py) wait until the coordinator has heard every
broker that runs. Here the brokers start first, so that their registrations are being retried
when the coordinator comes up: without that wait, the topic is led by the brokers heard first,
and the preferred-leader check moves leadership seconds later.

A topic made while the cluster is still starting all the same (a second terminal, a script that
does not wait for `loom up`, the gateway's auto-create) is led by the brokers heard then, with
those alone in its ISRs: a broker not heard has fetched nothing. Each joins through its leader's
ISR expansion once it has caught up, and the periodic preferred-leader check then moves the
partition to it. Moved earlier -- at the broker's first heartbeat, or by the check while the
broker was in the ISR by placement alone -- the new leader had an empty log, the old one
truncated to it, and the acks=1 records it had acknowledged were lost with no broker lost."""

from __future__ import annotations

from pathlib import Path

from fabric.client import Admin, Consumer, Producer
from tests.harness import Cluster, make_config, wait_until

BROKERS = ["broker-1", "broker-2", "broker-3"]
RECORDS = 20  # acks=1 records per partition taken while only broker 1 is heard


def test_a_topic_made_right_after_the_start_is_led_by_its_preferred_replicas(tmp_path: Path) -> None:
    c = Cluster(make_config(tmp_path))
    try:
        c.start(BROKERS)  # registering against a coordinator that is not up yet
        c.start(["coordinator"])
        assert c.stats("coordinator")["brokers_heard"] == [1, 2, 3]
        with Admin(c.bootstrap) as admin:
            admin.create_topic("t", 6, 3)
            parts = admin.metadata().topics["t"].partitions
            assert [p.leader for p in parts] == [p.replicas[0] for p in parts]
            assert {p.leader for p in parts} == {1, 2, 3}
            assert all(sorted(p.isr) == sorted(p.replicas) for p in parts)  # every broker heard: all in sync
    finally:
        c.stop_all()


def test_a_topic_made_while_the_cluster_starts_moves_to_its_preferred_replicas_once_they_caught_up(
        tmp_path: Path) -> None:
    """The periodic check runs every 100 ms here: it moves each partition to its preferred
    replica only once the leader has taken that replica into the ISR, so the acks=1 records
    broker 1 took while it was heard alone are all still there once the leaders are spread.
    acks=all records sent meanwhile are refused (not_enough_replicas: the ISR is below
    min.insync.replicas, 2) and sent again by the producer until the ISR has grown."""
    c = Cluster(make_config(tmp_path, overrides={"replication": {"preferred_leader_check_ms": 100}}))
    try:
        c.start(["coordinator", "broker-1"])  # the cluster is starting: broker 1 is heard, 2 and 3 are not yet
        with Admin(c.bootstrap) as admin:
            admin.create_topic("t", 3, 3)
            parts = admin.metadata().topics["t"].partitions
            assert [p.replicas[0] for p in parts] == [1, 2, 3]  # spread preferred replicas...
            assert [(p.leader, list(p.isr)) for p in parts] == [(1, [1])] * 3  # ...led by the only broker heard, alone in sync
            values = _produce(c.bootstrap)
            with Producer(c.bootstrap, acks="all", linger_ms=1) as producer:
                futures = [producer.send("t", b"all-%d" % p, partition=p) for p in range(3)]
                c.start(["broker-2", "broker-3"], wait=False)
                c.wait_heard(["broker-2", "broker-3"])
                producer.flush(30)
                assert [f.result(timeout=0).offset for f in futures] == [RECORDS] * 3
            wait_until(lambda: [p.leader for p in admin.metadata().topics["t"].partitions] == [1, 2, 3], 30,
                       what="each partition led by its preferred replica")
            c.wait_topic_ready(admin, "t")  # and the brokers lead what the metadata says
            ends = admin.list_offsets("t")
            assert {p: _read_all(c.bootstrap, p, ends[p]) for p in range(3)} == \
                {p: vs + [b"all-%d" % p] for p, vs in values.items()}
    finally:
        c.stop_all()


def test_records_acknowledged_while_the_cluster_starts_survive_the_move_to_the_preferred_replicas(tmp_path: Path) -> None:
    """acks=1 records broker 1 took while it led every partition of a topic made as the cluster
    started are still in each partition's log once brokers 2 and 3 are heard and have settled:
    docs/replication.md promises that leadership moves only to a replica that has caught up to
    the high watermark, and with broker 1 alone in the ISR every record it acknowledged is below
    it; no broker was lost here. A preferred-leader move to a broker that has not fetched them
    truncated them away (partitions 1 and 2 empty)."""
    c = Cluster(make_config(tmp_path, overrides={"replication": {"preferred_leader_check_ms": 60_000}}))
    try:
        c.start(["coordinator", "broker-1"])
        with Admin(c.bootstrap) as admin:
            admin.create_topic("t", 3, 3)
            assert [p.leader for p in admin.metadata().topics["t"].partitions] == [1, 1, 1]
            values = _produce(c.bootstrap)
            c.start(["broker-2", "broker-3"], wait=False)
            c.wait_heard(["broker-2", "broker-3"])
            c.wait_topic_ready(admin, "t")
            wait_until(lambda: all(len(p.isr) == 3 for p in admin.metadata().topics["t"].partitions), 30,
                       what="every replica in sync")
            ends = admin.list_offsets("t")
            assert {p: _read_all(c.bootstrap, p, ends[p]) for p in range(3)} == values
    finally:
        c.stop_all()


def _produce(bootstrap: str) -> dict[int, list[bytes]]:
    """``RECORDS`` acks=1 records to each partition of ``t``, all acknowledged; their values."""
    values = {p: [b"p%d-%d" % (p, i) for i in range(RECORDS)] for p in range(3)}
    with Producer(bootstrap, acks=1, linger_ms=1) as producer:
        futures = [producer.send("t", v, partition=p) for p, vs in values.items() for v in vs]
        producer.flush(30)
        for f in futures:
            f.result(timeout=0)  # acknowledged by broker 1, the leader of all three
    return values


def _read_all(bootstrap: str, partition: int, end: int) -> list[bytes]:
    """The values of ``t``-``partition`` from offset 0 to ``end`` (its high watermark)."""
    got: list[bytes] = []
    with Consumer(bootstrap) as consumer:
        consumer.assign([("t", partition)])
        consumer.seek(("t", partition), 0)
        wait_until(lambda: got.extend(r.value for r in consumer.poll(200)) or len(got) >= end, 30,
                   interval_s=0.01, what=f"t-{partition} read to its end")
    return got
