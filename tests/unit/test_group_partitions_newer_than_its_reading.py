"""The coordinator's judgement of which partitions a group has nothing committed of are newer
than the group's reading of their topic (OFFSET_FETCH's ``newer_than_reading``,
nodes/coordinator/group_readings.py): a member starts those at their log start, whatever
``auto_offset_reset`` says, also one that joined (or restarted) after the partition was made and
so cannot tell (KAFKA-12261 for a group). A partition that predates the group's reading follows
the policy as before.

A real Coordinator on a ManualClock (memory engine, no sockets answered): topics made and given
partitions through its own handlers (the metadata version and the state file as they are in
service), joins and fetches through the group coordinator's handlers, commits through its
OffsetStore. Its brokers are ``_OffsetsLog``: the offsets topic's partitions as byte logs that
take every append and answer every read in order, so that what a restarted coordinator knows is
what its loader reads back from them (the records and snapshots as written).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from engines import batch as B
from fabric import protocol as P
from fabric import wire
from fabric.client.group_link import COORDINATOR_CALL_TIMEOUT_MS
from fabric.clock import ManualClock
from fabric.errors import RemoteError
from fabric.records import decode_batches
from fabric.rpc import DEFER
from nodes.coordinator import groups_offsets
from nodes.coordinator.group_readings import newer_than_reading, parse_reading_key
from nodes.coordinator.groups import EMPTY
from nodes.coordinator.node import Coordinator
from nodes.coordinator.offsets import OFFSETS_TOPIC
from nodes.coordinator.offsets_loader import decode_record
from nodes.coordinator.store import StateStore
from tests.unit.builders_broker import coordinator
from tests.unit.fakes import RecordingServer, request

T0, T1, T2 = ("t", 0), ("t", 1), ("t", 2)


class _OffsetsLog:
    """The brokers as the coordinator's offsets machinery sees them: each offsets partition a
    log of batches, numbered as a leader numbers them. Requests wait until ``settle`` answers
    them, in order: every append is taken (acks=all, at once), every read gets all there is."""

    def __init__(self) -> None:
        self.logs: dict[int, list[bytes]] = {}  # offsets partition -> its batches, base offsets set
        self.ends: dict[int, int] = {}
        self.waiting: list[tuple[bytes, dict, list, object]] = []

    def request(self, command: bytes, header: dict, payloads: object = (), *, callback: object,
                timeout_ms: int = 0) -> int:
        self.waiting.append((command, header, list(payloads), callback))  # type: ignore[arg-type]
        return len(self.waiting)

    def cancel(self, request_id: int) -> bool:
        return False

    def close(self) -> None:
        pass

    def settle(self) -> None:
        """Answer every request, also those sent by the answers' callbacks (bounded)."""
        for _ in range(1000):
            if not self.waiting:
                return
            (command, header, payloads, callback), self.waiting = self.waiting[0], self.waiting[1:]
            (_topic, q, *_rest), = header["parts"]
            end = self.ends.get(q, 0)
            if command == P.PRODUCE:
                data = bytearray(payloads[0])
                B.set_base_offset(data, end)
                self.logs.setdefault(q, []).append(bytes(data))
                self.ends[q] = end + len(decode_batches(OFFSETS_TOPIC, q, bytes(data)))
                callback({"results": [[end, 0, "", 0]]}, [], None)  # type: ignore[operator]
            elif command == P.FETCH:
                callback({"parts": [[OFFSETS_TOPIC, q, 0, end, end, 0, None]]},  # type: ignore[operator]
                         [b"".join(self.logs.get(q, []))], None)
            else:
                raise AssertionError(f"no {command!r} expected of the offsets machinery here")
        raise AssertionError("requests keep coming")

    def records(self) -> list:
        return [r for q, batches in sorted(self.logs.items()) for b in batches
                for r in decode_batches(OFFSETS_TOPIC, q, b)]


