"""Shared by the integration tests of producer state and retention: one broker (the partition's
only replica) with 4 KiB segments and retention checked every 200 ms, so that a few dozen
batches roll segments and retention deletes the log's start within a test; a topic on it; a
partition's STATS entry."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from fabric.client import Admin
from tests.harness import Cluster, running_cluster

BROKER = "broker-1"


@contextmanager
def small_segments_broker(tmp_path: Path) -> Iterator[Cluster]:
    with running_cluster(tmp_path, brokers=1, overrides={
            "storage": {"segment_bytes_max": 4096, "index_interval_bytes": 512},
            "topics": {"retention_check_interval_ms": 200}}) as c:
        yield c


def create_topic(cluster: Cluster, topic: str, retention_bytes: int) -> None:
    """``topic``: one partition on BROKER, retention.bytes ``retention_bytes``; ready on return."""
    admin = Admin(cluster.bootstrap)
    try:
        admin.create_topic(topic, partitions=1, replication_factor=1, configs={"retention.bytes": retention_bytes})
        cluster.wait_topic_ready(admin, topic)
    finally:
        admin.close()


def partition_stats(cluster: Cluster, topic: str, partition: int = 0) -> dict:
    """``topic``-``partition``'s entry in BROKER's STATS."""
    return next(p for p in cluster.stats(BROKER)["partitions"] if p["topic"] == topic and p["partition"] == partition)
