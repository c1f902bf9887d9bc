"""A group member's requests in flight when the coordinator process dies: the restarted
coordinator answers them, not their timeouts.

The request reaches the coordinator while it is stopped (SIGSTOP: its socket takes the bytes),
then the coordinator is killed and started again: the request and its answer are gone with the
connection. Until the connection loss failed them, a sync commit waited out its whole retry
budget (20 s) and raised request_timed_out although a coordinator answered again after a
second or two -- never the CommitFailed the restarted coordinator says (it knows no member) --
and a JOIN_GROUP waited ``rebalance_timeout_ms`` + 5 s while the member's partitions went to
the others."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from fabric.client import Admin
from fabric.client.group import CommitFailed, Consumer
from fabric.client.group_admin import GroupAdmin
from tests.harness import Cluster, make_config, wait_until
from tests.integration.groups_support import HEARTBEAT_MS, SESSION_MS, make_topic, produce

REBALANCE_MS = 60_000  # a lost JOIN_GROUP waited this + 5 s: far above the bound asserted


@pytest.fixture
def crash_cluster(tmp_path: Path) -> Iterator[Cluster]:
    cluster = Cluster(make_config(tmp_path, 1))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop_all()


def _consumer(cluster: Cluster, group: str) -> Consumer:
    return Consumer(cluster.bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                    session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS,
                    rebalance_timeout_ms=REBALANCE_MS)


def _poll_until(c: Consumer, condition, timeout_s: float, what: str) -> list:  # noqa: ANN001
    got: list = []
    deadline = time.monotonic() + timeout_s
    while not condition(got):
        assert time.monotonic() < deadline, f"timed out after {timeout_s}s waiting for {what}"
        got += c.poll(100)
    return got


def _crash_coordinator_later(cluster: Cluster, delay_s: float) -> threading.Thread:
    """Stop the coordinator now (requests reach its socket, unanswered); after ``delay_s``
    kill it and start it again (not waiting for it: the test's thread is in the client)."""
    cluster.kill("coordinator", signal.SIGSTOP)

    def crash() -> None:
        time.sleep(delay_s)  # the request is on its way into the stopped coordinator meanwhile
        cluster.kill("coordinator")
        cluster.start_node("coordinator", wait=False)
    t = threading.Thread(target=crash, daemon=True)
    t.start()
    return t


def test_a_commit_lost_with_the_coordinator_is_answered_by_the_restarted_one(crash_cluster: Cluster) -> None:
    cluster = crash_cluster
    with Admin(cluster.bootstrap) as admin:
        make_topic(cluster, admin, "crash-commit", partitions=1)
    produce(cluster, "crash-commit", 10)
    tp = ("crash-commit", 0)
    c = _consumer(cluster, "g-crash-commit")
    try:
        c.subscribe(["crash-commit"])
        _poll_until(c, lambda got: len(got) >= 10, 20, "the records")
        c.commit({tp: 5})  # the connection to the coordinator is up
        crash = _crash_coordinator_later(cluster, 1.0)
        started = time.monotonic()
        with pytest.raises(CommitFailed):  # the restarted coordinator knows no member
            c.commit({tp: 10})
        took_s = time.monotonic() - started
        crash.join(timeout=30)
        cluster.wait_ready("coordinator")
        assert took_s < 15, f"the commit was answered after {took_s:.1f}s"
        # the member joins again and resumes at the commit that was acknowledged
        again = _poll_until(c, lambda got: len(got) >= 5, 30, "the records after the last commit")
        assert [r.offset for r in again] == list(range(5, 10))
        c.commit()
        assert c.committed(tp) == 10
    finally:
        c.close()


def test_a_join_lost_with_the_coordinator_is_answered_by_the_restarted_one(crash_cluster: Cluster) -> None:
    cluster = crash_cluster
    with Admin(cluster.bootstrap) as admin:
        make_topic(cluster, admin, "crash-join-a", partitions=1)
        make_topic(cluster, admin, "crash-join-b", partitions=1)
    c = _consumer(cluster, "g-crash-join")
    try:
        c.subscribe(["crash-join-a"])
        _poll_until(c, lambda got: c.assignment() == [("crash-join-a", 0)], 20, "the first assignment")
        crash = _crash_coordinator_later(cluster, 1.0)
        c.subscribe(["crash-join-a", "crash-join-b"])  # the rejoin's JOIN_GROUP goes to the stopped coordinator
        started = time.monotonic()
        _poll_until(c, lambda got: c.assignment() == [("crash-join-a", 0), ("crash-join-b", 0)], 40,
                    "the assignment of both topics")
        took_s = time.monotonic() - started
        crash.join(timeout=30)
        assert took_s < 20, f"the join took {took_s:.1f}s (rebalance_timeout_ms {REBALANCE_MS})"
        with Admin(cluster.bootstrap) as admin:  # a new client: the restarted coordinator at once
            members = GroupAdmin(admin).describe("g-crash-join")["members"]
        assert [m["member_id"] for m in members] == [c.member_id]
    finally:
        c.close()