class _Cluster:
    """A coordinator with brokers 1-3 alive, restartable on its state file and its offsets log."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = ManualClock(start_ms=1_000_000)
        self.log = _OffsetsLog()
        self.coord = self._start()

    def _start(self) -> Coordinator:
        """A coordinator on the state file under ``tmp_path`` (ports picked free each time), its
        committed offsets loaded from the offsets log."""
        coord = coordinator(self.tmp_path, self.clock, offsets_connect=lambda endpoint: self.log)
        coord.groups.server = RecordingServer()  # the joins' answers, read by the test
        coord.groups.offsets.start_loading()
        self.log.settle()
        assert coord.groups.offsets.loaded
        return coord

    def restart(self) -> None:
        """A new coordinator process on the same state file and offsets log: the group's
        acknowledged commits come back (the loader reads them), its membership does not."""
        self.log.settle()
        self.coord.close()
        self.coord = self._start()

    def snapshot(self) -> None:
        """The offsets partition of group g takes a snapshot (remembered in the state file)."""
        offsets = self.coord.groups.offsets
        q = offsets.partition_for_group("g")
        before = self.coord.state.offsets_snapshots.get(q)
        offsets.snapshot(q)
        self.log.settle()
        assert self.coord.state.offsets_snapshots.get(q) not in (None, before)

    def make_topic(self, name: str, partitions: int) -> None:
        self.coord._on_create_topic(request(P.CREATE_TOPIC, topic=name, partitions=partitions, replication_factor=3))

    def grow(self, name: str, partitions: int) -> None:
        self.clock.advance(1000)
        self.coord._on_alter_topic(request(P.ALTER_TOPIC, topic=name, partitions=partitions))

    def delete_topic(self, name: str) -> None:
        self.coord._on_delete_topic(request(P.DELETE_TOPIC, topic=name))

    def start_join(self, client_id: str, topics: list[str] | None = None, member_id: str = "") -> wire.Request:
        self.clock.advance(1000)
        req = request(P.JOIN_GROUP, group="g", member_id=member_id, client_id=client_id, topics=topics or ["t"],
                      session_timeout_ms=10_000, rebalance_timeout_ms=10_000)
        assert self.coord.groups._on_join(req) is DEFER
        return req

    def join(self, client_id: str, topics: list[str] | None = None, member_id: str = "") -> str:
        """A member joins group g (alone, or the last to: its join completes the rebalance); its id."""
        return self.coord.groups.server.answer(self.start_join(client_id, topics, member_id))["member_id"]

    def leave(self, member_id: str) -> None:
        self.coord.groups._on_leave(request(P.LEAVE_GROUP, group="g", member_id=member_id))

    def committed(self, tp: tuple[str, int], offset: int) -> None:
        """Group g's commit of ``tp``, appended and acknowledged now."""
        self.clock.advance(1000)
        self.log.settle()  # what went before it (the group's reading) first
        outcome: list = []
        self.coord.groups.offsets.commit("g", [(tp[0], tp[1], offset, "", -1)], allow_backward=True, check_log_end=False,
                                         done=outcome.append)
        self.log.settle()
        assert outcome == [None]

    def fetch(self, *tps: tuple[str, int], settle: bool = True) -> dict:
        """OFFSET_FETCH of group g; ``settle``: once the appends sent so far are acknowledged."""
        if settle:
            self.log.settle()
        return self.coord.groups._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[list(tp) for tp in tps]))

    def newer(self, *tps: tuple[str, int]) -> list[tuple[str, int]]:
        return [(t, p) for t, ps in self.fetch(*tps)["newer_than_reading"].items() for p in ps]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[_Cluster]:
    c = _Cluster(tmp_path)
    try:
        yield c
    finally:
        c.coord.close()


