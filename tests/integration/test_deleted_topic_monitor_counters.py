"""The monitor forgets a deleted topic's counters of what it saw in the metadata (ISR shrinks and
expansions, leader elections): they went on being exposed for good, one series each per topic
that ever had one, in a table with no bound."""

from __future__ import annotations

import signal

import pytest

from fabric.client import Admin
from fabric.client.monitor import MonitorClient
from tests.harness import wait_until

pytestmark = pytest.mark.timeout(60)

TOPICS = 4
COUNTERS = ("loom_leader_elections_total", "loom_isr_shrinks_total", "loom_isr_expands_total")


def counted(monitor: MonitorClient, topic: str) -> list[str]:
    """The monitor's exposed series of COUNTERS that name ``topic``."""
    text = monitor.metrics_text()[0].decode()
    return [line for line in text.splitlines()
            if line.startswith(COUNTERS) and f'topic="{topic}"' in line]


def test_a_deleted_topics_metadata_counters_go_with_it(cluster_factory) -> None:
    c = cluster_factory(3, extra_nodes=("monitor",))
    gone = [f"gone-{i}" for i in range(TOPICS)]
    with Admin(c.bootstrap) as admin, MonitorClient(c.endpoint("monitor")) as monitor:
        for name in gone:
            admin.create_topic(name, partitions=1, replication_factor=3)
            c.wait_topic_ready(admin, name)
        c.kill("broker-1", signal.SIGTERM)  # each topic's partition loses a replica, and some a leader
        wait_until(lambda: all(counted(monitor, name) for name in gone), 20,
                   what="the monitor to count an ISR shrink or an election of every topic")
        for name in gone:
            admin.delete_topic(name)
        wait_until(lambda: not any(counted(monitor, name) for name in gone), 10,
                   what="the monitor to forget the deleted topics' counters "
                        f"(it still exposes {[line for name in gone for line in counted(monitor, name)]})")
