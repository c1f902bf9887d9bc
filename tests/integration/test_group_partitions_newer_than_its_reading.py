"""A partition with nothing committed in a group starts at its log start, whatever
``auto_offset_reset`` says, when it was made after the group began reading its topic (KAFKA-12261
for a group): also for a member that joined, or restarted, after it was made -- a new process
cannot tell, and under ``latest`` it skipped every record written to the partition before its
first fetch. The coordinator judges (nodes/coordinator/group_readings.py) and says so in its
OFFSET_FETCH answer (``newer_than_reading``). Real processes on one 3-broker cluster for the
module; the last tests each have a cluster of their own, whose coordinator they restart."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from fabric.client import Admin, Producer
from fabric.client.group import Consumer
from fabric.client.group_admin import GroupAdmin
from nodes.coordinator.offsets import OffsetStore
from tests.harness import Cluster, make_config, wait_until
from tests.integration.groups_support import HEARTBEAT_MS, SESSION_MS, make_topic

CLUSTER_OPTIONS: dict = {}  # one 3-broker cluster for the module (tests/conftest.py)


def _poll_until(c: Consumer, done, timeout_s: float, what: str) -> list:
    """Poll ``c`` until ``done(records so far)``, for up to ``timeout_s``."""
    got: list = []
    wait_until(lambda: got.extend(c.poll(timeout_ms=200)) or done(got), timeout_s, what=what)
    return got


def _read_by_a_member_that_closes(cluster: Cluster, topic: str, group: str, **settings: object) -> None:
    """A member of ``group`` (``auto_offset_reset="latest"``) reads the 5 records written to
    ``topic``-0 once it is positioned, then closes: it commits 5 and leaves the group empty."""
    first = Consumer(cluster.bootstrap, group_id=group, **settings)
    try:
        first.subscribe([topic])
        wait_until(lambda: first.poll(timeout_ms=100) == [] and first.assignment() == [(topic, 0)]
                   and first.position((topic, 0)) is not None, 20, what="the first member positioned")
        with Producer(cluster.bootstrap, acks="all") as p:
            for i in range(5):
                p.send(topic, b"old-%d" % i, partition=0)
            p.flush(20)
        _poll_until(first, lambda got: len(got) >= 5, 20, what="the first member's records")
    finally:
        first.close()


def _written_to(cluster: Cluster, topic: str, partitions: list[int], n: int) -> list[tuple[int, int]]:
    """``n`` records to each of ``partitions``: their (partition, offset)s."""
    with Producer(cluster.bootstrap, acks="all") as p:
        futures = [p.send(topic, b"new-%d" % i, partition=q) for q in partitions for i in range(n)]
        p.flush(20)
        return sorted((f.result().partition, f.result().offset) for f in futures)


def _read_by_a_new_member(cluster: Cluster, topic: str, group: str, expected: list[tuple[int, int]],
                          **settings: object) -> list[tuple[int, int]]:
    """What a new member of ``group`` (another process) reads of ``topic`` until it has every
    record ``expected`` or is positioned past them, as (partition, offset)s."""
    second = Consumer(cluster.bootstrap, group_id=group, **settings)
    last = {q: o for q, o in expected}  # the last expected offset of each partition
    try:
        second.subscribe([topic])
        got = _poll_until(second, lambda got: len(got) >= len(expected) or all(
            (second.position((topic, q)) or 0) > o for q, o in last.items()), 20, what="the new partitions read")
        return sorted((r.partition, r.offset) for r in got)
    finally:
        second.close()


LATEST = dict(auto_offset_reset="latest", session_timeout_ms=SESSION_MS, heartbeat_interval_ms=HEARTBEAT_MS)


def test_a_partition_added_while_the_group_had_no_member_is_read_from_its_log_start_under_latest(
        cluster: Cluster, admin: Admin) -> None:
    """KAFKA-12261 for a group: its one member reads a 1-partition topic with ``latest`` and
    closes; a partition is added and written to; a new member (another process: it never saw the
    topic with one partition) joins. The partition was made after the group began reading the
    topic, so it starts at its log start -- it started at the log end, past every record."""
    make_topic(cluster, admin, "grown", partitions=1)
    _read_by_a_member_that_closes(cluster, "grown", "g-grown", **LATEST)
    assert GroupAdmin(admin).committed("g-grown") == {("grown", 0): 5}
    admin.alter_topic("grown", partitions=2)
    cluster.wait_topic_ready(admin, "grown")
    written = _written_to(cluster, "grown", [1], 20)
    got = _read_by_a_new_member(cluster, "grown", "g-grown", written, **LATEST)
    assert got == written, f"read {got}: the new partition's records were skipped (or grown-0 read again)"


def test_a_topic_made_again_while_the_group_had_no_member_is_read_from_its_log_start_under_latest(
        cluster: Cluster, admin: Admin) -> None:
    """The group's one member reads a topic with ``latest`` and closes; the topic is deleted and
    made again (two partitions) and written to; a new member joins. Every record of the new topic
    is newer than the group's reading of the topic: it reads them all."""
    make_topic(cluster, admin, "remade", partitions=1)
    _read_by_a_member_that_closes(cluster, "remade", "g-remade", **LATEST)
    admin.delete_topic("remade")
    make_topic(cluster, admin, "remade", partitions=2)
    written = _written_to(cluster, "remade", [0, 1], 10)
    got = _read_by_a_new_member(cluster, "remade", "g-remade", written, **LATEST)
    assert got == written, f"read {got}: the new topic's records were skipped"


