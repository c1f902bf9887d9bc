"""Records sent one by one -- mostly keyless, header-less values of one size (which the
producer keeps as runs of values and packs with one join), broken now and then by a keyed
record, one with headers, one of another size, a bytearray the caller changes after ``send``, a
new timestamp, and sends from delivery callbacks on the I/O thread -- come back from a real
broker once each, in send order per partition, as they were at ``send`` and at the offsets
their futures gave, compressed or not."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric.client import Admin, Consumer, Producer
from tests.harness import running_cluster, wait_until

pytestmark = pytest.mark.timeout(120)
TS = 1_700_000_000_000
RECORDS = 12_000
FROM_CALLBACKS = 2  # the partition that delivery callbacks send to


def _record(i: int) -> tuple[int, bytes | None, bytes, list | None]:
    """(timestamp_ms, key, value, headers) of record ``i``: a run of 100-byte values, mostly."""
    key = b"k%d" % i if i % 97 == 0 else None
    headers = [("h", b"%d" % i)] if i % 89 == 0 else None
    value = b"%07d" % i + (b"w" * 200 if i % 83 == 0 else b"v" * 93)
    return TS + i // 300, key, value, headers


@pytest.mark.parametrize("compression", ["none", "zstd", "lz4"])
def test_records_sent_one_by_one_come_back_once_in_order_as_they_were_sent(tmp_path: Path, compression: str) -> None:
    with running_cluster(tmp_path, brokers=1) as c, Admin(c.bootstrap) as admin:
        admin.create_topic("t", 3, 1)
        c.wait_topic_ready(admin, "t")
        sent: dict[int, list] = {0: [], 1: []}
        futures: dict[int, list] = {0: [], 1: []}
        from_callbacks: list = []
        buffer = bytearray(b"b" * 100)
        with Producer(c.bootstrap, compression=compression, linger_ms=2, batch_bytes_max=30_000) as producer:

            def resend(i: int) -> object:
                return lambda md, err: from_callbacks.append(
                    producer.send("t", b"cb%07d" % i + b"c" * 91, partition=FROM_CALLBACKS))

            for i in range(RECORDS):
                ts, key, value, headers = _record(i)
                partition = i // 1000 % 2
                if i % 101 == 0:  # the caller's buffer, changed after send: sent as it was
                    buffer[:7] = b"%07d" % i
                    value = bytes(buffer)
                    futures[partition].append(producer.send("t", buffer, key, headers, partition, ts,
                                                            resend(i) if i % 1000 == 0 else None))
                    buffer[:] = b"x" * 100
                else:
                    futures[partition].append(producer.send("t", value, key, headers, partition, ts,
                                                            resend(i) if i % 1000 == 0 else None))
                sent[partition].append((ts, key, value, tuple(headers) if headers else None))
            producer.flush(60)
            wait_until(lambda: len(from_callbacks) == RECORDS // 1000, 30, what="the callbacks' sends")
            producer.flush(60)
            assert {f.result(0).offset for f in from_callbacks} == set(range(RECORDS // 1000))
            for partition, fs in futures.items():
                assert [f.result(0).offset for f in fs] == list(range(len(sent[partition])))
        with Consumer(c.bootstrap, auto_offset_reset="earliest") as consumer:
            for partition in (0, 1):
                consumer.assign([("t", partition)])
                got: list = []
                wait_until(lambda: got.extend(consumer.poll(200)) or len(got) >= len(sent[partition]), 30,
                           what=f"every record of partition {partition}")
                assert [(r.timestamp_ms, r.key, r.value, r.headers) for r in got] == sent[partition]
                assert [r.offset for r in got] == list(range(len(sent[partition])))
