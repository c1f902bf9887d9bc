"""A broker that evicted an idempotent producer takes an unknown producer's possibly written
batch again once retention has deleted everything the evicted producer wrote.

One broker (the partition's only replica), 4 KiB segments, retention.bytes of 16 KiB checked
every 200 ms. A producer writes, then 10,000 others (one batch each, as many short-lived `loom
produce` runs): the table (PRODUCERS_MAX) evicts the first, and may lack a producer whose batches
lie below that point (STATS: producers_forgot_below). A newcomer's possibly written batch -- its
first send went unanswered -- is refused with unknown_producer_id while that part of the log
is there; known producers write on, retention deletes it, and the same batch is written (its
retry answered "duplicate"). Before, the refusal lasted the partition's whole life.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.records import build_batch
from nodes.broker.producers import PRODUCERS_MAX
from tests.harness import Cluster, wait_until
from tests.integration.retention_support import BROKER, create_topic, partition_stats, small_segments_broker

pytestmark = pytest.mark.timeout(120)

TOPIC = "forgot"
FIRST = 9_100_000_000  # the producer evicted; the others follow it
NEWCOMER = 9_200_000_000
PARTS_PER_REQUEST = 1000  # under fabric.protocol.FRAMES_MAX payload frames
TIMESTAMP_MS = 1_700_000_000_000


def _batch(producer_id: int, sequence: int, value: bytes) -> bytes:
    return build_batch([(TIMESTAMP_MS, b"k", value, None)], producer_id=producer_id, producer_epoch=0,
                       base_sequence=sequence)


def _produce(cluster: Cluster, batches: list[bytes], possibly_written: bool = False) -> list:
    """One PRODUCE (acks=1) of ``batches`` to partition 0; their results [base_offset, error, ...]."""
    parts = [[TOPIC, 0, -1, int(possibly_written)]] * len(batches)
    header, _ = cluster.call(BROKER, P.PRODUCE, {"acks": 1, "parts": parts}, batches, timeout_ms=20_000)
    assert "error" not in header, header
    return header["results"]


@pytest.fixture
def cluster(tmp_path: Path):
    with small_segments_broker(tmp_path) as c:
        yield c


def test_an_unknown_producers_possibly_written_batch_is_taken_once_retention_passed_the_eviction(
        cluster: Cluster) -> None:
    create_topic(cluster, TOPIC, retention_bytes=16384)
    assert _produce(cluster, [_batch(FIRST, 0, b"first")])[0][1] == 0
    others = [FIRST + 1 + i for i in range(PRODUCERS_MAX)]  # the last of them evicts FIRST
    for i in range(0, len(others), PARTS_PER_REQUEST):
        results = _produce(cluster, [_batch(pid, 0, b"o") for pid in others[i:i + PARTS_PER_REQUEST]])
        assert all(r[1] == 0 for r in results), {P.error_name(r[1]) for r in results}
    part = partition_stats(cluster, TOPIC)
    forgot_below = part["producers_forgot_below"]
    assert part["log_start_offset"] < forgot_below, part
    newcomer = _batch(NEWCOMER, 0, b"newcomer")
    [refused] = _produce(cluster, [newcomer], possibly_written=True)
    assert refused[1] == P.UNKNOWN_PRODUCER_ID, P.error_name(refused[1])

    writer = others[-1]  # the most recently used producer: known, never evicted
    for sequence in range(1, 201):  # ~3 KiB each: segments roll, retention deletes the start
        assert _produce(cluster, [_batch(writer, sequence, b"%04d-" % sequence + b"x" * 3000)])[0][1] == 0
        if partition_stats(cluster, TOPIC)["log_start_offset"] >= forgot_below:
            break
    wait_until(lambda: partition_stats(cluster, TOPIC)["producers_forgot_below"] == 0, timeout_s=15,
               what=f"retention to pass offset {forgot_below} and the table to forget nothing")
    end = partition_stats(cluster, TOPIC)["log_end_offset"]
    [taken] = _produce(cluster, [newcomer], possibly_written=True)
    assert taken[:2] == [end, 0], f"{taken} ({P.error_name(taken[1])})"
    [again] = _produce(cluster, [newcomer], possibly_written=True)
    assert again[:3] == [end, 0, "duplicate"], again