def test_a_new_partition_its_first_owner_read_but_never_committed_is_read_from_its_log_start_by_the_next(
        cluster: Cluster, admin: Admin) -> None:
    """The member that noticed a partition added to its topic (and read it from its log start)
    stops before committing it; its successor, a new process, saw the partition from the start.
    The partition is newer than the group's reading, so the successor reads it from its log start
    too -- it started at the log end (``latest``), past every record the first owner never committed."""
    make_topic(cluster, admin, "noticed", partitions=1)
    settings = dict(LATEST, enable_auto_commit=False)
    first = Consumer(cluster.bootstrap, group_id="g-noticed", **settings)
    try:
        first.subscribe(["noticed"])
        wait_until(lambda: first.poll(timeout_ms=100) == [] and first.assignment() == [("noticed", 0)]
                   and first.position(("noticed", 0)) is not None, 20, what="the first member positioned")
        first.commit()
        admin.alter_topic("noticed", partitions=2)
        cluster.wait_topic_ready(admin, "noticed")
        written = _written_to(cluster, "noticed", [1], 20)
        got = _poll_until(first, lambda got: len(got) >= 20, 20, what="the first member reading the new partition")
        assert sorted((r.partition, r.offset) for r in got) == written
    finally:
        first.close()  # no auto-commit: nothing committed of noticed-1
    assert ("noticed", 1) not in GroupAdmin(admin).committed("g-noticed")
    got = _read_by_a_new_member(cluster, "noticed", "g-noticed", written, **settings)
    assert got == written, f"read {got}: the records of the new partition that nobody committed were skipped"


class _Restartable:
    """A 3-broker cluster of a test's own, whose coordinator the test kills and starts again."""

    def __init__(self, tmp_path: Path) -> None:
        self.cluster = Cluster(make_config(tmp_path, 3))
        self.state_file = tmp_path / "data" / "coordinator" / "cluster-state.json"
        self.admins: list[Admin] = []

    @property
    def admin(self) -> Admin:
        return self.admins[-1]

    def restart_coordinator(self) -> None:
        """SIGKILL the coordinator and start it again; a new admin client (no waiting out the old
        socket's backoff)."""
        self.cluster.kill("coordinator")
        self.cluster.start_node("coordinator")
        self.admins.append(Admin(self.cluster.bootstrap, timeout_ms=3000))

    def wait_committed(self, group: str, expected: dict) -> None:
        ga = GroupAdmin(self.admin)
        wait_until(lambda: ga.committed(group) == expected, 20,
                   what="the group's offsets after the coordinator's restart")


