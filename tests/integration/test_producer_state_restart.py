"""A restarted broker still knows an idempotent producer whose batches retention deleted.

One broker (the partition's only replica), 4 KiB segments, retention.bytes of 8 KiB checked
every 200 ms. A producer's batch is written and its reply is lost; other batches follow until
retention has deleted it; the broker is restarted (SIGTERM: it closes cleanly, snapshotting its
producer state). The producer's retry, marked possibly written, is answered with the batch's
original offset -- before producer-state snapshots the restarted broker had rebuilt its table
from what retention left, so it refused the retry with unknown_producer_id.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.records import build_batch
from tests.harness import Cluster, wait_until
from tests.integration.retention_support import BROKER, create_topic, partition_stats, small_segments_broker

pytestmark = pytest.mark.timeout(90)

TOPIC = "snap"
PID = 9_000_001
RETRIABLE = (P.NOT_LEADER, P.UNKNOWN_TOPIC_OR_PARTITION, P.LEADER_NOT_AVAILABLE, P.REQUEST_TIMED_OUT)


def _produce(cluster: Cluster, batch: bytes, possibly_written: bool) -> list:
    """One PRODUCE (acks=1) of ``batch`` to partition 0; its result [base_offset, error, ...]."""
    header, _ = cluster.call(BROKER, P.PRODUCE, {"acks": 1, "parts": [[TOPIC, 0, -1, int(possibly_written)]]},
                             [batch])
    assert "error" not in header, header
    return header["results"][0]


def _produced(cluster: Cluster, batch: bytes, possibly_written: bool) -> list:
    """``_produce`` again while the partition has no leader yet (after a start)."""
    def answered() -> list | None:
        result = _produce(cluster, batch, possibly_written)
        return None if result[1] in RETRIABLE else result
    return wait_until(answered, timeout_s=20, what="the partition to take a produce")


@pytest.fixture
def cluster(tmp_path: Path):
    with small_segments_broker(tmp_path) as c:
        yield c


def test_a_restarted_broker_answers_a_retry_of_a_batch_retention_deleted(cluster: Cluster) -> None:
    create_topic(cluster, TOPIC, retention_bytes=8192)
    ours = build_batch([(1_700_000_000_000 + i, b"k", b"ours-%d" % i, None) for i in range(3)],
                       producer_id=PID, producer_epoch=0, base_sequence=0)
    assert _produced(cluster, ours, possibly_written=False)[:2] == [0, 0]  # (its reply is lost)
    for r in range(40):  # other writers' batches of ~3 KiB: segments roll, retention deletes ours
        other = build_batch([(1_700_000_000_000, b"o", b"%04d-" % r + b"x" * 3000, None)])
        assert _produce(cluster, other, possibly_written=False)[1] == 0
    wait_until(lambda: partition_stats(cluster, TOPIC)["log_start_offset"] > 3, timeout_s=15,
               what="retention to delete the producer's batch")
    cluster.stop(BROKER)
    cluster.start_node(BROKER)
    retry = _produced(cluster, ours, possibly_written=True)
    assert retry[:3] == [0, 0, "duplicate"], f"{retry} ({P.error_name(retry[1])})"
    # and the producer's next batch is taken in sequence
    following = build_batch([(1_700_000_000_000, b"k", b"next", None)], producer_id=PID, producer_epoch=0,
                            base_sequence=3)
    assert _produce(cluster, following, possibly_written=False)[1] == 0
