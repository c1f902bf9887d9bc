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