@contextmanager
def _restartable(tmp_path: Path) -> Iterator[_Restartable]:
    r = _Restartable(tmp_path)
    try:
        r.cluster.start()
        r.admins.append(Admin(r.cluster.bootstrap, timeout_ms=3000))
        yield r
    finally:
        for a in r.admins:
            a.close()
        r.cluster.stop_all()


@pytest.mark.parametrize("recommitted", [False, True])
def test_a_partition_added_before_a_coordinator_restart_is_still_newer_than_the_groups_reading(
        tmp_path: Path, recommitted: bool) -> None:
    """Scenario of the first test above with the coordinator SIGKILLed and restarted between the
    new partition's records and the new member's join: membership is gone, but the group's
    reading of the topic, older than the partition, is stored in its offsets partition -- so the
    new member still reads the partition from its log start. ``recommitted``: the group's offset
    of the first partition is committed again (an administrator's reset) after the second was
    made, so no commit is older than the new partition and only the stored reading shows it newer
    (before, it followed ``latest``: every record written to it before the new member's first
    fetch was skipped)."""
    with _restartable(tmp_path) as r:
        cluster, topic, group = r.cluster, f"restarted-{int(recommitted)}", f"g-restarted-{int(recommitted)}"
        make_topic(cluster, r.admin, topic, partitions=1)
        _read_by_a_member_that_closes(cluster, topic, group, **LATEST)
        r.admin.alter_topic(topic, partitions=2)
        cluster.wait_topic_ready(r.admin, topic)
        written = _written_to(cluster, topic, [1], 20)
        if recommitted:
            GroupAdmin(r.admin).execute_reset(group, {(topic, 0): (5, 5)})
        r.restart_coordinator()
        r.wait_committed(group, {(topic, 0): 5})
        got = _read_by_a_new_member(cluster, topic, group, written, **LATEST)
        assert got == written, f"read {got}: the new partition's records were skipped after the coordinator restarted"


def test_a_topic_made_again_is_read_from_its_log_start_after_a_snapshot_and_a_coordinator_restart(
        tmp_path: Path) -> None:
    """The group reads a topic with ``latest`` and closes; the topic is deleted and made again
    and written to. The coordinator restarts on a state file that remembers no snapshot (as one
    written before snapshots existed): it reads the offsets topic from its start and at once
    writes each partition's snapshot; it restarts again, now from that snapshot. The snapshot kept
    the group's reading and its commit of the old topic: a new member reads every record of the
    new topic. Before, the snapshot left the old topic's commit out, the reading was not stored,
    and the member started at the log end."""
    with _restartable(tmp_path) as r:
        cluster = r.cluster
        make_topic(cluster, r.admin, "remade-snap", partitions=1)
        _read_by_a_member_that_closes(cluster, "remade-snap", "g-remade-snap", **LATEST)
        r.admin.delete_topic("remade-snap")
        make_topic(cluster, r.admin, "remade-snap", partitions=2)
        written = _written_to(cluster, "remade-snap", [0, 1], 10)
        cluster.kill("coordinator")
        state = json.loads(r.state_file.read_text())
        state["offsets_snapshots"] = {}
        r.state_file.write_text(json.dumps(state))
        cluster.start_node("coordinator")
        r.admins.append(Admin(cluster.bootstrap, timeout_ms=3000))
        q = str(OffsetStore.partition_for_group("g-remade-snap"))
        wait_until(lambda: q in json.loads(r.state_file.read_text()).get("offsets_snapshots", {}), 30,
                   what="the group's offsets partition's snapshot")
        r.restart_coordinator()
        got = _read_by_a_new_member(cluster, "remade-snap", "g-remade-snap", written, **LATEST)
        assert got == written, f"read {got}: the new topic's records were skipped after the snapshot and the restart"
