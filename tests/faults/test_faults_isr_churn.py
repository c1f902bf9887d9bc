"""ISR churn under faults: many ISR shrinks and expansions racing metadata pushes, with the
acks=all idempotent workload and the checker of ``workload_checker.py`` (no acknowledged record lost, no
duplicate, order per partition, replicas identical below the HW, one leader per epoch).

The class of bug: a broker applying ISR/leader state older than what it already holds (a
stale push after an ALTER_ISR reply), or ISR work that grows with partitions until the cluster
cannot keep up (one request, store write and push per partition).
"""

from __future__ import annotations

import time

import pytest

from tests.faults import workload_checker as J
from fabric.client import Admin
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.faults
RESTART_ORDER = ["broker-3", "broker-2", "broker-3", "broker-1", "broker-3", "broker-2"]


def _cluster(cluster_factory) -> Cluster:  # noqa: ANN001
    return cluster_factory(3, fsync="always", overrides={"faults": {"enabled": True}})


def _restart(c: Cluster, admin: Admin, victim: str, w: J.Workload, acks_down: int) -> None:
    """Kill ``victim``, keep writing, restart it and return as soon as it is back in every ISR:
    the next kill then lands right after a wave of ISR expansions (elections may pick a replica
    that has only just been re-admitted, which is what a rolled-back ISR would make unsafe)."""
    bid = int(victim.split("-")[1])
    c.kill(victim)
    w.wait_acks(acks_down, timeout_s=30)  # writes go on (leaders move, ISRs shrink)
    c.start_node(victim)
    wait_until(lambda: all(bid in p.isr for p in admin.metadata().topics[J.TOPIC].partitions), 60,
               interval_s=0.1, what=f"{victim} back in every ISR")


def test_isr_changes_during_rapid_restarts_of_several_brokers(cluster_factory) -> None:  # noqa: ANN001
    c = _cluster(cluster_factory)
    admin, w, obs = J.setup(c, partitions=12, keys=120)
    for victim in RESTART_ORDER:
        # restart before the ISRs have settled from the last one: expansions and shrinks of
        # many partitions overlap with the coordinator's pushes
        _restart(c, admin, victim, w, acks_down=150)
    J.finish(c, admin, w, obs)


@pytest.mark.slow
def test_thousand_partition_topic_under_restarts(cluster_factory) -> None:  # noqa: ANN001
    started = time.monotonic()
    c = _cluster(cluster_factory)
    admin, w, obs = J.setup(c, partitions=1000, keys=300)
    for victim in c.broker_names():
        _restart(c, admin, victim, w, acks_down=300)
    # every one of the 1,000 partitions is back to a full ISR, and the data checks out
    report = J.finish(c, admin, w, obs)
    print(f"1,000 partitions under restarts: {report}, {time.monotonic() - started:.1f} s")
