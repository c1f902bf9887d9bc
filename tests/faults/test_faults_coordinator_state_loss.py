"""Fault scenario: a coordinator restarted from an empty data dir under the acks=all workload.

The coordinator is stopped, its data directory moved away and it starts empty (a new cluster
id); meanwhile a follower is killed and restarted, so that one broker meets the empty
coordinator at registration and the others hear its pushes. Then the coordinator's state is put
back. The checker (workload_checker.py) finds no acknowledged record lost, and no broker ever removed a
partition directory: the brokers refused the foreign metadata and kept their data.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.faults import workload_checker as J
from tests.harness import Cluster, wait_until

pytestmark = pytest.mark.faults


def _partition_dirs(c: Cluster) -> dict[str, set[str]]:
    root = Path(c.raw["cluster"]["data_dir"])
    return {b: {d.name for d in (root / b).iterdir() if d.is_dir() and d.name.startswith(f"{J.TOPIC}-")}
            for b in c.broker_names()}


def _refused(c: Cluster, broker: str) -> bool:
    return "cluster" in (c.stats(broker).get("metadata_refused") or "")


def _answered(c: Cluster, broker: str) -> bool:
    """The broker has acted on (accepted or refused) the running coordinator's metadata."""
    s = c.stats(broker)
    return bool(s.get("metadata_refused")) or s["metadata_version"] >= 0


def test_coordinator_restarted_from_an_empty_data_dir(cluster_factory) -> None:
    c = cluster_factory(3, fsync="always", overrides={"faults": {"enabled": True}})
    admin, w, obs = J.setup(c)
    victim = J.follower_name(admin, 0)
    before = _partition_dirs(c)
    assert all(len(d) == J.PARTITIONS for d in before.values()), before

    state_dir = Path(c.raw["cluster"]["data_dir"]) / "coordinator"
    kept = state_dir.with_name("coordinator.kept")
    c.kill("coordinator")
    state_dir.rename(kept)
    c.start_node("coordinator")
    c.kill(victim)
    c.start_node(victim)
    wait_until(lambda: _answered(c, victim), 20, what=f"{victim} to act on the empty coordinator's metadata")
    assert _partition_dirs(c) == before, "a broker removed partition directories"
    for b in c.broker_names():
        wait_until(lambda: _refused(c, b), 20, what=f"{b} to refuse the empty coordinator")

    c.stop("coordinator")
    state_dir.rename(state_dir.with_name("coordinator.empty"))
    kept.rename(state_dir)
    c.start_node("coordinator")
    w.wait_acks(500, timeout_s=60)
    assert _partition_dirs(c) == before
    J.finish(c, admin, w, obs)
    assert _partition_dirs(c) == before
