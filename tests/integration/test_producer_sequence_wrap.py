"""End to end: an idempotent producer whose sequence wraps at 2**31 - 1 -> 0 (started just
below it by a test hook) keeps writing -- every acknowledged record is in the log at the
offset it was acknowledged with, none is "acknowledged" with offset -1 and dropped."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.client import Admin, Consumer, Producer
from tests.harness import running_cluster, wait_until

pytestmark = pytest.mark.timeout(90)

RECORDS = 50
BATCH_RECORDS = 5
START_SEQUENCE = 2**31 - RECORDS // 2  # half the records before the wrap, half after


def test_every_record_acknowledged_across_the_sequence_wrap_is_in_the_log(tmp_path: Path) -> None:
    with running_cluster(tmp_path, brokers=1) as cluster:
        with Admin(cluster.bootstrap) as admin:
            admin.create_topic("wrap", partitions=1, replication_factor=1)
            cluster.wait_topic_ready(admin, "wrap")
        producer = Producer(cluster.bootstrap, acks="all", batch_records_max=BATCH_RECORDS, linger_ms=1,
                            delivery_timeout_ms=20_000)
        try:
            producer.sender.start_sequence_at_for_testing("wrap", 0, START_SEQUENCE)
            acked: dict[int, bytes] = {}
            for i in range(RECORDS):
                value = f"r{i}".encode()
                md = producer.send("wrap", value, partition=0).result(timeout=20)
                acked[md.offset] = value
        finally:
            producer.close()
        assert -1 not in acked, "a record was 'acknowledged' without an offset"
        assert len(acked) == RECORDS

        consumer = Consumer(cluster.bootstrap, auto_offset_reset="earliest")
        try:
            consumer.assign([("wrap", 0)])
            consumer.seek_to_beginning([("wrap", 0)])
            stored: dict[int, bytes] = {}

            def read_all() -> bool:
                for r in consumer.poll(200, max_records=1000):
                    stored[r.offset] = bytes(r.value)
                return len(stored) >= RECORDS
            wait_until(read_all, 20, what=f"{RECORDS} records in the log (have {len(stored)})")
        finally:
            consumer.close()
        assert stored == acked
