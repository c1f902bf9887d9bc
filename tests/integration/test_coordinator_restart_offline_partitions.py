"""Every broker paused (SIGSTOP) past its session, so that the coordinator stores every partition
offline; the coordinator killed and restarted while they are paused; the brokers resumed (the
same processes: no new incarnation). The restarted coordinator must elect every partition once
it hears their in-sync replicas: it took them for alive from its start (one session's grace),
so their heartbeats brought no "came back" and the partitions stayed offline for good (the
produce nemesis' seed 110: over 90 s, all three brokers running and heard)."""

from __future__ import annotations

import signal
from pathlib import Path

from fabric import protocol as P
from fabric.client import Admin
from fabric.metadata import ClusterMetadata, PartitionInfo
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


def test_a_broker_restarted_while_the_coordinator_was_down_is_not_elected_alone_past_paused_replicas(tmp_path: Path) -> None:
    """The coordinator killed; brokers 2 and 3 paused (in sync, not heard by the coordinator's
    next process); broker 1 killed and started again (a new process: the restart the coordinator
    handles as down-then-up, because it may have lost an unflushed tail). The restarted
    coordinator hears broker 1 first: broker 1 leaves every ISR, the partitions it led wait
    for broker 2 or 3 -- it used to be elected alone for them (ISR [1]), so that brokers 2 and 3,
    resumed, truncated to its log."""
    session_ms = 4000  # the grace outlasts the checks made while brokers 2 and 3 are paused
    overrides = {"liveness": {"heartbeat_interval_ms": HEARTBEAT_MS, "session_timeout_ms": session_ms}}
    with running_cluster(tmp_path, overrides=overrides) as cluster, Admin(cluster.bootstrap) as admin:
        admin.create_topic("t", 3, 3)
        cluster.wait_topic_ready(admin, "t")
        led = [p.partition for p in admin.metadata().topics["t"].partitions if p.leader == 1]
        assert led, "broker 1 leads no partition of t"
        cluster.kill("coordinator")
        paused = ("broker-2", "broker-3")
        for name in paused:
            cluster.kill(name, signal.SIGSTOP)
        try:
            cluster.kill("broker-1")
            cluster.start_node("broker-1")
            cluster.start_node("coordinator")
            wait_until(lambda: cluster.stats("coordinator")["heartbeats_from"] == [1], session_ms / 1000 / 2,
                       what="broker 1's heartbeats at the restarted coordinator")

            def partitions() -> list[PartitionInfo]:
                md = ClusterMetadata.from_wire(cluster.call("coordinator", P.METADATA)[0]["metadata"])
                return list(md.topics["t"].partitions)
            wait_until(lambda: all(1 not in p.isr for p in partitions()), session_ms / 1000 / 4,
                       what=f"broker 1 out of every ISR: {[(p.leader, p.isr) for p in partitions()]}")
            assert [(p.leader, p.isr) for p in partitions() if p.partition in led] == [(-1, (2, 3))] * len(led)
        finally:
            for name in paused:
                cluster.kill(name, signal.SIGCONT)
        wait_until(lambda: all(p.leader in (2, 3) for p in admin.metadata().topics["t"].partitions if p.partition in led),
                   3 * session_ms / 1000, what="the partitions broker 1 led, led by broker 2 or 3")
        cluster.wait_topic_ready(admin, "t", timeout_s=20)
