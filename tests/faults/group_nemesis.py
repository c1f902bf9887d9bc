"""A randomized nemesis for consumer groups and committed offsets (exploratory, seedable).

    python -m tests.faults.group_nemesis --seed 7 [--duration-s 60] [--dir DIR] [--unclean] [--small-buffers]

Per seed: a 3-broker cluster and its coordinator on 127.0.0.1 (free ports, fsync always), a
topic of 3 to 6 partitions RF 3, the fault suite's idempotent acks=all producer writing unique
values (``workload_checker.Workload``), 2 or 3 group members in processes of their own
(``group_nemesis_member``: sync, async and auto commits; range, round-robin or sticky), an
observer of the group's committed offsets (OFFSET_FETCH through GroupAdmin, with the log ends),
and a nemesis -- one fault at a time (seeds divisible by 4) or in three concurrent lanes
(brokers, coordinator, members; still at most one broker down) -- that at random times:

- SIGKILLs a broker (often the leader of the group's offsets partition) and restarts it, or
  every broker at once;
- SIGSTOPs a broker past its session and SIGCONTs it;
- cuts the offsets leader from the other brokers (not from the coordinator) past the commit
  deadline; SIGSTOPs the coordinator past the commit deadline while the offsets leader is killed;
- SIGKILLs the coordinator and restarts it (alone or with a member), SIGSTOPs it past the
  sessions and SIGCONTs it;
- SIGKILLs a member and starts it again, SIGSTOPs one past its session (a zombie that then
  polls and commits), stalls one past max_poll_interval_ms between its records and their commit.

Some seeds have the coordinator snapshot the offsets every 50 or 300 commit records
(``group_nemesis_node``), so that snapshots are written and loaded under the faults.

After healing (every node running) the members are killed under load (uncommitted tails left
behind), the producer stops, the emptied group is reset backward (``reset-offsets --shift-by``)
and the coordinator and/or the offsets leader SIGKILLed right after, then a fresh member reads
the group from its commits. The checker asserts:

- every acknowledged record was delivered to some member (redelivery allowed, a skip is not),
  and by the members before they are killed, within 60 s of the group settling (the fresh
  member would otherwise cover a member that stopped reading; in unclean mode: every record
  of the log up to the HWs then, at its offset);
- the value delivered at (partition, offset) is the one acknowledged there, and the one the
  final log holds there (no dirty read: a record read past the HW, then truncated);
- within one assignment of one member process, offsets of a partition are contiguous and
  increasing (no record twice, none skipped, no position going back);
- an assignment starts a partition at its first delivered record, never above every offset the
  group may have committed by then, and never below a commit acknowledged before it;
- the committed offset of a partition never goes backwards (until the explicit reset), and
  never exceeds the log end; an acknowledged reset survives the SIGKILLs after it;
- the fresh member starts each partition exactly at the last committed offset;
- the group settles with every partition assigned to exactly one member;
- no node logged a Traceback or exited by itself, no member crashed.

With ``--small-buffers`` the members fetch ahead within 1 byte (``buffered_bytes_max``): one
batch per leader at a time, every fetch made, answered and taken at the bound's edge under the
faults (without it a seed runs exactly as it always did); the producer then lingers 100 ms,
so that a batch holds several records and the members, one batch per leader a poll, keep up.

Unclean mode (``--unclean``; without it a seed runs exactly as it always did): the data topic
has ``unclean.leader.election.enable`` and ``min.insync.replicas`` 1 -- the offsets topic keeps
electing from its ISR only (a commit lost to an unclean election of the offsets partition is
another matter) -- and the brokers' lane also runs an ``unclean-election`` fault
(``tests/faults/unclean_election.py``): one broker is SIGKILLed until it leaves the ISRs, a
second too, the third takes acknowledged records alone and is SIGKILLed, the first is started
first and elected uncleanly with a shorter log, the producer writes at the offsets it lost, and
the other two come back and truncate (the lane's first fault is one). The run prints the unclean elections of the data topic
(from the coordinator's log) and the truncations of its replicas (from the brokers' logs); a run
with none shows nothing (exit status 2 when there is no violation). Acknowledged records may be
lost, so the checks change:

- every record of the final log at or above the group's start (offset 0: the topic is new and
  nothing is deleted) was delivered, that value at that offset, to a member or the fresh one --
  in place of "every acknowledged record delivered" and "no delivered record the final log does
  not hold" (acknowledged records the final log lacks and deliveries of records it does not hold
  there are counted, not violations: a leader alone in the ISR has its log end as its HW, so a
  record it lost was readable; such a read is not told apart from a dirty read);
- within an assignment an offset at or below the one before is a move back to where the logs
  part (KIP-320), excused where an unclean election of the partition happened between the two
  reads; a gap is never excused;
- an assignment's first record below its position, the fresh member starting below the commit,
  a committed offset going back, an assignment starting below an acknowledged commit: excused
  where (and only where) an unclean election of the partition came before (for the last two,
  between the two observations, or up to 30 s before the first: a commit of a position read
  before the election) -- a member moved back commits below what was committed on the log
  before;
- a committed offset past the final log end: excused where it was committed on records an unclean
  election then lost -- an unclean election of the partition after the offset was first seen (or up
  to 30 s before: a commit in flight across it lands after it), and after that election a replica
  whose log held the offset cut under it (its truncation in the brokers' logs); the log may grow
  back less than it lost before the run ends. A commit past every replica's log end, or with no
  unclean election after it, is still reported. The other checks are unchanged.

Every process is stopped by its pid at the end; the seed is printed for reproduction. Exit
status 0: no violation; 1: violations (printed); 2: the run itself could not complete.
"""

