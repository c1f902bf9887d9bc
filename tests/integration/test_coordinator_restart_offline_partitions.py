"""Every broker paused (SIGSTOP) past its session, so that the coordinator stores every partition
offline; the coordinator killed and restarted while they are paused; the brokers resumed (the
same processes: no new incarnation). The restarted coordinator must elect every partition once
it hears their in-sync replicas: it took them for alive from its start (one session's grace),
so their heartbeats brought no "came back" and the partitions stayed offline for good (the
produce nemesis' seed 110: over 90 s, all three brokers running and heard)."""

from __future__ import annotations

import signal
from pathlib import Path

from fabric.client import Admin
from tests.harness import running_cluster, wait_until

HEARTBEAT_MS = 100
SESSION_MS = 1000  # short: the test waits out one session of the paused brokers
BROKERS = ("broker-1", "broker-2", "broker-3")


def test_restarted_coordinator_elects_what_it_stored_offline(tmp_path: Path) -> None:
    overrides = {"liveness": {"heartbeat_interval_ms": HEARTBEAT_MS, "session_timeout_ms": SESSION_MS}}
    with running_cluster(tmp_path, overrides=overrides) as cluster, Admin(cluster.bootstrap) as admin:
        admin.create_topic("t", 3, 3)
        cluster.wait_topic_ready(admin, "t")
        for name in BROKERS:
            cluster.kill(name, signal.SIGSTOP)
        try:
            wait_until(lambda: cluster.stats("coordinator")["offline"] == 3, 10,
                       what="every partition offline, every broker paused")
            cluster.kill("coordinator")
            cluster.start_node("coordinator")
        finally:
            for name in BROKERS:
                cluster.kill(name, signal.SIGCONT)
        wait_until(lambda: cluster.stats("coordinator")["heartbeats_from"] == [1, 2, 3], 5 * SESSION_MS / 1000,
                   what="heartbeats of every broker at the restarted coordinator")
        wait_until(lambda: all(p.leader >= 0 for p in admin.metadata().topics["t"].partitions), 3 * SESSION_MS / 1000,
                   what="a leader for every partition, within three sessions")
        cluster.wait_topic_ready(admin, "t", timeout_s=10)  # the leaders took over, the ISRs are whole again