# -- scenario 1: partitions added, the member that gets one joined after they were made ----------
def test_a_partition_added_while_the_group_had_no_member_is_newer_than_its_reading(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.committed(T0, 5)
    cluster.leave(a)
    assert cluster.coord.groups.groups["g"].state == EMPTY
    cluster.grow("t", 3)
    cluster.join("b")  # a new process: it saw t with 3 partitions from the start
    answer = cluster.fetch(T0, T1, T2)
    assert answer["offsets"] == [["t", 0, 5, "", -1], ["t", 1, -1, "", -1], ["t", 2, -1, "", -1]]
    assert answer["newer_than_reading"] == {"t": [1, 2]}


def test_a_partition_added_while_the_group_reads_is_newer_also_for_a_member_that_joins_later(cluster: _Cluster) -> None:
    """The group's busy member commits t-0 after the partition was added: the first generation's
    version still shows t-1 newer."""
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.grow("t", 2)
    cluster.committed(T0, 5)
    joining = cluster.start_join("b")
    cluster.join("a", member_id=a)
    b = cluster.coord.groups.server.answer(joining)["member_id"]
    assert cluster.newer(T1) == [T1]
    cluster.leave(b)
    assert cluster.newer(T1) == [T1], "a member of another generation is told the same"


def test_partitions_there_when_the_group_began_reading_follow_the_policy(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    cluster.grow("t", 3)  # before the group's first generation
    cluster.join("a")
    cluster.committed(T0, 5)
    assert cluster.fetch(T0, T1, T2)["newer_than_reading"] == {}


def test_a_partition_of_a_topic_subscribed_to_before_it_existed_is_newer(cluster: _Cluster) -> None:
    cluster.make_topic("other", 1)
    cluster.join("a", ["t"])
    cluster.make_topic("t", 2)
    assert cluster.newer(T0, T1) == [T0, T1]


# -- what survives a coordinator restart ---------------------------------------------------------
def test_after_a_restart_a_commit_older_than_a_partition_shows_it_newer(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.committed(T0, 5)
    cluster.leave(a)
    cluster.grow("t", 2)
    cluster.restart()  # membership (and the first generation's version) gone; offsets and the state file kept
    cluster.join("b")
    assert cluster.newer(T0, T1) == [T1]


@pytest.mark.parametrize("emptied", [False, True])
def test_after_a_restart_a_partition_made_while_the_group_read_is_newer_though_every_other_was_committed_since(
        cluster: _Cluster, emptied: bool) -> None:
    """t-0 was committed again after t-1 was made, so no commit is older than t-1; the group's
    reading of t (its first generation's version) is stored in its offsets partition and comes
    back with the restart: t-1 is still newer. It followed the policy (``latest``: its records
    before the new owner's first fetch skipped)."""
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.grow("t", 2)
    cluster.committed(T0, 5)
    if emptied:
        cluster.leave(a)
    cluster.restart()
    assert cluster.newer(T1) == [T1], "judged before any member joined (an administrator's look)"
    cluster.join("b")
    assert cluster.newer(T1) == [T1]
    assert cluster.newer(T0) == [], "t-0 has a committed offset"


def test_a_partition_made_after_a_restart_is_newer_than_the_reading_stored_before_it(cluster: _Cluster) -> None:
    """A member joins the restarted coordinator before it has read the group's stored reading
    (its first generation there is at a later version): the earlier, stored reading wins."""
    cluster.make_topic("t", 1)
    cluster.join("a")
    cluster.committed(T0, 5)
    cluster.grow("t", 2)
    cluster.clock.advance(1000)
    cluster.committed(T0, 6)
    cluster.log.settle()
    cluster.coord.close()
    cluster.coord = coordinator(cluster.tmp_path, cluster.clock, offsets_connect=lambda endpoint: cluster.log)
    cluster.coord.groups.server = RecordingServer()
    cluster.join("b")  # a generation before the offsets are loaded
    cluster.coord.groups.offsets.start_loading()
    cluster.log.settle()
    held = request(P.OFFSET_FETCH, group="g", partitions=[list(T1)])
    # its reading is not stored yet: nobody starts by it (the answer waits for it)
    assert cluster.coord.groups._on_offset_fetch(held) is DEFER
    cluster.clock.advance(100)
    cluster.coord.groups.tick()
    cluster.log.settle()
    assert cluster.coord.groups.server.answer(held)["newer_than_reading"] == {"t": [1]}
    assert cluster.newer(T1) == [T1]


def test_a_fetch_waits_until_the_groups_reading_is_stored(cluster: _Cluster) -> None:
    """A member that started a partition by the policy before the group's reading was durable
    could lose, after a coordinator restart, the evidence that a partition made meanwhile is
    newer: OFFSET_FETCH's answer waits until it is appended, and goes out as soon as it is
    (before, the retriable unstable_offset_commit: every member's first start paid the client's
    200 ms back-off and a JOIN_GROUP, SYNC_GROUP and OFFSET_FETCH again)."""
    cluster.make_topic("t", 1)
    cluster.join("a")
    held = request(P.OFFSET_FETCH, group="g", partitions=[list(T0)])
    assert cluster.coord.groups._on_offset_fetch(held) is DEFER
    assert not [h for r, h, _ in cluster.coord.groups.server.replies if r is held]
    everything = cluster.coord.groups._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=None))
    assert everything["offsets"] == [], "an administrator's look at every committed offset judges nothing: not held up"
    cluster.log.settle()  # the reading is appended: the answer goes out at once (no tick)
    assert cluster.coord.groups.server.answer(held)["offsets"] == [["t", 0, -1, "", -1]]
    assert cluster.fetch(T0)["offsets"] == [["t", 0, -1, "", -1]]


def test_a_held_fetch_is_refused_at_its_deadline_while_the_reading_cannot_be_stored(cluster: _Cluster) -> None:
    """The offsets partition takes no append (its leader gone, too few replicas): the answer
    waits at most OFFSET_FETCH_HOLD_MS, then is the retriable unstable_offset_commit, as before
    (the member backs off and asks again), well within the member's request timeout."""
    cluster.make_topic("t", 1)
    cluster.join("a")
    held = request(P.OFFSET_FETCH, group="g", partitions=[list(T0)])
    assert cluster.coord.groups._on_offset_fetch(held) is DEFER
    cluster.clock.advance(groups_offsets.OFFSET_FETCH_HOLD_MS - 1)
    cluster.coord.groups.tick()
    assert not [h for r, h, _ in cluster.coord.groups.server.replies if r is held]
    cluster.clock.advance(1)
    cluster.coord.groups.tick()
    assert cluster.coord.groups.server.answer(held)["error"] == P.UNSTABLE_OFFSET_COMMIT
    assert groups_offsets.OFFSET_FETCH_HOLD_MS < COORDINATOR_CALL_TIMEOUT_MS // 2
    cluster.log.settle()
    assert cluster.fetch(T0)["offsets"] == [["t", 0, -1, "", -1]]


def test_fetches_held_are_bounded(cluster: _Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past OFFSET_FETCHES_HELD_MAX of a group, one is refused at once (retriable), as before."""
    monkeypatch.setattr(groups_offsets, "OFFSET_FETCHES_HELD_MAX", 2)
    cluster.make_topic("t", 1)
    cluster.join("a")
    reqs = [request(P.OFFSET_FETCH, group="g", partitions=[list(T0)]) for _ in range(3)]
    assert cluster.coord.groups._on_offset_fetch(reqs[0]) is DEFER
    assert cluster.coord.groups._on_offset_fetch(reqs[1]) is DEFER
    with pytest.raises(RemoteError) as e:
        cluster.coord.groups._on_offset_fetch(reqs[2])
    assert e.value.code == P.UNSTABLE_OFFSET_COMMIT
    cluster.log.settle()
    assert [cluster.coord.groups.server.answer(r)["offsets"] for r in reqs[:2]] == [[["t", 0, -1, "", -1]]] * 2


# -- scenario 3: the topic deleted and made again -------------------------------------------------
@pytest.mark.parametrize("restart", ["no", "restart", "snapshot, restart"])
def test_every_partition_of_a_topic_made_again_is_newer_than_a_reading_of_the_one_before(
        cluster: _Cluster, restart: str) -> None:
    """The group's members were all down while t was deleted and made again (with more
    partitions): its commit of the old topic, and its stored reading of t, show that it read t
    before the new one was made -- also to a restarted coordinator, and one restarted after the
    group's offsets partition took a snapshot (it keeps both; before, it left the commit out, and
    the reading was not stored)."""
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.committed(T0, 5)
    cluster.leave(a)
    cluster.delete_topic("t")
    cluster.make_topic("t", 2)
    if restart == "snapshot, restart":
        cluster.snapshot()
    if restart != "no":
        cluster.restart()
        assert cluster.coord.groups.offsets.table["g"][T0].offset == 5, "the old topic's commit"
    cluster.join("b")
    answer = cluster.fetch(T0, T1)
    assert answer["offsets"] == [["t", 0, -1, "", -1], ["t", 1, -1, "", -1]], "the old topic's offset is not the new one's"
    assert answer["newer_than_reading"] == {"t": [0, 1]}


def test_a_group_reading_many_topics_stores_its_readings_in_bounded_commits(
        cluster: _Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    """One commit of a group subscribed to very many topics could pass what one append (or the
    commits waiting) may hold: refused every time, its OFFSET_FETCH would wait for ever."""
    monkeypatch.setattr(groups_offsets, "READINGS_PER_COMMIT_MAX", 2)
    for name in ("t", "u", "v", "w", "x"):
        cluster.make_topic(name, 1)
    cluster.join("a", ["t", "u", "v", "w", "x"])
    cluster.log.settle()  # each commit sends the next as it lands
    readings = [r for r in cluster.log.records() if parse_reading_key(r.key) is not None]
    assert len(readings) == 5
    assert max(len(decode_batches(OFFSETS_TOPIC, q, b)) for q, bs in cluster.log.logs.items() for b in bs) <= 2
    assert set(cluster.coord.groups.offsets.readings["g"]) == {"t", "u", "v", "w", "x"}
    assert cluster.fetch(T0)["offsets"] == [["t", 0, -1, "", -1]]


def test_a_reading_stored_before_a_snapshot_comes_back_from_it(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    cluster.join("a")
    cluster.grow("t", 2)
    cluster.committed(T0, 5)
    cluster.snapshot()
    cluster.restart()
    assert cluster.newer(T1) == [T1]


@pytest.mark.parametrize("how", ["deleted", "expired"])
def test_a_group_deleted_or_expired_forgets_its_stored_reading(cluster: _Cluster, how: str) -> None:
    """A group made again is a new one, also after a coordinator restart: what the old one
    read is deleted with its offsets."""
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.grow("t", 2)
    cluster.committed(T0, 5)
    cluster.leave(a)
    cluster.log.settle()
    if how == "deleted":
        assert cluster.coord.groups._on_delete_group(request(P.DELETE_GROUP, group="g")) is DEFER
    else:
        cluster.clock.advance(cluster.coord.groups.offsets_retention_ms + 1000)
        cluster.coord.groups._expire_offsets()
    cluster.restart()
    assert cluster.coord.groups.offsets.readings == {} and cluster.coord.groups.offsets.table == {}
    cluster.join("b")
    assert cluster.newer(T0, T1) == []


def test_what_older_code_reads_of_an_offsets_log_with_readings(cluster: _Cluster) -> None:
    """An older coordinator decodes the offsets topic's records with ``decode_record`` (unchanged):
    a reading record is one it cannot read, and its loader counts and skips such a record; every
    commit and snapshot record still reads as before. A rolling downgrade loads the offsets and
    only forgets the readings (as a restart did before they were stored)."""
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.committed(T0, 5)
    cluster.leave(a)
    cluster.snapshot()
    cluster.log.settle()
    old_table: dict = {}
    unreadable = 0
    for r in cluster.log.records():
        try:
            entries = decode_record(r.key, r.value)
        except ValueError:
            unreadable += 1
            continue
        for group, topic, p, offset, *_ in entries:
            if offset is None:
                old_table.get(group, {}).pop((topic, p), None)
            else:
                old_table.setdefault(group, {})[(topic, p)] = offset
    assert unreadable >= 2, "the reading written at the join and the one in the snapshot"
    assert old_table == {"g": {T0: 5}}


def test_a_rejoin_storm_writes_the_groups_reading_once(cluster: _Cluster) -> None:
    """A reading is written only when it changes: members leaving and joining again (the group
    keeps its offsets of t, so its reading of t while empty) add no reading record per generation
    to the offsets log (nor to its snapshots)."""
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.committed(T0, 5)
    for i in range(20):
        cluster.leave(a)
        a = cluster.join(f"a{i}")
    cluster.log.settle()
    assert sum(1 for r in cluster.log.records() if parse_reading_key(r.key) is not None) == 1


# -- a new group is cold ---------------------------------------------------------------------------
def test_a_group_that_begins_reading_after_the_partitions_were_made_judges_none_newer(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    cluster.grow("t", 2)
    cluster.join("a")
    assert cluster.newer(T0, T1) == []


def test_a_group_whose_offsets_expire_forgets_what_it_read(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.committed(T0, 5)
    cluster.leave(a)
    cluster.clock.advance(cluster.coord.groups.offsets_retention_ms + 1000)
    cluster.coord.groups._expire_offsets()  # its tombstones go out; the group (empty) stays until they land
    group = cluster.coord.groups.groups["g"]
    assert group.reading_since == {}, "a member joining before the tombstones land would read as the old group"
    cluster.grow("t", 2)
    assert newer_than_reading([T1], cluster.coord.state.topics, {}, group.reading_since) == []


def test_a_deleted_group_forgets_what_it_read_as_soon_as_its_deletion_starts(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.committed(T0, 5)
    cluster.leave(a)
    assert cluster.coord.groups._on_delete_group(request(P.DELETE_GROUP, group="g")) is DEFER  # its tombstones go out
    assert cluster.coord.groups.groups["g"].reading_since == {}


# -- bounds, bad input, state from older code ------------------------------------------------------
def test_the_reading_is_kept_only_for_the_topics_subscribed_to(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    cluster.make_topic("u", 1)
    a = cluster.join("a", ["t", "u"])
    assert set(cluster.coord.groups.groups["g"].reading_since) == {"t", "u"}
    cluster.join("a", ["u"], member_id=a)
    assert set(cluster.coord.groups.groups["g"].reading_since) == {"u"}


@pytest.mark.parametrize("how", ["left", "session expired"])
def test_an_empty_group_keeps_the_reading_only_of_the_topics_it_has_offsets_of(cluster: _Cluster, how: str) -> None:
    """A group without members is bounded by its committed offsets, not by what its members
    subscribed to: thousands of groups, each with one commit, could otherwise hold the million
    topic names (made up, or of topics that do not exist) that members may subscribe to together."""
    cluster.make_topic("t", 1)
    a = cluster.join("a", ["t", "no-such-topic", "u"])
    cluster.committed(T0, 5)
    if how == "left":
        cluster.leave(a)
    else:
        cluster.clock.advance(20_000)
        cluster.coord.groups.tick()
    group = cluster.coord.groups.groups["g"]
    assert group.state == EMPTY and set(group.reading_since) == {"t"}


def test_partitions_the_topic_lacks_are_never_newer_and_nothing_breaks(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    cluster.join("a")
    cluster.grow("t", 2)
    answer = cluster.fetch(("t", -1), ("t", 2), ("nope", 0), T1)
    assert answer["newer_than_reading"] == {"t": [1]}
    assert [o for _, _, o, *_ in answer["offsets"]] == [-1, -1, -1, -1]


def test_a_state_written_before_the_markers_loads_and_judges_nothing_newer(cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    cluster.join("a")
    cluster.grow("t", 2)
    path = Path(cluster.coord.store.path)
    raw = json.loads(path.read_text())
    for t in raw["topics"].values():  # topics as older code stored them
        del t["created"]
    path.write_text(json.dumps(raw))
    cluster.restart()
    assert [(p.created_version, p.created_ms) for p in cluster.coord.state.topics["t"].partitions] == [(0, 0), (0, 0)]
    cluster.join("b")
    assert cluster.newer(T0, T1) == []


def test_the_creation_markers_are_the_version_and_time_of_the_change_that_made_the_partitions(
        cluster: _Cluster) -> None:
    cluster.make_topic("t", 1)
    made = cluster.coord.state.version
    cluster.grow("t", 2)
    grown, at = cluster.coord.state.version, cluster.clock.wall_ms()
    parts = StateStore(Path(cluster.coord.store.path).parent).load().topics["t"].partitions
    assert [p.created_version for p in parts] == [made, grown] and parts[1].created_ms == at


def test_a_state_file_with_the_markers_keeps_the_shape_older_code_reads(cluster: _Cluster) -> None:
    """The markers are a topic's ``created`` list, beside its partitions: older code, which
    builds a partition from exactly the five fields of its list, still loads a state written now."""
    cluster.make_topic("t", 2)
    raw = json.loads(Path(cluster.coord.store.path).read_text())
    assert [len(p) for p in raw["topics"]["t"]["partitions"]] == [5, 5]
    assert len(raw["topics"]["t"]["created"]) == 2


def test_the_judgement_of_no_partitions_is_empty() -> None:
    assert newer_than_reading([], {}, {}, {"t": 1}) == []


def test_the_answer_to_a_fetch_that_fits_the_header_limit_fits_it_too(cluster: _Cluster) -> None:
    """Every partition of a member's assignment newer (a topic with a long name made while the
    group was subscribed to it): the judgement must not double the answer's size. An answer over
    HEADER_BYTES_MAX is dropped by the member as malformed -- its OFFSET_FETCH times out and is
    sent again for ever, and the member never starts -- where older coordinators' answer fits."""
    name = "n" * 100
    cluster.join("a", [name])
    cluster.make_topic(name, 5000)
    tps = [(name, p) for p in range(5000)]
    asked = request(P.OFFSET_FETCH, group="g", partitions=[list(tp) for tp in tps])
    assert len(wire.pack(asked.header)) <= P.HEADER_BYTES_MAX
    cluster.log.settle()  # the group's reading stored
    answer = cluster.coord.groups._on_offset_fetch(asked)
    assert len(wire.pack({k: v for k, v in answer.items() if k != "newer_than_reading"})) <= P.HEADER_BYTES_MAX
    assert len(wire.pack({"id": asked.id, **answer})) <= P.HEADER_BYTES_MAX


