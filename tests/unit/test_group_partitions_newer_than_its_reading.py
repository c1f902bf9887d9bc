"""The coordinator's judgement of which partitions a group has nothing committed of are newer
than the group's reading of their topic (OFFSET_FETCH's ``newer_than_reading``,
nodes/coordinator/group_readings.py): a member starts those at their log start, whatever
``auto_offset_reset`` says, also one that joined (or restarted) after the partition was made and
so cannot tell (KAFKA-12261 for a group). A partition that predates the group's reading follows
the policy as before.

A real Coordinator on a ManualClock (memory engine, no sockets answered): topics made and given
partitions through its own handlers (the metadata version and the state file as they are in
service), joins and fetches through the group coordinator's handlers, acknowledged commits put
in the committed-offsets table as the loader puts them there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.config import load_config
from fabric.rpc import DEFER
from nodes.coordinator.group_readings import newer_than_reading
from nodes.coordinator.groups import EMPTY
from nodes.coordinator.node import Coordinator
from nodes.coordinator.store import StateStore
from tests.harness import make_config
from tests.unit.fakes import RecordingServer, request

T0, T1, T2 = ("t", 0), ("t", 1), ("t", 2)


class _Cluster:
    """A coordinator with brokers 1-3 alive, restartable on its state file."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.clock = ManualClock(start_ms=1_000_000)
        self.coord = self._start()

    def _start(self) -> Coordinator:
        """A coordinator on the state file under ``tmp_path`` (ports picked free each time)."""
        coord = Coordinator(load_config(make_config(self.tmp_path, 3, engine="memory")), "coordinator", clock=self.clock)
        for bid in (1, 2, 3):
            coord._seen(bid)
        coord.groups.server = RecordingServer()  # the joins' answers, read by the test
        coord.groups.offsets.start_loading()  # no offsets topic: loaded at once
        assert coord.groups.offsets.loaded
        return coord

    def restart(self) -> None:
        """A new coordinator process on the same state file; the group's acknowledged commits
        come back (as the loader reads them from the offsets topic), its membership does not."""
        table = {g: dict(t) for g, t in self.coord.groups.offsets.table.items()}
        self.coord.close()
        self.coord = self._start()
        self.coord.groups.offsets.table.update(table)

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
        """Group g's commit of ``tp`` acknowledged now (stamped as the coordinator stamps it)."""
        self.clock.advance(1000)
        topic_id = self.coord.state.topics[tp[0]].topic_id
        self.coord.groups.offsets.apply("g", [(tp[0], tp[1], offset, "")], self.clock.wall_ms(), {tp[0]: topic_id})

    def fetch(self, *tps: tuple[str, int]) -> dict:
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
    assert answer["offsets"] == [["t", 0, 5, ""], ["t", 1, -1, ""], ["t", 2, -1, ""]]
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


def test_after_a_restart_a_partition_older_than_every_commit_is_judged_by_the_policy(cluster: _Cluster) -> None:
    """The limit of what is stored: t-0 was committed again after t-1 was made, and the first
    generation's version went with the restart -- nothing shows t-1 newer, so it follows the
    policy, as before (never judged newer without evidence)."""
    cluster.make_topic("t", 1)
    cluster.join("a")
    cluster.grow("t", 2)
    cluster.committed(T0, 5)
    cluster.restart()
    cluster.join("b")
    assert cluster.newer(T1) == []


# -- scenario 3: the topic deleted and made again -------------------------------------------------
@pytest.mark.parametrize("restart", [False, True])
def test_every_partition_of_a_topic_made_again_is_newer_than_a_reading_of_the_one_before(
        cluster: _Cluster, restart: bool) -> None:
    """The group's members were all down while t was deleted and made again (with more
    partitions): its commit of the old topic shows that it read t before the new one was made --
    also to a coordinator restarted before a snapshot of the group's offsets left that commit out
    (the loader reads it from the log)."""
    cluster.make_topic("t", 1)
    a = cluster.join("a")
    cluster.committed(T0, 5)
    cluster.leave(a)
    cluster.delete_topic("t")
    cluster.make_topic("t", 2)
    if restart:
        cluster.restart()
    cluster.join("b")
    answer = cluster.fetch(T0, T1)
    assert answer["offsets"] == [["t", 0, -1, ""], ["t", 1, -1, ""]], "the old topic's offset is not the new one's"
    assert answer["newer_than_reading"] == {"t": [0, 1]}


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
    assert [o for _, _, o, _ in answer["offsets"]] == [-1, -1, -1, -1]


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