from __future__ import annotations

import functools
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # run as a file (python tests/faults/group_nemesis.py): the repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from fabric.client import Admin  # noqa: E402
from fabric.client.admin import LATEST  # noqa: E402
from fabric.client.consumer import Consumer as LogReader  # noqa: E402
from fabric.client.group import Consumer  # noqa: E402
from fabric.client.group_admin import GroupAdmin  # noqa: E402
from nodes.coordinator.offsets import OFFSETS_TOPIC, OffsetStore  # noqa: E402
from nodes.coordinator.topics import UNCLEAN_LEADER_ELECTION  # noqa: E402
from tests.faults import workload_checker as J  # noqa: E402
from tests.faults.group_nemesis_checks import (  # noqa: E402
    check_acked_commits, check_assignment_starts, check_commits, check_delivered_in_log, check_deliveries,
    check_final_log_delivered, check_sessions, members_behind)
from tests.faults.nemesis_common import (  # noqa: E402
    LaneNemesis, cut, heal_nodes, kill_and_restart, pause, print_outcome, run_failed, tracebacks)
from tests.faults.nemesis_common import main as nemesis_main  # noqa: E402
from tests.faults.producer_log import ProducerLog  # noqa: E402
from tests.faults.unclean_election import read_unclean_evidence, unclean_election  # noqa: E402
from tests.harness import Cluster, make_config, wait_until  # noqa: E402

PARTITIONS = 4  # set per seed by run(): 3 to 6
MEMBERS = 3     # set per seed by run(): 2 or 3
GROUP = "nemesis-group"
TOPIC = J.TOPIC
MODES = ("sync", "async", "auto")
SESSION_COORDINATOR_MS = 3000  # make_config's liveness.session_timeout_ms
MEMBER_SESSION_MS = 3000  # group_nemesis_member.SESSION_MS
UNCLEAN_SHARE = 4  # unclean mode: how many "unclean-election" entries join the brokers' lane of faults
ROOT = Path(__file__).resolve().parents[2]
# --small-buffers: the producer's linger. A member then reads one batch per leader a poll, and at the
# workload's linger (2 ms) a batch holds one record: 20 to 30 polls a second (the members' processing
# pauses, their commits) read fewer records of a partition than the producer wrote (55 to 90 a
# second), and the members never caught up (seeds 63, 64, 77: half the log unread at the end)
SMALL_BUFFERS_LINGER_MS = 100


