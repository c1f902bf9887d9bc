"""Consumer groups on a real cluster: rebalances, at-least-once takeover after a SIGKILL,
independent groups and lag, replicated committed offsets, and refused commits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from fabric import protocol as P
from fabric.blocking_client import BlockingClient
from fabric.client import Admin, Producer
from fabric.client.group import Consumer
from fabric.client.group_admin import GroupAdmin
from fabric.errors import RemoteError, UnknownTopicOrPartitionError
from tests.harness import ROOT, Cluster, make_config, wait_until
from tests.integration.groups_support import HEARTBEAT_MS, SESSION_MS, Member, make_topic, produce

CLUSTER_OPTIONS: dict = {}  # one 3-broker cluster for the module (tests/conftest.py)


def test_members_split_partitions_and_rebalance_when_a_third_joins(cluster: Cluster, admin: Admin) -> None:
    make_topic(cluster, admin, "split")
    produced = produce(cluster, "split", 300)
    a = Member(cluster.bootstrap, "g-split", ["split"], "member-a")
    b = Member(cluster.bootstrap, "g-split", ["split"], "member-b")
    members = [a, b]
    try:
        a.start()
        b.start()
        wait_until(lambda: a.assignment and b.assignment and len(a.assignment) + len(b.assignment) == 3,
                   15, what="two members to split the partitions")
        wait_until(lambda: len(a.seen()) + len(b.seen()) >= 300, 15, what="the first 300 records")
        c = Member(cluster.bootstrap, "g-split", ["split"], "member-c")
        members.append(c)
        c.start()
        # each member's assignment is what its last on_assign gave it: one whose SyncGroup answer
        # comes last still shows the previous generation's (a member with one partition too),
        # so wait for the partitions of one generation, not for three of one partition each
        every = [("split", 0), ("split", 1), ("split", 2)]
        wait_until(lambda: all(len(m.assignment) == 1 for m in members)
                   and sorted(tp for m in members for tp in m.assignment) == every,
                   15, what="three members, one partition each")
        produced += produce(cluster, "split", 300, start=300)
        wait_until(lambda: len({r for m in members for r in m.seen()}) >= 600, 20, what="all 600 records")
        for m in members:  # the new owner reads its partition from now on
            assert m.seen()[-1][0] == m.assignment[0][1]
    finally:
        for m in members:
            m.stop()
    everything = [r for m in members for r in m.seen()]
    assert sorted(everything) == sorted(produced), "every record goes to exactly one member of the group"


def test_two_groups_are_independent_and_lag_is_log_end_minus_committed(cluster: Cluster, admin: Admin) -> None:
    make_topic(cluster, admin, "lagged")
    produce(cluster, "lagged", 90)
    full = Consumer(cluster.bootstrap, group_id="g-all", auto_offset_reset="earliest", enable_auto_commit=False,
                    session_timeout_ms=SESSION_MS)
    part = Consumer(cluster.bootstrap, group_id="g-some", auto_offset_reset="earliest", enable_auto_commit=False,
                    session_timeout_ms=SESSION_MS)
    try:
        full.subscribe(["lagged"])
        part.subscribe(["lagged"])
        got: list = []
        deadline = time.monotonic() + 15
        while len(got) < 90 and time.monotonic() < deadline:
            got += full.poll(200)
        assert len(got) == 90
        full.commit()
        some = []
        while not some and time.monotonic() < deadline:
            some = part.poll(200, max_records=10)
        part.commit()
    finally:
        full.close()
        part.close()
    ends = admin.list_offsets("lagged")
    ga = GroupAdmin(admin)
    all_rows = {r.partition: r for r in ga.lag("g-all")}
    some_rows = {r.partition: r for r in ga.lag("g-some")}
    assert {p: r.lag for p, r in all_rows.items()} == {p: 0 for p in ends}
    committed_some = ga.committed("g-some")
    assert sum(committed_some.values()) == len(some) == 10
    for p, r in some_rows.items():
        assert r.log_end_offset == ends[p]
        assert r.lag == ends[p] - committed_some[("lagged", p)]
    out = CliRunner().invoke(_cli(), ["group", "describe", "g-some", "--bootstrap", cluster.bootstrap])
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    header = next(line for line in lines if line.startswith("GROUP"))
    assert header.split() == ["GROUP", "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG",
                              "CONSUMER-ID", "HOST", "CLIENT-ID"]
    table = [line.split() for line in lines[lines.index(header) + 1:]]
    assert {int(r[2]): int(r[5]) for r in table} == {p: r.lag for p, r in some_rows.items()}
    # reset-offsets: a dry run changes nothing, --execute applies (the group has no members now)
    dry = CliRunner().invoke(_cli(), ["group", "reset-offsets", "g-some", "--topic", "lagged", "--to-earliest",
                                      "--bootstrap", cluster.bootstrap])
    assert dry.exit_code == 0 and "Dry run" in dry.output, dry.output
    assert ga.committed("g-some") == committed_some
    assert "outside the log" not in dry.output
    past = CliRunner().invoke(_cli(), ["group", "reset-offsets", "g-some", "--topic", "lagged", "--to-offset",
                                       "1000000", "--bootstrap", cluster.bootstrap])
    assert past.exit_code == 0 and "outside the log, set to its start or end" in past.output, past.output
    run = CliRunner().invoke(_cli(), ["group", "reset-offsets", "g-some", "--topic", "lagged", "--to-earliest",
                                      "--execute", "--bootstrap", cluster.bootstrap])
    assert run.exit_code == 0, run.output
    assert set(ga.committed("g-some").values()) == {0}


def _cli():  # noqa: ANN202
    from nodes.cli import main
    return main


def _coordinator_call(cluster: Cluster, command: bytes, header: dict) -> dict:
    c = BlockingClient(cluster.ctx, cluster.endpoint("coordinator"))
    try:
        return c.call(command, header, timeout_ms=5000)[0]
    finally:
        c.close()


def test_bad_commits_get_clear_errors_and_change_nothing(cluster: Cluster, admin: Admin) -> None:
    make_topic(cluster, admin, "strict")
    make_topic(cluster, admin, "strict-other", partitions=1)  # a topic the member is not assigned
    produce(cluster, "strict", 30)
    join = {"group": "g-strict", "member_id": "", "topics": ["strict"], "session_timeout_ms": 10_000}
    joined = _coordinator_call(cluster, P.JOIN_GROUP, join)
    mid, gen = joined["member_id"], joined["generation"]
    synced = _coordinator_call(cluster, P.SYNC_GROUP, {"group": "g-strict", "member_id": mid, "generation": gen})
    assert sorted(map(tuple, synced["assignment"])) == [("strict", 0), ("strict", 1), ("strict", 2)]
    ends = admin.list_offsets("strict")
    good = {"group": "g-strict", "member_id": mid, "generation": gen, "offsets": [["strict", 0, ends[0]]]}
    _coordinator_call(cluster, P.OFFSET_COMMIT, good)
    before = GroupAdmin(admin).committed("g-strict")
    bad = [
        (dict(good, generation=gen - 1), P.ILLEGAL_GENERATION),
        (dict(good, group="g-nobody"), P.UNKNOWN_GROUP),
        (dict(good, member_id="stranger"), P.UNKNOWN_MEMBER),
        (dict(good, offsets=[["strict", 1, ends[1] + 5]]), P.OFFSET_OUT_OF_RANGE),
        (dict(good, offsets=[["strict-other", 0, 0]]), P.PARTITION_NOT_ASSIGNED),
        (dict(good, offsets=[["strict", 0, 0]]), P.INVALID_COMMIT_OFFSET),  # backward
        (dict(good, offsets=[["strict", 1, -3]]), P.INVALID_COMMIT_OFFSET),
        (dict(good, offsets=[["strict", 7, 0]]), P.UNKNOWN_TOPIC_OR_PARTITION),
        (dict(good, generation=-1), P.NON_EMPTY_GROUP),  # an admin reset while members are active
    ]
    for header, code in bad:
        with pytest.raises(RemoteError) as e:
            _coordinator_call(cluster, P.OFFSET_COMMIT, header)
        assert e.value.code == code, (header, e.value)
        assert e.value.message
    assert GroupAdmin(admin).committed("g-strict") == before
    _coordinator_call(cluster, P.LEAVE_GROUP, {"group": "g-strict", "member_id": mid})
    with pytest.raises(RemoteError) as e:  # the member left: its generation is gone
        _coordinator_call(cluster, P.OFFSET_COMMIT, good)
    assert e.value.code in (P.UNKNOWN_MEMBER, P.UNKNOWN_GROUP)


VICTIM = """
import sys
from fabric.client.group import Consumer
bootstrap, group, topic, path = sys.argv[1:5]
out = open(path, "a")
def assigned(tps):
    out.write("A " + " ".join(str(p) for _, p in tps) + "\\n"); out.flush()
