"""A 1,000-partition, replication-factor-3 topic on a 3-broker cluster settles: fully replicated
(within a functional bound; the time it took is printed, and issue 13's 10 s target is a
measured figure in bench/RESULTS.md, not a timed test), it stays so (no ISR shrink, no leader change) for STEADY_S of
no traffic, and the idle brokers use under 5 % of a core each.

CPU is read from /proc/<pid>/stat (user + system time) over a window: a functional check with a
wide margin (the defect burned about half a core per node), not a benchmark.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fabric.client import Admin
from tests.harness import Cluster, running_cluster
from tests.integration.large_topic_support import IDLE_CPU_CORE_FRACTION_MAX, cpu_seconds, create_settled

# The window of no traffic: five times the test cluster's replica_lag_time_max_ms (2 s; the 10 s
# once named here is the production default), so an idle ISR that shrinks does so inside it, and
# one retention check (every RETENTION_CHECK_MS here), the longest period of an idle broker's work,
# as the 30 s window held one of the default's 30 s.
STEADY_S = 10
RETENTION_CHECK_MS = 10_000


def leaders(admin: Admin, topic: str) -> list[tuple[int, int]]:
    return [(p.leader, p.leader_epoch) for p in admin.metadata().topics[topic].partitions]


def broker_cpu(cluster: Cluster) -> dict[str, float]:
    return {n: cpu_seconds(cluster.procs[n].pid) for n in cluster.broker_names()}


@pytest.mark.slow
def test_thousand_partition_topic_settles_stays_replicated_and_idles(tmp_path: Path) -> None:
    overrides = {"topics": {"retention_check_interval_ms": RETENTION_CHECK_MS}}
    with running_cluster(tmp_path, overrides=overrides) as cluster, Admin(cluster.bootstrap) as admin:
        created_s, settled_s = create_settled(admin, "big")
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
