"""A topic's ``max.message.bytes`` is enforced by the leader on every produced batch (as
Kafka's: the largest record batch a topic takes): a larger batch gets a typed
``record_too_large`` error and is not written; smaller ones are written and replicated; the
broker keeps serving. Before, the config was accepted and never enforced."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.client import Admin, Consumer, Producer
from fabric.errors import RemoteError
from tests.harness import running_cluster, wait_until

pytestmark = pytest.mark.timeout(60)
TOPIC = "small-messages"
LIMIT_BYTES = 2048


def test_leader_refuses_a_batch_over_max_message_bytes(tmp_path: Path) -> None:
    with running_cluster(tmp_path, brokers=2) as c, Admin(c.bootstrap) as admin:
        admin.create_topic(TOPIC, 1, 2, configs={"max.message.bytes": LIMIT_BYTES})
        c.wait_topic_ready(admin, TOPIC)
        with Producer(c.bootstrap, acks="all", linger_ms=0, request_timeout_ms=5000,
                      delivery_timeout_ms=10_000) as producer:
            big = producer.send(TOPIC, b"x" * (3 * LIMIT_BYTES), partition=0)
            producer.flush(15)
            with pytest.raises(RemoteError) as info:
                big.result(timeout=1)
            assert info.value.code == P.RECORD_TOO_LARGE
            assert "max.message.bytes" in str(info.value)
            small = producer.send(TOPIC, b"y" * 100, partition=0)
            producer.flush(15)
            assert small.result(timeout=1).offset == 0  # nothing of the refused batch was written
        stats = {b: next(p for p in c.stats(b)["partitions"] if p["topic"] == TOPIC) for b in c.broker_names()}
        assert {s["log_end_offset"] for s in stats.values()} == {1}
        with Consumer(c.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([(TOPIC, 0)])
            got: list = []
            wait_until(lambda: got.extend(consumer.poll(200)) or got, 10, what="the small record")
            assert [r.value for r in got] == [b"y" * 100]


def test_records_with_large_headers_fill_batches_the_broker_takes(tmp_path: Path) -> None:
    """The producer counts header bytes toward its batch bound: 10,000 small values with 1.8 KB
    of headers each (18 MB, under the default record bound) travel as batches under the
    broker's bound, all delivered -- not one 18 MB batch refused whole as record_too_large."""
    headers = [("trace", b"t" * 1800)]
    with running_cluster(tmp_path, brokers=1) as c, Admin(c.bootstrap) as admin:
        admin.create_topic("traced", 1, 1)
        c.wait_topic_ready(admin, "traced")
        with Producer(c.bootstrap, acks="all", linger_ms=50, delivery_timeout_ms=30_000) as producer:
            futures = [producer.send("traced", b"v" * 10, headers=headers, partition=0) for _ in range(10_000)]
            producer.flush(40)
            assert [f.exception(0) for f in futures] == [None] * 10_000
        with Consumer(c.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([("traced", 0)])
            got: list = []
            wait_until(lambda: got.extend(consumer.poll(200)) or len(got) >= 10_000, 20, what="every record")
            assert len(got) == 10_000 and got[-1].headers == (("trace", b"t" * 1800),)


def test_a_topic_with_a_small_max_message_bytes_takes_every_record_of_a_busy_producer(tmp_path: Path) -> None:
    """A topic's max.message.bytes far under the producer's 1 MiB batches: the producer learns
    it from the metadata and makes batches the leader takes, from send() and send_many alike
    (before, each full batch was refused whole and all of its records failed)."""
    with running_cluster(tmp_path, brokers=1) as c, Admin(c.bootstrap) as admin:
        admin.create_topic("capped", 1, 1, configs={"max.message.bytes": 16_384})
        c.wait_topic_ready(admin, "capped")
        with Producer(c.bootstrap, acks="all", linger_ms=50, delivery_timeout_ms=30_000) as producer:
            singles = [producer.send("capped", b"s" * 100, key=b"k%d" % i) for i in range(5_000)]
            runs = producer.send_many("capped", [b"m" * 300] * 5_000)
            producer.flush(40)
            assert [f.exception(0) for f in singles] == [None] * 5_000
            assert runs.exception(0) is None and len(runs.result(0)) == 5_000
        with Consumer(c.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([("capped", 0)])
            got: list = []
            wait_until(lambda: got.extend(consumer.poll(200)) or len(got) >= 10_000, 20, what="every record")
            assert len(got) == 10_000


def test_a_lowered_max_message_bytes_is_learned_from_the_first_refusal(tmp_path: Path) -> None:
    """After the topic's limit is lowered, the first batch refused as record_too_large makes
    the producer refresh its metadata at once, not at its periodic refresh (5 s): records sent
    after it go in batches under the new limit, none refused. (Batches already made under the
    old limit when the refusal came back are refused: the producer does not split them.)"""
    with running_cluster(tmp_path, brokers=1) as c, Admin(c.bootstrap) as admin:
        admin.create_topic("t", 1, 1)
        c.wait_topic_ready(admin, "t")
        with Producer(c.bootstrap, acks="all", linger_ms=20, delivery_timeout_ms=30_000) as producer:
            producer.send("t", b"warm", partition=0).result(10)
            admin.alter_topic("t", configs={"max.message.bytes": 16384})

            def broker_enforces() -> bool:
                f = producer.send("t", b"x" * 20_000, partition=0)
                producer.flush(10)
                return f.exception(0) is not None and f.exception(0).code == P.RECORD_TOO_LARGE
            wait_until(broker_enforces, 20, what="the broker to enforce the new limit")
            # the refusal asked for a metadata refresh: one round trip, given room on a loaded machine
            wait_until(lambda: producer.metadata.current.topics["t"].configs.get("max.message.bytes") == 16384, 10,
                       what="the producer's metadata to have the new limit")
            futures = producer.send_many("t", [b"v" * 100] * 50_000, partition=0)
            producer.flush(30)
            _, _, _, errors = futures.outcomes(0)
            assert sum(e is not None for e in errors) == 0


def test_batches_made_under_a_limit_since_lowered_are_split_until_they_fit(tmp_path: Path) -> None:
    """The producer made its batches under the old limit (its metadata did not have the new one
    yet): each refused batch goes again in halves, and halves of halves, until the leader takes
    them -- every record delivered once, in order, none lost to the stale bound."""
    with running_cluster(tmp_path, brokers=1) as c, Admin(c.bootstrap) as admin:
        admin.create_topic("t", 1, 1)
        c.wait_topic_ready(admin, "t")
        with Producer(c.bootstrap, acks="all", linger_ms=20, delivery_timeout_ms=30_000) as producer:
            producer.send("t", b"warm", partition=0).result(10)  # metadata without the limit
            admin.alter_topic("t", configs={"max.message.bytes": 16384})
            with Producer(c.bootstrap, acks="all", linger_ms=0) as probe:  # learns it; the other does not

                def broker_enforces() -> bool:
                    f = probe.send("t", b"x" * 20_000, partition=0)
                    probe.flush(10)
                    return f.exception(0) is not None and f.exception(0).code == P.RECORD_TOO_LARGE
                wait_until(broker_enforces, 20, what="the broker to enforce the new limit")
            values = [b"%06d" % i + b"v" * 94 for i in range(30_000)]
            futures = producer.send_many("t", values, partition=0)
            producer.flush(30)
            _, _, offsets, errors = futures.outcomes(0)
            assert [e for e in errors if e is not None] == []
            print(f"\n{producer.sender.splits} splits")
        with Consumer(c.bootstrap, auto_offset_reset="earliest") as consumer:
            consumer.assign([("t", 0)])
            got: list = []
            wait_until(lambda: got.extend(consumer.poll(200)) or len(got) >= 30_001, 20, what="every record")
            assert [r.value for r in got[1:]] == values
            assert [r.offset for r in got[1:]] == offsets
