"""A follower that was down while the leader's retention deleted everything it would fetch
restarts its log at the leader's log start (Partition.reset_to) and rejoins the ISR.

Over the segment and lmdb engines: three brokers, one partition with replication factor 3,
4 KiB segments, retention.bytes of 8 KiB and a retention check every 200 ms: forty batches of
3 KiB move the leader's log start far past the stopped follower's log end. At the end both
replicas' logs are read from disk and compared byte for byte where both have them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.api import EngineConfig
from engines.conformance import read_all
from engines.registry import open_engine
from fabric.client import Admin, Producer
from tests.harness import Cluster, make_config, wait_until

pytestmark = pytest.mark.timeout(90)

TOPIC = "retained"
SEGMENT_BYTES = 4096  # the smallest StorageConfig allows
RETENTION_BYTES = 8192


def _part_stats(cluster: Cluster, broker: str) -> dict:
    return next(p for p in cluster.stats(broker)["partitions"] if p["topic"] == TOPIC and p["partition"] == 0)


def _produce(bootstrap: str, rounds: int, tag: str) -> None:
    """``rounds`` batches of 8 records of ~400 bytes (a flush per round: one batch each, so
    segments roll and retention has whole segments to delete)."""
    with Producer(bootstrap, acks=1, linger_ms=5, request_timeout_ms=10_000) as p:
        for r in range(rounds):
            futures = [p.send(TOPIC, (b"%s-%04d-%d-" % (tag.encode(), r, i)) + b"x" * 400, partition=0)
                       for i in range(8)]
            p.flush(timeout=30)
            for f in futures:
                f.result(timeout=0)


@pytest.fixture(params=["segment", "lmdb"])
def cluster(request, tmp_path: Path):
    path = make_config(tmp_path, brokers=3, engine=request.param, overrides={
        "storage": {"segment_bytes_max": SEGMENT_BYTES, "index_interval_bytes": 512},
        "topics": {"retention_check_interval_ms": 200},
    })
    c = Cluster(path)
    try:
        c.start()
        yield c
    finally:
        c.stop_all()


def test_follower_behind_leader_log_start_catches_up(cluster: Cluster) -> None:
    admin = Admin(cluster.bootstrap)
    try:
        admin.create_topic(TOPIC, partitions=1, replication_factor=3, configs={"retention.bytes": RETENTION_BYTES})
        cluster.wait_topic_ready(admin, TOPIC)
        info = admin.metadata().topics[TOPIC].partitions[0]
        leader = f"broker-{info.leader}"
        follower_id = next(r for r in info.replicas if r != info.leader)
        follower = f"broker-{follower_id}"

        _produce(cluster.bootstrap, 3, "before")
        wait_until(lambda: _part_stats(cluster, follower)["log_end_offset"] == _part_stats(cluster, leader)["log_end_offset"] >= 20,
                   timeout_s=10, what="the follower to have the first records")
        stopped_end = _part_stats(cluster, follower)["log_end_offset"]
        cluster.stop(follower)

        _produce(cluster.bootstrap, 40, "while-down")
        wait_until(lambda: _part_stats(cluster, leader)["log_start_offset"] > stopped_end + 100,
                   timeout_s=15, what="the leader's retention to pass the stopped follower's log end")
        wait_until(lambda: follower_id not in admin.metadata().topics[TOPIC].partitions[0].isr,
                   timeout_s=10, what="the follower to leave the ISR")

        cluster.start_node(follower)

        def caught_up() -> bool:
            lead, foll = _part_stats(cluster, leader), _part_stats(cluster, follower)
            in_isr = follower_id in admin.metadata().topics[TOPIC].partitions[0].isr
            return in_isr and foll["log_end_offset"] == lead["log_end_offset"] and foll["log_start_offset"] > stopped_end
        wait_until(caught_up, timeout_s=20, what="the follower to restart at the leader's log start and rejoin the ISR")

        # it keeps following, and its log is the leader's, byte for byte, where both have it
        _produce(cluster.bootstrap, 5, "after")
        wait_until(lambda: _part_stats(cluster, follower)["log_end_offset"] == _part_stats(cluster, leader)["log_end_offset"],
                   timeout_s=10, what="the follower to take new records")
        # the restarted broker applies the topic's retention too (it reopened the partition
        # from disk before it knew the topic configs)
        _produce(cluster.bootstrap, 20, "more")
        wait_until(lambda: _part_stats(cluster, follower)["size_bytes"] <= RETENTION_BYTES + SEGMENT_BYTES,
                   timeout_s=10, what="retention to bound the restarted follower's log")
    finally:
        admin.close()
    cluster.stop_all()
    logs = [_read_log(cluster, name) for name in (leader, follower)]
    start = max(start for start, _ in logs)
    assert start > stopped_end
    assert [b for b in logs[0][1] if b[0] >= start] == [b for b in logs[1][1] if b[0] >= start]
    assert logs[0][1][-1] == logs[1][1][-1]


def _read_log(cluster: Cluster, broker: str) -> tuple[int, list[tuple[int, bytes]]]:
    """(log_start_offset, [(base_offset, stored batch)]) of a stopped broker's replica."""
    directory = cluster.replica_log_dir(broker, TOPIC, 0)
    engine = open_engine(cluster.raw["storage"]["engine"], str(directory),
                         EngineConfig(fsync="never", segment_bytes_max=SEGMENT_BYTES))
    try:
        return engine.log_start_offset, [(h.base_offset, bytes(view)) for h, view in read_all(engine)]
    finally:
        engine.close()
