"""A topic deleted and re-created with the same name is another topic (matched by id).

Broker 3 misses both the delete and the re-create (it drops the coordinator's traffic) and
still holds the old topic's replicas when it hears of the new topic, in which it leads one
partition: it must delete the old replicas (their topic id was deleted explicitly), start the
new ones empty, and never serve (or replicate) the old records as the new topic's. A broker
that was down at the delete deletes the old replica when it returns.

A producer that sends right after the topic was re-created with fewer partitions -- a
long-lived library ``Producer``, or the producer service the gateway uses -- may still pick a
partition from the old topic's metadata: the record fails at once with
``unknown_topic_or_partition`` once fresh metadata shows the partition gone (it used to be
retried for the whole delivery timeout), and the sends after it go to partitions that exist.

A group member's commit of a position it read in the old topic is refused (``unknown_topic_id``)
instead of becoming the new topic's committed offset."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.client import Admin, Consumer, Producer
from fabric.client.group import CommitFailed, GroupConsumer
from fabric.client.group_admin import GroupAdmin
from fabric.client.producer import RecordFuture
from fabric.client.services import ServiceProducer, ServiceRecord
from fabric.errors import FabricError, UnknownTopicOrPartitionError
from fabric.records import partition_for_key

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


SHRUNK = "shrunk"
# short, so that a record retried to its delivery timeout fails the test instead of holding it;
# long enough for the new topic's leader election on a loaded machine (partition 0's records wait for it)
DELIVERY_TIMEOUT_MS = 20_000
PROMPT_S = 6.0  # well below the delivery timeout: a record for a gone partition fails by then
# the producer service's answer waits for partition 0's records too (the new topic's election);
# a regression answers after the service's own 30 s delivery timeout, after this client gave up
SERVICE_PROMPT_S = 15.0
SERVICE_CALL_TIMEOUT_MS = 25_000
KEYS = [b"k-%d" % i for i in range(12)]  # under 3 partitions, some hash to each


def _recreate_with_one_partition(admin: Admin) -> None:
    old_id = admin.metadata().topics[SHRUNK].topic_id
    admin.delete_topic(SHRUNK)
    admin.create_topic(SHRUNK, 1, 3)
    assert admin.metadata().topics[SHRUNK].topic_id != old_id


def _outcome(future: RecordFuture, deadline: float) -> tuple[int, Exception | None]:
    """(partition, None) when delivered, else (the partition it was queued for, the error)."""
    try:
        return future.result(max(0.0, deadline - time.monotonic())).partition, None
    except FabricError as e:  # the test judges which
        return future.partition, e


def test_a_long_lived_producer_fails_records_of_a_gone_partition_at_once(cluster_factory) -> None:  # noqa: ANN001
    c = cluster_factory(3)
    admin = Admin(c.bootstrap)
    p = Producer(c.bootstrap, acks="all", delivery_timeout_ms=DELIVERY_TIMEOUT_MS)
    try:
        admin.create_topic(SHRUNK, 3, 3)
        c.wait_topic_ready(admin, SHRUNK)
        assert {partition_for_key(k, 3) for k in KEYS} == {0, 1, 2}
        for k in KEYS:  # the producer knows the 3-partition topic
            p.send(SHRUNK, b"old", key=k).result(10)
        p.send(SHRUNK, b"old").result(10)
        _recreate_with_one_partition(admin)
        started = time.monotonic()
        futures = [p.send(SHRUNK, b"new", key=k) for k in KEYS] + [p.send(SHRUNK, b"new") for _ in range(3)]
        deadline = started + DELIVERY_TIMEOUT_MS / 1000 + 5
        for f in futures:  # those of a gone partition first: partition 0's wait for the new topic's leader
            if f.partition != 0:
                _outcome(f, deadline)
        elapsed = time.monotonic() - started
        outcomes = [_outcome(f, deadline) for f in futures]
        for partition, error in outcomes:
            if partition == 0:
                assert error is None, f"{error!r} for partition 0, which exists"
            else:  # queued from the old topic's metadata before the producer refreshed it
                assert isinstance(error, UnknownTopicOrPartitionError), f"partition {partition}: {error!r}"
        assert elapsed < PROMPT_S, f"{elapsed:.1f} s: retried as if the partition had only lost its leader"
        again = [p.send(SHRUNK, b"again", key=k) for k in KEYS] + [p.send(SHRUNK, b"again")]
        assert {f.result(10).partition for f in again} == {0}
    finally:
        p.close(5)
        admin.close()


def test_the_producer_service_fails_records_of_a_gone_partition_at_once(cluster_factory) -> None:  # noqa: ANN001
    c = cluster_factory(3, extra_nodes=("producer",))
    admin = Admin(c.bootstrap)
    # a regression answers after the service's 30 s delivery timeout: this client gives up first
    sp = ServiceProducer(c.endpoint("producer"), timeout_ms=SERVICE_CALL_TIMEOUT_MS)
    try:
        admin.create_topic(SHRUNK, 3, 3)
        c.wait_topic_ready(admin, SHRUNK)
        records = [ServiceRecord(b"v", key=k) for k in KEYS] + [ServiceRecord(b"v")]
        assert all(r.ok for r in sp.produce(SHRUNK, records)), "the service's producer knows the topic"
        _recreate_with_one_partition(admin)
        started = time.monotonic()
        results = sp.produce(SHRUNK, records)
        elapsed = time.monotonic() - started
        assert all(r.partition == 0 if r.ok else r.error == P.UNKNOWN_TOPIC_OR_PARTITION for r in results), results
        assert elapsed < SERVICE_PROMPT_S, f"{elapsed:.1f} s"
        assert all(r.ok and r.partition == 0 for r in sp.produce(SHRUNK, records))
    finally:
        sp.close()
        admin.close()


READ = "readagain"


def _made_with(c, admin: Admin, prefix: bytes, n: int) -> None:  # noqa: ANN001
    """``READ`` made (one partition) and ``n`` records ``prefix + i`` written to it."""
    admin.create_topic(READ, 1, 1)
    c.wait_topic_ready(admin, READ)
    with Producer(c.bootstrap, acks="all") as p:
        for i in range(n):
            p.send(READ, prefix + b"%d" % i, partition=0)
        p.flush(30)


def _polled(consumer: Consumer, n: int, within_s: float) -> list:
    """What ``consumer`` polls until it has ``n`` records or ``within_s`` passed."""
    out: list = []
    deadline = time.monotonic() + within_s
    while len(out) < n and time.monotonic() < deadline:
        out += consumer.poll(200)
    return out


@pytest.mark.parametrize("policy", ["earliest", "latest"])
def test_a_consumer_reads_a_topic_made_again_from_its_start_not_from_its_old_position(cluster_factory,  # noqa: ANN001
                                                                                      policy: str) -> None:
    """A consumer assigned ``READ``-0 read 30 records of it; the topic is deleted and made again,
    and 40 records are written to the new one before the consumer polls again: the consumer reads
    them all, not from offset 30 -- the old topic's position, at which the new topic's records
    0..29 were skipped (and a group member committed past them) -- nor, with ``latest``, from the
    new topic's end (every record of it is newer than the consumer's reading)."""
    c = cluster_factory(1)
    admin = Admin(c.bootstrap)
    consumer = Consumer(c.bootstrap, auto_offset_reset=policy)
    try:
        _made_with(c, admin, b"old-", 30)
        consumer.assign([(READ, 0)])
        consumer.seek((READ, 0), 0)
        old = _polled(consumer, 30, 20)
        assert len(old) == 30 and consumer.position((READ, 0)) == 30
        admin.delete_topic(READ)
        _made_with(c, admin, b"new-", 40)
        new = _polled(consumer, 40, 30)
        assert [r.value for r in new] == [b"new-%d" % i for i in range(40)]
    finally:
        consumer.close()
        admin.close()


def test_a_members_commit_of_the_old_topics_position_is_refused_and_the_group_reads_the_new_topic_whole(
        cluster_factory) -> None:  # noqa: ANN001
    """A member read 30 records of ``READ``; the topic is deleted and made again with 40 records
    before the member commits (it has not polled since: its metadata still names the old topic).
    Its commit of position 30 names the old topic's id and is refused (``unknown_topic_id``),
    nothing stored: taken by name, it became the new topic's committed offset -- within its high
    watermark -- and the group's next member skipped the new topic's records 0..29."""
    c = cluster_factory(1)
    admin = Admin(c.bootstrap)
    first = GroupConsumer(c.bootstrap, group_id="recreate", auto_offset_reset="earliest", enable_auto_commit=False)
    second = None
    try:
        _made_with(c, admin, b"old-", 30)
        first.subscribe([READ])
        assert len(_polled(first, 30, 30)) == 30 and first.position((READ, 0)) == 30
        admin.delete_topic(READ)
        _made_with(c, admin, b"new-", 40)
        with pytest.raises(CommitFailed) as refused:
            first.commit()
        assert refused.value.code == P.UNKNOWN_TOPIC_ID, refused.value
        first.close()  # leaves the group (no auto-commit): the partition goes to the next member
        assert GroupAdmin(admin).committed("recreate") == {}, "the old topic's position was stored for the new topic"
        second = GroupConsumer(c.bootstrap, group_id="recreate", auto_offset_reset="earliest", enable_auto_commit=False)
        second.subscribe([READ])
        new = _polled(second, 40, 30)
        assert [r.value for r in new] == [b"new-%d" % i for i in range(40)], "the new topic's records were skipped"
    finally:
        first.close()
        if second is not None:
            second.close()
        admin.close()