class NemesisCluster(Cluster):
    """A ``Cluster`` whose nodes run ``group_nemesis_node`` (snapshots every ``snapshot_records``
    commit records when given) and that remembers the nodes the nemesis stopped on purpose."""

    def __init__(self, config_path: Path, snapshot_records: int = 0) -> None:
        super().__init__(config_path)
        self.snapshot_records = snapshot_records

    def start_node(self, name: str, wait: bool = True) -> None:
        assert name not in self.procs or self.procs[name].poll() is not None, f"{name} already running"
        log = open(self.log_dir / f"{name}.log", "ab")
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1",
                   LOOM_NEMESIS_SNAPSHOT_RECORDS=str(self.snapshot_records))
        self.procs[name] = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.group_nemesis_node", "-c", str(self.config_path), "--node", name],
            stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
        if wait:
            self.wait_ready(name)


class Members:
    """The member processes, by name; each journals to ``dir/<name>.jsonl``."""

    def __init__(self, bootstrap: str, directory: Path, seed: int, buffered_bytes_max: int = 0) -> None:
        self.bootstrap, self.dir, self.seed = bootstrap, directory, seed
        self.buffered_bytes_max = buffered_bytes_max  # the members' bound (0: the library's default)
        self.modes = {f"m{i}": MODES[(i + seed) % len(MODES)] for i in range(MEMBERS)}
        self.assignor = ("range", "round-robin", "sticky")[seed % 3]
        self.procs: dict[str, subprocess.Popen] = {}
        self.started_at: dict[str, float] = {}
        self.all_pids: list[int] = []

    def start(self, name: str) -> None:
        env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
        log = open(self.dir / f"{name}.out", "ab")
        p = subprocess.Popen([sys.executable, "-m", "tests.faults.group_nemesis_member", self.bootstrap, GROUP, TOPIC,
                              name, self.modes[name], str(self.seed), str(self.dir / f"{name}.jsonl"), self.assignor,
                              str(self.buffered_bytes_max)],
                             stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT), env=env)
        self.procs[name] = p
        self.all_pids.append(p.pid)
        self.started_at[name] = time.monotonic()

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        p = self.procs[name]
        if p.poll() is None:
            os.kill(p.pid, sig)
            if sig == signal.SIGKILL:
                p.wait(timeout=10)

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is None]

    def stop_all(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(timeout=10)

    def events(self) -> list[dict]:
        out = []
        for name in self.modes:
            path = self.dir / f"{name}.jsonl"
            if path.exists():
                for line in path.read_text().splitlines():
                    try:
                        out.append(dict(json.loads(line), member=name))
                    except json.JSONDecodeError:
                        pass  # a line torn by SIGKILL
        return out


class CommitObserver(threading.Thread):
    """Polls the group's committed offsets (OFFSET_FETCH) and, after each, the log ends."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="commit-observer", daemon=True)
        self.admin = Admin(bootstrap, timeout_ms=1000)
        self.groups = GroupAdmin(self.admin)
        self.samples: list[tuple[float, dict[int, int], dict[int, int]]] = []  # (t, committed, ends)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.1):
            try:
                committed = {p: o for (t, p), o in self.groups.committed(GROUP).items() if t == TOPIC}
                t = time.time()
                ends = self.admin.list_offsets(TOPIC, LATEST, partial=True)
            except Exception:
                continue
            self.samples.append((t, committed, ends))

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        self.admin.close()


class Nemesis(LaneNemesis):
    """Random faults, one at a time, healed before the next; or (``concurrent``) in three
    lanes at once -- brokers, the coordinator, the members -- each one fault at a time, so
    at most one broker is down."""

    def __init__(self, cluster: Cluster, members: Members, rng: random.Random, duration_s: float,
                 concurrent: bool, acked: Callable[[], int] | None = None) -> None:
        """``acked``: the count of acknowledged records, given in unclean mode only (its faults
        wait for records written meanwhile); without it the faults are the normal mode's."""
        self.c, self.members, self.duration_s = cluster, members, duration_s
        self.concurrent, self.acked = concurrent, acked
        lanes = self.LANES if concurrent else (self.ALL,)
        if acked is not None:  # the brokers' lane (the first) also makes unclean elections
            lanes = ((*lanes[0], *(("unclean-election",) * UNCLEAN_SHARE)), *lanes[1:])
        super().__init__([functools.partial(self.lane, kinds) for kinds in lanes], rng)

    ALL = ("kill-broker", "kill-coordinator", "pause-broker", "pause-coordinator", "kill-member", "pause-member",
           "kill-coordinator+member", "kill-broker+member", "kill-broker", "pause-broker", "stall-member",
           "long-pause-coordinator+kill-broker", "isolate-offsets-leader", "kill-all-brokers")
    # concurrent lanes: faults of different kinds overlap (still at most one broker down)
    LANES = (("kill-broker", "pause-broker", "kill-broker", "pause-broker", "long-pause-coordinator+kill-broker",
              "isolate-offsets-leader", "kill-all-brokers"), ("kill-coordinator", "pause-coordinator"), ("kill-member", "pause-member", "stall-member"))

    def lane(self, kinds: tuple[str, ...], rng: random.Random) -> None:
        end = time.monotonic() + self.duration_s
        # unclean mode: the lane that makes unclean elections makes one first (a run without is no evidence)
        first = "unclean-election" if "unclean-election" in kinds else None
        while time.monotonic() < end and not self.halted(rng.uniform(0.5, 3)):
            self.one_fault(first or rng.choice(kinds), rng)
            first = None

    def one_fault(self, kind: str, rng: random.Random) -> None:
        c = self.c
        if kind == "unclean-election":
            assert self.acked is not None
            unclean_election(c, TOPIC, rng, self.acked, self.note)
            return
        broker = rng.choice(c.broker_names())
        if kind.endswith("broker") and rng.random() < 0.6:
            broker = self.offsets_leader() or broker  # the leader of the group's offsets partition
        member = rng.choice(list(self.members.modes))
        down_s = rng.uniform(0.5, 5)
        if kind == "long-pause-coordinator+kill-broker":
            # the append in flight when the coordinator stopped goes unanswered (its leader dies),
            # and the commits' deadlines pass while it is stopped: commits that may be in the log
            # end unacknowledged, and the offsets partition is read again
            leader = self.offsets_leader() or broker
            pause_s = rng.uniform(16, 19)
            self.note(f"SIGSTOP coordinator for {pause_s:.1f}s, SIGKILL {leader} (the offsets leader)")
            c.kill("coordinator", signal.SIGSTOP)
            time.sleep(rng.uniform(0, 0.5))
            c.kill(leader)
            time.sleep(pause_s)
            c.kill("coordinator", signal.SIGCONT)
            time.sleep(rng.uniform(0, 2))
            c.start_node(leader, wait=False)
            c.wait_ready(leader, 30)
        elif kind == "kill-all-brokers":  # fsync always: nothing acknowledged may be lost
            down_s = rng.uniform(0.2, 3)
            self.note(f"SIGKILL every broker for {down_s:.1f}s")
            kill_and_restart(c, c.broker_names(), down_s)
        elif kind == "isolate-offsets-leader":
            # cut from the other brokers, not from the coordinator: it stays the leader, its
            # acks=all appends wait, its ISR shrinks below min.insync.replicas, and commits that
            # may be in the log end unacknowledged at their deadline
            leader = self.offsets_leader() or broker
            others = [b for b in c.broker_names() if b != leader]
            cut_s = rng.uniform(16, 20)
            self.note(f"cut {leader} (the offsets leader) from {others} for {cut_s:.1f}s")
            cut(c, [leader], others, cut_s)
        elif kind.startswith("kill-broker"):
            self.note(f"SIGKILL {broker} for {down_s:.1f}s (offsets leader: {self.offsets_leader()})")
            c.kill(broker)
            if kind.endswith("member"):
                self.note(f"SIGKILL {member}")
                self.members.kill(member)
            time.sleep(down_s)
            c.start_node(broker, wait=False)
            if kind.endswith("member"):
                self.members.start(member)
            c.wait_ready(broker, 30)
        elif kind.startswith("kill-coordinator"):
            self.note(f"SIGKILL coordinator for {down_s:.1f}s")
            c.kill("coordinator")
            if kind.endswith("member"):
                self.note(f"SIGKILL {member}")
                self.members.kill(member)
            time.sleep(down_s)
            c.start_node("coordinator", wait=False)
            if kind.endswith("member"):
                self.members.start(member)
            c.wait_ready("coordinator", 30)
        elif kind in ("pause-broker", "pause-coordinator"):
            node = broker if kind == "pause-broker" else "coordinator"
            pause_s = SESSION_COORDINATOR_MS / 1000 + rng.uniform(0.5, 3)
            self.note(f"SIGSTOP {node} for {pause_s:.1f}s (offsets leader: {self.offsets_leader()})")
            pause(c, node, pause_s)
        elif kind == "pause-member":  # a zombie: its session ends, then it polls and commits again
            pause_s = MEMBER_SESSION_MS / 1000 + rng.uniform(0.5, 3)
            self.note(f"SIGSTOP {member} for {pause_s:.1f}s")
            self.members.kill(member, signal.SIGSTOP)
            time.sleep(pause_s)
            self.members.kill(member, signal.SIGCONT)
        elif kind == "stall-member":  # processing past max_poll_interval_ms: the member leaves, then commits
            # (not before the process installed its handler: SIGUSR1 would end it)
            time.sleep(max(0.0, self.members.started_at[member] + 4 - time.monotonic()))
            self.note(f"SIGUSR1 {member} (a stall past max_poll_interval_ms)")
            self.members.kill(member, signal.SIGUSR1)
            time.sleep(7)
        else:
            self.note(f"SIGKILL {member} for {down_s:.1f}s")
            self.members.kill(member)
            time.sleep(down_s)
            self.members.start(member)

    def offsets_leader(self) -> str | None:
        try:
            with Admin(self.c.bootstrap, timeout_ms=1000) as admin:
                p = admin.metadata().topics[OFFSETS_TOPIC].partitions[OffsetStore.partition_for_group(GROUP)]
            return f"broker-{p.leader}" if p.leader >= 0 else None
        except Exception:
            return None

def check_fresh_member(bootstrap: str, committed: dict[int, int], ends: dict[int, int],
                       violations: list[str], unclean_at: dict[int, list[float]] | None = None) -> list[dict]:
    """A new member of the group (alone in it) must start each partition at its commit -- or,
    in unclean mode, below it where an unclean election of the partition happened (the commit's
    epoch names a log that parts from the final one there)."""
    first: dict[int, int] = {}
    got: dict[int, list[tuple[int, str]]] = defaultdict(list)
    c = Consumer(bootstrap, group_id=GROUP, auto_offset_reset="latest", enable_auto_commit=False,
                 session_timeout_ms=3000, heartbeat_interval_ms=300, client_id="fresh")
    try:
        c.subscribe([TOPIC])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for r in c.poll(200):
                first.setdefault(r.partition, r.offset)
                got[r.partition].append((r.offset, r.value.decode()))
            positions = {p: c.positions.get((TOPIC, p)) for p in range(PARTITIONS)}
            if len(c.assignment()) == PARTITIONS and all(positions[p] is not None and positions[p] >= ends[p]
                                                         for p in ends):
                break
        else:
            violations.append(f"the fresh member did not reach the log ends {ends}: positions "
                              f"{ {p: c.positions.get((TOPIC, p)) for p in range(PARTITIONS)} }")
    finally:
        c.close()
    for p, end in ends.items():
        want = committed.get(p)
        if want is None:
            violations.append(f"partition {p}: nothing committed at the end")
            continue
        moved_back = unclean_at is not None and p in unclean_at and (first.get(p) or 0) < want
        if want < end and first.get(p) != want and not moved_back:
            violations.append(f"partition {p}: the fresh member started at {first.get(p)}, the commit is {want} "
                              f"(log end {end})")
    return [{"ev": "recs", "inc": "fresh", "seq": 1, "gen": -1, "mid": "fresh", "t": time.time(),
             "recs": [[p, off, v] for off, v in recs]} for p, recs in got.items()]


def read_final_log(bootstrap: str, ends: dict[int, int], violations: list[str]) -> dict[tuple[int, int], str]:
    """(partition, offset) -> value of every record of the topic up to ``ends`` (the healed
    cluster's HWs): what ``check_delivered_in_log`` compares the deliveries with."""
    held: dict[tuple[int, int], str] = {}
    c = LogReader(bootstrap, auto_offset_reset="earliest")
    try:
        c.assign([(TOPIC, p) for p in ends])
        c.seek_to_beginning()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for r in c.poll(200):
                held[(r.partition, r.offset)] = r.value.decode()
            if all((c.position((TOPIC, p)) or 0) >= end for p, end in ends.items()):
                break
        else:
            violations.append(f"the final log could not be read to its ends {ends}: positions "
                              f"{ {p: c.position((TOPIC, p)) for p in ends} }")
    finally:
        c.close()
    return held


def explicit_reset(cluster: Cluster, groups: GroupAdmin, rng: random.Random, nemesis: Nemesis,
                   violations: list[str]) -> dict[int, int] | None:
    """An explicit reset of the empty group backward (``reset-offsets --shift-by``), then a
    SIGKILL of the coordinator and/or of the group's offsets-partition leader right after its
    acknowledgement: once they are back, the committed offsets are the reset ones."""
    shift = -rng.randint(1, 300)
    plan = groups.plan_reset(GROUP, TOPIC, shift_by=shift)
    groups.execute_reset(GROUP, plan)
    want = {p: new for (_, p), (_, new) in plan.items()}
    victims = rng.choice((["coordinator"], [nemesis.offsets_leader() or "broker-1"],
                          ["coordinator", nemesis.offsets_leader() or "broker-1"]))
    print(f"  reset by {shift}: {want}; SIGKILL {victims}", flush=True)
    for v in victims:
        cluster.kill(v)
    for v in victims:
        cluster.start_node(v)

    def read() -> dict[int, int]:
        return {p: o for (t, p), o in groups.committed(GROUP).items() if t == TOPIC}
    got = wait_until(read, 60, interval_s=0.5, what="the committed offsets after the reset")
    if got != want:
        violations.append(f"after an acknowledged reset to {want} and SIGKILL of {victims}: committed {got}")
    return got


def settled_assignment(groups: GroupAdmin, live: int) -> dict | None:
    d = groups.describe(GROUP)
    owners: dict[tuple[str, int], list[str]] = defaultdict(list)
    for m in d["members"]:
        for t, p in m["assignment"]:
            owners[(t, p)].append(m["member_id"])
    ok = (d["state"] == "Stable" and len(d["members"]) == live
          and all(len(owners[(TOPIC, p)]) == 1 for p in range(PARTITIONS)))
    return d if ok else None


def wait_members_read_the_log(events: Callable[[], list[dict]], want: set[tuple[int, int, str]], at_offset: bool,
                              violations: list[str], timeout_s: float = 60) -> None:
    """Let the members catch up before they are killed: until they delivered every record of
    ``want`` ((partition, offset, value): the acknowledged records -- in unclean mode every record
    of the log up to the HWs now, at its offset, ``at_offset``: acknowledged ones may be lost).
    Not within ``timeout_s`` of a healed cluster and a settled group is a violation: a member that
    stopped reading a partition, or reads slower than the producer writes, would otherwise be
    covered by the fresh member, which reads what they left."""
    try:
        wait_until(lambda: not members_behind(events(), want, at_offset), timeout_s, interval_s=0.5,
                   what="the members to read every acknowledged record")
    except AssertionError:
        behind = members_behind(events(), want, at_offset)
        violations.append(f"the members did not read every {'record of the log' if at_offset else 'acknowledged record'} "
                          f"within {timeout_s:.0f}s of the group settling: partition -> (records unread, the lowest "
                          f"offset of them) {dict(sorted(behind.items()))}")


def run(seed: int, duration_s: float, directory: Path, unclean: bool = False, small_buffers: bool = False) -> int:
    global PARTITIONS, MEMBERS
    rng = random.Random(seed)
    PARTITIONS, MEMBERS = rng.choice((3, 4, 5, 6)), rng.choice((2, 3, 3))
    print(f"group nemesis: seed {seed}, {duration_s:.0f}s of faults, in {directory}"
          f"{', unclean mode' if unclean else ''}{', small buffers' if small_buffers else ''}", flush=True)
    snapshot_records = (0, 300, 50)[(seed // 3) % 3]  # 0: the production schedule
    cluster = NemesisCluster(make_config(directory, 3, fsync="always", overrides={"faults": {"enabled": True}}),
                             snapshot_records)
    print(f"  {PARTITIONS} partitions, {MEMBERS} members", flush=True)
    print(f"  offsets snapshots every {snapshot_records or 'default'} commit records", flush=True)
    mdir = directory / "members"
    mdir.mkdir()
    members = Members(cluster.bootstrap, mdir, seed, 1 if small_buffers else 0)
    violations: list[str] = []
    workload = observer = nemesis = producer_log = None
    try:
        cluster.start()
        topic_configs = {"min.insync.replicas": 1, UNCLEAN_LEADER_ELECTION: True} if unclean else None
        # small buffers: a member reads one batch per leader a poll, so the producer batches for longer
        options = {"linger_ms": SMALL_BUFFERS_LINGER_MS} if small_buffers else {}
        admin, workload, leaders = J.setup(cluster, topic_configs, partitions=PARTITIONS, rate_per_s=300, keys=40,
                                           producer_options=options)
        groups = GroupAdmin(admin)
        producer_log = ProducerLog(workload, TOPIC, directory / "producer.log")  # what the producer saw
        producer_log.start()
        observer = CommitObserver(cluster.bootstrap)
        observer.start()
        for name in members.modes:
            members.start(name)
        print(f"  member modes {members.modes}, assignor {members.assignor}", flush=True)
        nemesis = Nemesis(cluster, members, rng, duration_s, concurrent=seed % 4 != 0,
                          acked=(lambda: len(workload.acked)) if unclean else None)
        print(f"  nemesis {'concurrent lanes' if nemesis.concurrent else 'one fault at a time'}", flush=True)
        nemesis.start()
        nemesis.join(timeout=duration_s + (240 if unclean else 120))  # an unclean election's steps wait longer
        if nemesis.is_alive() or nemesis.error is not None:
            raise RuntimeError(f"the nemesis failed: {nemesis.error!r}")
        heal_nodes(cluster, violations)  # every node up and running, every member running
        for name in members.modes:
            if members.procs[name].poll() is not None:
                members.start(name)
        J.wait_healed(cluster, admin, 60, while_writing=True)
        workload.wait_acks(200, 30)
        try:
            settled = wait_until(lambda: settled_assignment(groups, MEMBERS), 60, interval_s=0.5,
                                 what="the group to settle with every partition owned once")
            print(f"  settled: generation {settled['generation']}, "
                  f"{[(m['client_id'], m['assignment']) for m in settled['members']]}", flush=True)
        except AssertionError as e:
            violations.append(f"group did not settle: {e}; last describe {groups.describe(GROUP)}")
        # let the members catch up, then kill them under load (an uncommitted tail remains)
        if unclean:
            ignored: list[str] = []
            want = {(p, off, v) for (p, off), v in read_final_log(cluster.bootstrap, admin.list_offsets(TOPIC, LATEST),
                                                                   ignored).items()}
        else:
            want = {(p, off, v.decode()) for v, (p, off) in list(workload.acked.items())}
        wait_members_read_the_log(members.events, want, unclean, violations)
        time.sleep(rng.uniform(0, 1.0))
        members.stop_all()
        workload.wait_acks(300, 30)
        workload.stop()
        producer_log.stop()
        leaders.stop()
        hws = J.wait_healed(cluster, admin, 60)
        print(f"  healed: HW {hws}, acknowledged {len(workload.acked)}, failed {len(workload.failed)}", flush=True)
        wait_until(lambda: not groups.describe(GROUP)["members"], 30, interval_s=0.3, what="the group to empty")
        committed = {p: o for (t, p), o in groups.committed(GROUP).items() if t == TOPIC}
        time.sleep(0.5)
        observer.stop()
        final_ends = admin.list_offsets(TOPIC, LATEST)
        print(f"  committed {committed}, log ends {final_ends}", flush=True)
        final_log = read_final_log(cluster.bootstrap, final_ends, violations)
        committed = explicit_reset(cluster, groups, rng, nemesis, violations) or committed
        events = members.events()
        (directory / "commit_samples.json").write_text(json.dumps(observer.samples))
        unclean_at, cuts = read_unclean_evidence(cluster, TOPIC) if unclean else (None, None)
        events += check_fresh_member(cluster.bootstrap, committed, final_ends, violations, unclean_at)
        report = {"seed": seed, "faults": len(nemesis.history), "acknowledged": len(workload.acked),
                  "member_events": len(events)}
        if unclean_at is not None:
            elections = sum(len(ts) for ts in unclean_at.values())
            truncations = sum(len(found) for found in (cuts or {}).values())
            print(f"  unclean elections of {TOPIC}: {elections} (by partition "
                  f"{ {p: len(ts) for p, ts in sorted(unclean_at.items())} }), truncations of its replicas: "
                  f"{truncations}", flush=True)
            report.update({"unclean_elections": elections, "truncations": truncations})
            # the group read every partition from its start: the topic is new, nothing deleted
            report.update(check_final_log_delivered(events, final_log, dict.fromkeys(final_ends, 0), workload.acked,
                                                    violations))
        else:
            report.update(check_deliveries(events, workload.acked, violations))
            report.update(check_delivered_in_log(events, final_log, violations))
        report.update(check_sessions(events, violations, unclean_at))
        report.update(check_acked_commits(events, violations, unclean_at=unclean_at))
        report.update(check_assignment_starts(events, observer.samples, violations, unclean_at=unclean_at))
        report.update(check_commits(observer.samples, final_ends, violations, unclean_at, cuts))
        violations += [f"node log with a Traceback: {t}" for t in tracebacks(cluster)]
        for out in sorted(mdir.glob("*.out")):
            text = out.read_text(errors="replace")
            if "Traceback" in text:
                i = text.index("Traceback")
                violations.append(f"member crashed: {out.name}: {text[i:i + 1500]}")
        print(f"  report {report}", flush=True)
        admin.close()
    except Exception as e:
        code = run_failed(seed, e, violations)
    else:
        code = 1 if violations else 0
        if code == 0 and unclean and not report.get("unclean_elections"):
            print(f"  no unclean election of {TOPIC} happened: the run is no evidence", flush=True)
            code = 2
    finally:
        if nemesis is not None:
            nemesis.stop()
        members.stop_all()
        if producer_log is not None and producer_log.is_alive():
            producer_log.stop()
        if observer is not None and observer.is_alive():
            observer.stop()
        cluster.stop_all()
    return print_outcome(seed, code, violations, nemesis)


def main() -> int:
    return nemesis_main(run, __doc__.splitlines()[0], "group-nemesis",
                        flags={"unclean": "unclean leader election on the data topic, and faults that make it",
                               "small_buffers": "members fetch ahead within 1 byte: one batch per leader at a time"})


if __name__ == "__main__":
    sys.exit(main())
