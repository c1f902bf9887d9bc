"""An idempotent producer started while the coordinator's process is dead (its port refuses the
connection; the broker leading the topic is up): its INIT_PRODUCER_ID asks end at the refusal
(``ConnectionRefused``) and go again at the sender's retry interval, each retry making the next
connect at once -- so the first record is acknowledged within a retry or two of the coordinator
listening again, not at the connection's next reconnect (its backoff grows to 5 s) or the ask's
3 s timeout.

The time from the coordinator answering PING to the first acknowledged record is printed (run
with -s); what is asserted is the behaviour: the asks ended refused, and the record came well
within the ask's timeout of the coordinator's return."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import pytest

from fabric.client import Admin
from fabric.client.producer import Producer
from fabric.client.sender import METADATA_TIMEOUT_MS
from tests.harness import Cluster, running_cluster, wait_until

TOPIC = "orders"
REFUSALS = 40  # at the retry interval (100 ms), about 4 s


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, 1) as c:
        yield c


def test_a_producer_gets_its_id_at_the_coordinators_return_not_at_a_reconnect(cluster: Cluster) -> None:
    admin = Admin(cluster.bootstrap)
    try:
        admin.create_topic(TOPIC, 1, 1)
        cluster.wait_topic_ready(admin, TOPIC)
    finally:
        admin.close()
    cluster.kill("coordinator")
    producer = Producer(cluster.bootstrap, acks="all", idempotent=True)
    try:
        started_s = time.monotonic()
        future = producer.send(TOPIC, b"first")
        errors = producer.sender.producer_id_errors
        # asks ended refused, each at once (one that waited would end at its 3 s timeout), for
        # long enough (about 4 s of retries) that the connection's own reconnect backed off to
        # seconds: the coordinator comes back after that
        wait_until(lambda: errors["ConnectionRefused"] >= REFUSALS, timeout_s=30, what="refused INIT_PRODUCER_ID asks")
        refused_after_s = time.monotonic() - started_s
        assert not errors["RequestTimeout"], dict(errors)
        cluster.start_node("coordinator")
        back_s = time.monotonic()
        offset = future.result(30).offset
        acked_after_s = time.monotonic() - back_s
        print(f"\n{REFUSALS} INIT_PRODUCER_IDs refused within {refused_after_s:.2f} s; first record acknowledged "
              f"{acked_after_s:.2f} s after the coordinator answered PING ({dict(errors)})")
        assert offset == 0
        assert acked_after_s < METADATA_TIMEOUT_MS / 1000, acked_after_s
        assert producer.sender.producer_id >= 0
    finally:
        producer.close(timeout=5)