c = Consumer(bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
             session_timeout_ms=%d, heartbeat_interval_ms=%d, client_id="victim", on_assign=assigned)
c.subscribe([topic])
while True:
    recs = c.poll(100)
    for r in recs:
        out.write("R %%d %%d\\n" %% (r.partition, r.offset))
    out.flush()
    if recs:
        offs = {}
        for r in recs:
            offs[(r.topic, r.partition)] = r.offset + 1
        c.commit(offs)
        for (t, p), o in offs.items():
            out.write("C %%d %%d\\n" %% (p, o))
        out.flush()
""" % (SESSION_MS, HEARTBEAT_MS)


def _read_victim(path: Path) -> tuple[list[int], list[tuple[int, int]], dict[int, int]]:
    assigned: list[int] = []
    records: list[tuple[int, int]] = []
    commits: dict[int, int] = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if not parts or (parts[0] != "A" and len(parts) != 3):
            continue  # a torn last line
        if parts[0] == "A":
            assigned = [int(p) for p in parts[1:]]
        elif parts[0] == "R":
            records.append((int(parts[1]), int(parts[2])))
        elif parts[0] == "C":
            commits[int(parts[1])] = int(parts[2])
    return assigned, records, commits


def test_sigkilled_member_partitions_taken_over_at_committed_offsets(cluster: Cluster, admin: Admin,
                                                                      tmp_path: Path) -> None:
    make_topic(cluster, admin, "takeover")
    out = tmp_path / "victim.txt"
    out.touch()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    victim = subprocess.Popen([sys.executable, "-c", VICTIM, cluster.bootstrap, "g-takeover", "takeover", str(out)],
                              cwd=str(ROOT), env=env)
    survivor = Member(cluster.bootstrap, "g-takeover", ["takeover"], "survivor")
    produced: list[tuple[int, int]] = []
    stop_producing = threading.Event()

    def keep_producing() -> None:
        with Producer(cluster.bootstrap, linger_ms=2) as p:
            for i in range(60):  # bounded: at most 60 rounds of 10 records
                if stop_producing.is_set():
                    break
                fs = [p.send("takeover", b"x%d-%d" % (i, j), key=b"%d-%d" % (i, j)) for j in range(10)]
                p.flush(10)
                produced.extend((f.result().partition, f.result().offset) for f in fs)
                time.sleep(0.05)  # pacing the stream, not synchronising
    producer = threading.Thread(target=keep_producing, daemon=True)
    try:
        wait_until(lambda: _read_victim(out)[0], 15, what="the victim to be assigned")
        survivor.start()
        wait_until(lambda: survivor.assignment and len(_read_victim(out)[0]) + len(survivor.assignment) == 3,
                   15, what="the partitions to split between victim and survivor")
        producer.start()
        wait_until(lambda: len(_read_victim(out)[2]) > 0 and len(produced) >= 100, 15, what="the victim to commit")
        victim_parts = _read_victim(out)[0]
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        # the session (1.5 s) expires, the survivor rejoins: a couple of seconds, more on a loaded
        # 2-core machine; a takeover that waited for the dead member's rebalance timeout (30 s)
        # instead is what the bound catches
        wait_until(lambda: len(survivor.assignment) == 3, 30, what="the survivor to take every partition")
        took_s = time.monotonic() - killed_at
        assert took_s < SESSION_MS / 1000 + 10, f"takeover took {took_s:.1f}s"
        producer.join(timeout=30)
        wait_until(lambda: set(produced) <= set(survivor.seen()) | set(_read_victim(out)[1]), 20,
                   what="every produced record to be delivered")
    finally:
        stop_producing.set()
        if victim.poll() is None:
            victim.kill()
            victim.wait(timeout=10)
        survivor.stop()
    _, victim_records, victim_commits = _read_victim(out)
    again = set(survivor.seen()) & set(victim_records)
    for p, o in again:  # only the uncommitted tail is delivered twice
        assert p in victim_parts and o >= victim_commits.get(p, 0), (p, o, victim_commits)
    for p in victim_parts:  # the survivor resumed each taken partition at (or before) the victim's end
        first = min((o for q, o in survivor.seen() if q == p), default=None)
        delivered_end = max((o + 1 for q, o in victim_records if q == p), default=0)
        if first is not None:
            # a commit acknowledged just before the kill may not be in the victim's file yet,
            # so the survivor may start after the last commit line -- never after a delivered record
            assert first <= delivered_end, f"{p}: records from {delivered_end} to {first} were skipped"


def test_committed_offsets_survive_coordinator_restart_and_broker_kill(tmp_path: Path) -> None:
    cluster = Cluster(make_config(tmp_path, 3))
    admins: list[Admin] = []

    def fresh_admin() -> tuple[Admin, GroupAdmin]:
        """A new client after a restart (no waiting out the old socket's reconnect backoff)."""
        admins.append(Admin(cluster.bootstrap, timeout_ms=3000))
        return admins[-1], GroupAdmin(admins[-1])
    try:
        cluster.start()
        admin, ga = fresh_admin()
        make_topic(cluster, admin, "durable")
        produce(cluster, "durable", 60)
        ends = admin.list_offsets("durable")
        ga.execute_reset("g-durable", {("durable", p): (-1, ends[p] - 1) for p in ends})
        expected = {("durable", p): ends[p] - 1 for p in ends}
        assert ga.committed("g-durable") == expected
        cluster.kill("coordinator")
        cluster.start_node("coordinator")
        admin, ga = fresh_admin()
        wait_until(lambda: ga.committed("g-durable") == expected, 20, what="offsets after a coordinator restart")
        # kill the broker that leads the group's offsets partition, commit with it down, then
        # make the coordinator reload everything from the surviving replicas
        from nodes.coordinator.offsets import OFFSETS_TOPIC, OffsetStore
        q = OffsetStore.partition_for_group("g-durable")
        leader = admin.metadata().partition(OFFSETS_TOPIC, q).leader
        cluster.kill(f"broker-{leader}")
        wait_until(lambda: admin.metadata().partition(OFFSETS_TOPIC, q).leader not in (leader, -1), 15,
                   what="a new leader of the offsets partition")
        expected = {("durable", p): ends[p] for p in ends}
        wait_until(lambda: ga.execute_reset("g-durable", {tp: (-1, o) for tp, o in expected.items()}) or True,
                   20, what="a commit with one broker down")
        cluster.kill("coordinator")
        cluster.start_node("coordinator")
        admin, ga = fresh_admin()
        wait_until(lambda: ga.committed("g-durable") == expected, 20,
                   what="offsets after a broker loss and a coordinator restart")
    finally:
        for a in admins:
            a.close()
        cluster.stop_all()


def test_internal_offsets_topic_cannot_be_altered_deleted_or_written_by_clients(cluster: Cluster, admin: Admin) -> None:
    make_topic(cluster, admin, "g-internal", 1)
    produce(cluster, "g-internal", 3)
    c = Consumer(cluster.bootstrap, group_id="g-internal", auto_offset_reset="earliest")
    try:
        c.subscribe(["g-internal"])
        wait_until(lambda: c.poll(200), 20, what="records for the group")
        c.commit()
    finally:
        c.close()
    assert "__consumer_offsets" in admin.metadata().topics
    before = admin.metadata().topics["__consumer_offsets"]
    for call in (lambda: admin.alter_topic("__consumer_offsets", configs={"min.insync.replicas": 1}),
                 lambda: admin.alter_topic("__consumer_offsets", partitions=100),
                 lambda: admin.delete_topic("__consumer_offsets"),
                 lambda: admin.create_topic("__mine", 1, 1)):
        with pytest.raises(RemoteError) as e:
            call()
        assert e.value.code == P.INVALID_TOPIC
    after = admin.metadata().topics["__consumer_offsets"]
    assert (after.configs, len(after.partitions)) == (before.configs, len(before.partitions))
    # a client's records there would be loaded as commits or tombstones at the coordinator's next start
    with Producer(cluster.bootstrap, acks="all") as p:
        with pytest.raises(RemoteError) as e:
            p.send("__consumer_offsets", b"forged", key=b"g-internal", partition=0).result(10)
    assert e.value.code == P.INVALID_TOPIC
    produce(cluster, "g-internal", 2)
    again = Consumer(cluster.bootstrap, group_id="g-internal", auto_offset_reset="earliest")
    try:  # the coordinator's own appends still go through
        again.subscribe(["g-internal"])
        wait_until(lambda: again.poll(200), 20, what="the records after the group's commit")
        again.commit()
        assert again.committed(("g-internal", 0)) == 5
    finally:
        again.close()


def test_an_assigned_consumers_poll_does_not_wait_for_a_stalled_coordinator(cluster: Cluster, admin: Admin) -> None:
    """An assigned consumer with a group id starts at the group's committed offset; the lookup
    no longer blocks ``poll`` (it retried for up to 10 s): with the coordinator stalled,
    ``poll(0)`` returns at once, and once the coordinator is back the consumer reads from
    the committed offset, not from ``auto_offset_reset``."""
    make_topic(cluster, admin, "assigned-stall", partitions=1)
    produce(cluster, "assigned-stall", 40)
    tp = ("assigned-stall", 0)
    with Consumer(cluster.bootstrap, group_id="g-assigned-stall", enable_auto_commit=False) as first:
        first.assign([tp])
        first.commit({tp: 30})
    c = Consumer(cluster.bootstrap, group_id="g-assigned-stall", auto_offset_reset="latest", enable_auto_commit=False)
    cluster.kill("coordinator", signal.SIGSTOP)
    try:
        c.assign([tp])
        started = time.monotonic()
        assert c.poll(timeout_ms=0) == []
        assert c.poll(timeout_ms=300) == []
        assert time.monotonic() - started < 5, "poll waited for the stalled coordinator"
        assert c.position(tp) is None, "the partition was reset to latest while its commit was looked up"
    finally:
        cluster.kill("coordinator", signal.SIGCONT)
    try:
        got: list = []
        wait_until(lambda: got.extend(c.poll(timeout_ms=200)) or len(got) >= 10, 30, what="the records after the commit")
        assert got[0].offset == 30 and [r.offset for r in got] == list(range(30, 40))
    finally:
        c.close()


def test_a_commit_of_a_partition_the_topic_lacks_fails_at_once(cluster: Cluster, admin: Admin) -> None:
    """The coordinator holds the cluster's metadata: when it answers that a commit's partition
    does not exist, it does not. The commit raised only after retrying for COMMIT_TIMEOUT_MS
    (20 s), unknown_topic_or_partition being retriable elsewhere (a broker that has not heard
    of a new topic yet); now it raises at once, as Kafka's consumer does, and changes nothing."""
    make_topic(cluster, admin, "few", partitions=1)
    with Consumer(cluster.bootstrap, group_id="g-few", enable_auto_commit=False) as c:
        c.assign([("few", 0)])
        c.commit({("few", 0): 0})
        for offsets in ({("few", 7): 0}, {("no-such-topic", 0): 0}):
            started = time.monotonic()
            with pytest.raises(UnknownTopicOrPartitionError):
                c.commit(offsets)
            assert time.monotonic() - started < 5, f"{offsets}: a commit the coordinator refused for good was retried"
        assert c.committed(("few", 0)) == 0
