"""A coordinator that was itself stalled (SIGSTOP/SIGCONT) judges nobody by the silence it did
not listen to: after it resumes, no broker is declared dead, no leadership moves, no group
rebalances because of it."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from fabric.client import Admin
from fabric.client.group_admin import GroupAdmin
from tests.harness import running_cluster, wait_until
from tests.integration.groups_support import SESSION_MS as MEMBER_SESSION_MS
from tests.integration.groups_support import Member

SESSION_MS = 2000  # the brokers' session here (the test config's 3 s made every wait below longer)
STALL_S = 3.25 * max(SESSION_MS, MEMBER_SESSION_MS) / 1000  # the fault: over three sessions of brokers and members
WATCH_AFTER_RESUME_S = 2.25 * max(SESSION_MS, MEMBER_SESSION_MS) / 1000  # over two: any verdict would be passed


def _leaders(admin: Admin, topic: str) -> list[tuple[int, int]]:
    return [(p.leader, p.leader_epoch) for p in admin.metadata().topics[topic].partitions]


def test_stalled_coordinator_declares_no_broker_dead_moves_no_leader_rebalances_no_group(tmp_path: Path) -> None:
    with running_cluster(tmp_path, overrides={"liveness": {"session_timeout_ms": SESSION_MS}}) as cluster, \
            Admin(cluster.bootstrap) as admin:
        admin.create_topic("stall", 3)
        cluster.wait_topic_ready(admin, "stall")
        groups = GroupAdmin(admin)
        member = Member(cluster.bootstrap, "g-stall", ["stall"], "member-a")
        member.start()
        try:
            wait_until(lambda: len(member.assignment) == 3 and groups.describe("g-stall")["state"] == "Stable",
                       20, what="the member to own every partition")
            generation = groups.describe("g-stall")["generation"]
            leaders = _leaders(admin, "stall")
            cluster.kill("coordinator", signal.SIGSTOP)
            time.sleep(STALL_S)  # the stall itself, not a synchronisation
            cluster.kill("coordinator", signal.SIGCONT)
            cluster.wait_ready("coordinator")
            deadline = time.monotonic() + WATCH_AFTER_RESUME_S
            while time.monotonic() < deadline:
                stats = cluster.stats("coordinator")
                assert stats["brokers_alive"] == [1, 2, 3], stats["brokers_alive"]
                assert _leaders(admin, "stall") == leaders
                group = groups.describe("g-stall")
                assert (group["state"], group["generation"]) == ("Stable", generation), group
                time.sleep(0.2)  # sampling interval of a condition that must hold throughout
            assert member.generations == 1, f"the member was reassigned {member.generations - 1} times"
            assert stats["stalls"] >= 1  # it did notice its own stall
        finally:
            member.stop()
        log = (cluster.log_dir / "coordinator.log").read_text()
        assert "missed its session" not in log