# a state file as the code before the creation markers wrote it (a topic "t" made with one
# partition, then given a second): no ``created`` lists
STATE_WRITTEN_BEFORE_THE_MARKERS = (
    '{"cluster_id":"232cd732-aaf9-4cf6-a22a-73e78a1aeb7c","version":2,"next_producer_id":1,"incarnations":{},'
    '"replaced_incarnations":{},"directories":{},"offsets_snapshots":{},"offsets_producer":{},'
    '"deleted_topic_ids":[],"topics":{"t":{"id":"759cc407-dffc-4d51-affc-2972929c8382",'
    '"configs":{"min.insync.replicas":2},"partitions":[[1,0,[1,2,3],[1,2,3],1],[3,0,[3,1,2],[3,1,2],1]]}}}')


def test_a_state_file_written_by_the_code_before_the_markers_loads_and_partitions_made_after_are_judged(
        cluster: _Cluster) -> None:
    """Upgraded on a state file the code before wrote: its partitions are of unknown age (the
    policy, as before), a partition added since has its markers, and the next write keeps both."""
    cluster.coord.close()
    Path(cluster.coord.store.path).write_text(STATE_WRITTEN_BEFORE_THE_MARKERS)
    cluster.coord = cluster._start()
    state = cluster.coord.state
    assert state.version == 2 and state.topics["t"].topic_id == "759cc407-dffc-4d51-affc-2972929c8382"
    assert [(p.leader, p.partition_epoch, p.created_version, p.created_ms) for p in state.topics["t"].partitions] \
        == [(1, 1, 0, 0), (3, 1, 0, 0)]
    a = cluster.join("a")
    cluster.committed(T0, 5)
    cluster.leave(a)
    cluster.grow("t", 3)
    cluster.restart()
    cluster.join("b")
    assert cluster.newer(T0, T1, T2) == [T2]
    raw = json.loads(Path(cluster.coord.store.path).read_text())
    assert raw["topics"]["t"]["created"][:2] == [[0, 0], [0, 0]]


def test_a_topic_its_members_stop_reading_for_a_while_keeps_the_reading_its_commits_show(cluster: _Cluster) -> None:
    """t-1 was made while the group read t; t-0 was committed after that (so no commit is older
    than t-1). The only member reading t goes (the group goes on with another member, reading u),
    and a new process joins for t: t-1 is still newer than the group's reading of t -- as it is
    when the group had emptied instead (``_emptied`` keeps the topics it has offsets of)."""
    cluster.make_topic("t", 1)
    cluster.make_topic("u", 1)
    a = cluster.join("a", ["t"])
    joining = cluster.start_join("b", ["u"])
    cluster.join("a", ["t"], member_id=a)
    b = cluster.coord.groups.server.answer(joining)["member_id"]
    cluster.grow("t", 2)
    cluster.committed(T0, 5)
    cluster.leave(a)
    cluster.join("b", ["u"], member_id=b)  # a generation of u alone
    joining = cluster.start_join("c", ["t"])
    cluster.join("b", ["u"], member_id=b)
    cluster.coord.groups.server.answer(joining)
    assert cluster.newer(T1) == [T1], "t-1's records before the new member's first fetch were skipped"
