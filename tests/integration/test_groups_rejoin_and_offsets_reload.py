"""Consumer groups on a real cluster: a member that stops polling leaves and rejoins
(max_poll_interval_ms), and a restarted coordinator loads the offsets from snapshots."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable

from fabric.client import Admin
from fabric.client.group import Consumer
from fabric.client.group_admin import GroupAdmin
from nodes.coordinator.offsets import OFFSETS_TOPIC, OffsetStore
from tests.harness import Cluster, wait_until
from tests.integration.groups_support import HEARTBEAT_MS, SESSION_MS, Member, make_topic, produce

CLUSTER_OPTIONS: dict = {}  # one 3-broker cluster for the module (tests/conftest.py)
ADMIN_OPTIONS = {"timeout_ms": 3000}


def test_member_that_stops_polling_is_rebalanced_out_and_rejoins(cluster: Cluster, admin: Admin) -> None:
    make_topic(cluster, admin, "stuck")
    busy = Member(cluster.bootstrap, "g-stuck", ["stuck"], "busy")
    stuck = Consumer(cluster.bootstrap, group_id="g-stuck", auto_offset_reset="earliest", client_id="stuck",
                     session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS, max_poll_interval_ms=1500)
    ga = GroupAdmin(admin)

    def poll_until(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 15
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            stuck.poll(100)
    try:
        busy.start()
        stuck.subscribe(["stuck"])
        poll_until(lambda: bool(stuck.assignment()) and len(stuck.assignment()) + len(busy.assignment) == 3,
                   "two members to split the partitions")
        # the application behind `stuck` stops calling poll(); its heartbeats alone must not keep it in
        wait_until(lambda: len(busy.assignment) == 3, 15, what="the busy member to take every partition")
        assert [m["client_id"] for m in ga.describe("g-stuck")["members"]] == ["busy"]
        poll_until(lambda: bool(stuck.assignment()) and len(busy.assignment) < 3, "the next poll to rejoin")
        assert sorted(m["client_id"] for m in ga.describe("g-stuck")["members"]) == ["busy", "stuck"]
    finally:
        stuck.close()
        busy.stop()


def _snapshot_pointers(cluster: Cluster) -> dict:
    (state,) = Path(cluster.raw["cluster"]["data_dir"]).glob("**/cluster-state.json")
    return json.loads(state.read_text()).get("offsets_snapshots", {})


def test_restarted_coordinator_loads_offsets_from_the_latest_snapshot(cluster: Cluster, admin: Admin) -> None:
    make_topic(cluster, admin, "snap")
    produce(cluster, "snap", 30)
    ends = admin.list_offsets("snap")
    ga = GroupAdmin(admin)
    ga.execute_reset("g-snap", {("snap", p): (-1, ends[p] - 1) for p in ends})
    q = str(OffsetStore.partition_for_group("g-snap"))
    # a coordinator that loads a partition without a snapshot writes one at once
    cluster.kill("coordinator")
    cluster.start_node("coordinator")
    wait_until(lambda: q in _snapshot_pointers(cluster), 20, what="a snapshot of the group's offsets partition")
    first = _snapshot_pointers(cluster)[q][0]
    expected = {("snap", p): ends[p] for p in ends}
    with Admin(cluster.bootstrap, timeout_ms=3000) as a2:
        wait_until(lambda: GroupAdmin(a2).execute_reset("g-snap", {tp: (-1, o) for tp, o in expected.items()}) or True,
                   20, what="a commit after the snapshot")
    cluster.kill("coordinator")
    cluster.start_node("coordinator")
    with Admin(cluster.bootstrap, timeout_ms=3000) as a3:
        wait_until(lambda: GroupAdmin(a3).committed("g-snap") == expected, 20, what="offsets after the restart")
        assert admin.metadata().topics[OFFSETS_TOPIC].configs["retention.ms"] > 0
    log = (cluster.log_dir / "coordinator.log").read_text()
    assert "no snapshot" not in log
    assert first >= 1 and f"{OFFSETS_TOPIC}-{q} loaded up to offset" in log
