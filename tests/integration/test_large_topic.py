"""A 1,000-partition, replication-factor-3 topic on a 3-broker cluster settles: fully replicated
within 10 s of its creation, it stays so (no ISR shrink, no leader change) for a minute of no
traffic, and the idle brokers use under 5 % of a core each.

CPU is read from /proc/<pid>/stat (user + system time) over a window: a functional check with a
wide margin (the defect burned about half a core per node), not a benchmark.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fabric.client import Admin
from tests.harness import Cluster, running_cluster, wait_until

PARTITIONS = 1000
SETTLE_S = 10
STEADY_S = 60
IDLE_CPU_CORE_FRACTION_MAX = 0.05


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def fully_replicated(admin: Admin, topic: str) -> bool:
    """Every partition has its whole replica set in the ISR and a leader that serves it."""
    t = admin.metadata().topics.get(topic)
    if t is None or len(t.partitions) != PARTITIONS or \
            not all(p.leader >= 0 and len(p.isr) == len(p.replicas) for p in t.partitions):
        return False
    admin.list_offsets(topic)  # raises until every leader has taken over
    return True


def leaders(admin: Admin, topic: str) -> list[tuple[int, int]]:
    return [(p.leader, p.leader_epoch) for p in admin.metadata().topics[topic].partitions]


def broker_cpu(cluster: Cluster) -> dict[str, float]:
    return {n: cpu_seconds(cluster.procs[n].pid) for n in cluster.broker_names()}


@pytest.mark.slow
def test_thousand_partition_topic_settles_stays_replicated_and_idles(tmp_path: Path) -> None:
    with running_cluster(tmp_path) as cluster, Admin(cluster.bootstrap) as admin:
        started = time.monotonic()
        admin.create_topic("big", PARTITIONS, 3)
        created_s = time.monotonic() - started
        wait_until(lambda: fully_replicated(admin, "big"), SETTLE_S - created_s, 0.2,
                   what=f"{PARTITIONS} partitions fully replicated within {SETTLE_S} s of creation")
        settled_s = time.monotonic() - started
        before = leaders(admin, "big")
        cpu_start, window_start = broker_cpu(cluster), time.monotonic()
        while time.monotonic() - window_start < STEADY_S:
            stats = cluster.stats("coordinator")
            assert stats["under_replicated"] == 0 and stats["offline"] == 0, stats
            assert stats["brokers_alive"] == [1, 2, 3], stats
            time.sleep(1)  # sampling interval of a condition that must hold throughout
        window_s = time.monotonic() - window_start
        cpu_end = broker_cpu(cluster)
        assert leaders(admin, "big") == before, "leadership moved in a cluster with no faults"
        usage = {n: (cpu_end[n] - cpu_start[n]) / window_s for n in cpu_end}
        print(f"created in {created_s:.2f} s, settled in {settled_s:.2f} s, idle CPU per broker {usage}")
        assert all(u < IDLE_CPU_CORE_FRACTION_MAX for u in usage.values()), usage
        log = (cluster.log_dir / "coordinator.log").read_text()
        assert "missed its session" not in log
