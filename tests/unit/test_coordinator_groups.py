"""The group coordinator's membership and its checks of commits and fetches: the real
GroupCoordinator (and OffsetStore) on a FakeGroupContext (tests/unit/fakes.py), no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from nodes.coordinator import groups as groups_module
from nodes.coordinator.assignors import assign
from nodes.coordinator.groups import GroupCoordinator
from nodes.coordinator.store import PartitionState, TopicState
from tests.unit.fakes import (FakeGroupContext, ack_fences, ack_readings, admin_commit, commit_produces, group_coordinator,
                              loaded_group_coordinator, request,
                              two_partition_state)


def _loaded_without_offsets_topic() -> tuple[GroupCoordinator, FakeGroupContext, object]:
    context = FakeGroupContext(two_partition_state())
    gc, client = group_coordinator(context)
    gc.offsets.start_loading()  # no offsets topic yet: loaded at once
    assert gc.offsets.loaded
    return gc, context, client


def _join(gc: GroupCoordinator, client_id: str, member_id: str = "", generation: int = -1) -> wire.Request:
    req = request(P.JOIN_GROUP, group="g", member_id=member_id, generation=generation, client_id=client_id,
                  topics=["t"], session_timeout_ms=10_000, rebalance_timeout_ms=10_000)
    assert gc._on_join(req) is DEFER
    return req


# -- a commit validated for generation N must not be appended once generation N+1 began ----------
def test_commit_of_a_partition_handed_on_by_a_rebalance_is_not_applied() -> None:
    gc, context, client = _loaded_without_offsets_topic()
    a = context.server.answer(_join(gc, "a"))
    assert a["generation"] == 1 and gc.groups["g"].members[a["member_id"]].assignment == [("t", 0), ("t", 1)]
    commit = request(P.OFFSET_COMMIT, group="g", member_id=a["member_id"], generation=1, offsets=[["t", 1, 5]])
    assert gc._on_offset_commit(commit) is DEFER  # valid now: waits for the log-end lookup
    lookup = client.of(P.LIST_OFFSETS)
    assert len(lookup) == 1
    # meanwhile b joins, a rejoins, and generation 2 gives t-1 to b
    b_join = _join(gc, "b")
    _join(gc, "a", a["member_id"], 1)
    b = context.server.answer(b_join)
    assert b["generation"] == 2 and gc.groups["g"].members[b["member_id"]].assignment == [("t", 1)]
    lookup[0][3]({"parts": [["t", 1, 0, 100]]}, [], None)  # the lookup answers late
    ack_fences(client, 0)  # the offsets partition's first epoch begins (nodes/coordinator/offsets_producer.py)
    ack_readings(client)  # the group's reading of t, stored at each generation that changed it
    assert commit_produces(client) == [], "a commit of generation 1 was appended in generation 2"
    assert context.server.answer(commit).get("error") == P.ILLEGAL_GENERATION
    assert gc.offsets.offsets_for("g") == {}
    # a commit of the current owner still goes through
    ok = request(P.OFFSET_COMMIT, group="g", member_id=b["member_id"], generation=2, offsets=[["t", 1, 7]])
    gc._on_offset_commit(ok)
    (produce,) = commit_produces(client)
    produce[3]({"results": [[0, 0, ""]]}, [], None)
    assert context.server.answer(ok) == {"group": "g", "committed": 1}
    assert gc.offsets.offsets_for("g")[("t", 1)].offset == 7


# -- bad input gets a clear error, not an internal one ---------------------------------------------
def test_offset_fetch_with_mistyped_partitions_is_malformed() -> None:
    gc, _, _ = _loaded_without_offsets_topic()
    with pytest.raises(RemoteError) as e:
        gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[[{"x": 1}, 0]]))
    assert e.value.code == P.MALFORMED_REQUEST


@pytest.mark.parametrize("entry", [["t", True, 1], ["t", 0, True], ["t", 0, False]])
def test_a_boolean_partition_or_offset_is_malformed_not_stored(entry: list) -> None:
    gc, _, _ = _loaded_without_offsets_topic()
    with pytest.raises(RemoteError) as e:
        gc._on_offset_commit(request(P.OFFSET_COMMIT, group="g", generation=-1, offsets=[entry]))
    assert e.value.code == P.MALFORMED_REQUEST
    with pytest.raises(RemoteError) as e:
        gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[["t", True]]))
    assert e.value.code == P.MALFORMED_REQUEST


# -- a retried JOIN creates no ghost member ----------------------------------------------------------
def test_join_hands_out_the_member_id_first_so_a_lost_reply_leaves_no_ghost() -> None:
    context = FakeGroupContext(two_partition_state())
    gc, _ = group_coordinator(context)
    join = dict(group="g", member_id="", client_id="a", topics=["t"], session_timeout_ms=10_000,
                rebalance_timeout_ms=10_000, require_member_id=True)
    first = gc._on_join(request(P.JOIN_GROUP, **join))
    retry = gc._on_join(request(P.JOIN_GROUP, **join))  # the first reply was lost: the client asks again
    assert first["member_id_required"] and retry["member_id_required"] and first["member_id"] != retry["member_id"]
    assert not gc.groups["g"].members, "an id handed out is not yet a member"
    req = request(P.JOIN_GROUP, **dict(join, member_id=retry["member_id"]))
    assert gc._on_join(req) is DEFER
    assert context.server.answer(req)["generation"] == 1
    assert list(gc.groups["g"].members) == [retry["member_id"]]
    context.clock.advance(10_001)  # the unused id expires; a join with it is refused
    gc.tick()
    with pytest.raises(RemoteError) as e:
        gc._on_join(request(P.JOIN_GROUP, **dict(join, member_id=first["member_id"])))
    assert e.value.code == P.UNKNOWN_MEMBER


# -- bounded tables ------------------------------------------------------------------------------------
def test_admin_commits_cannot_grow_the_groups_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "GROUPS_MAX", 2)
    gc, context, client = loaded_group_coordinator(tmp_path)
    admin_commit(gc, client, "a", 1)
    admin_commit(gc, client, "b", 1)
    with pytest.raises(RemoteError) as e:
        gc._on_offset_commit(request(P.OFFSET_COMMIT, group="c", generation=-1, offsets=[["t", 0, 1]]))
    assert e.value.code == P.BUFFER_FULL
    admin_commit(gc, client, "a", 2)  # a known group still commits
    with pytest.raises(RemoteError) as e:  # and a join cannot make a third group either
        gc._on_join(request(P.JOIN_GROUP, group="c", member_id="", topics=["t"], session_timeout_ms=10_000))
    assert e.value.code == P.BUFFER_FULL


def test_a_member_heartbeating_with_the_generation_it_knows_keeps_its_session_while_its_join_answer_waits() -> None:
    """A group consumer's join goes on across polls: the JOIN_GROUP answer of a completed
    rebalance may wait in its socket while its application works, and its heartbeat thread
    heartbeats meanwhile with the generation it knows. Refused (illegal_generation), the
    heartbeat still says the member is alive: it is not dropped as silent, so its SYNC_GROUP,
    at its next poll, finds its assignment (fabric.client.group relies on it)."""
    gc, context, _ = _loaded_without_offsets_topic()
    a = context.server.answer(_join(gc, "a"))
    b_join = _join(gc, "b")
    _join(gc, "a", a["member_id"], 1)
    b = context.server.answer(b_join)
    assert b["generation"] == 2  # a's answer is not read
    for _ in range(5):  # 15 s: past the 10 s session
        context.reactor.clock.advance(3000)
        with pytest.raises(RemoteError) as e:
            gc._on_heartbeat(request(P.HEARTBEAT, group="g", member_id=a["member_id"], generation=1))
        assert e.value.code == P.ILLEGAL_GENERATION
        gc._on_heartbeat(request(P.HEARTBEAT, group="g", member_id=b["member_id"], generation=2))
        gc.tick()
    assert a["member_id"] in gc.groups["g"].members and gc.groups["g"].generation == 2
    synced = gc._on_sync(request(P.SYNC_GROUP, group="g", member_id=a["member_id"], generation=2))
    assert synced["assignment"]


# -- the tick and a rebalance do not redo work per member and subscribed topic ------------------------
class _CountedTopics(list):
    """A member's topics that count how often they are read through."""

    reads = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        _CountedTopics.reads += 1
        return super().__iter__()


def _stable(gc: GroupCoordinator, topics: list[str]) -> dict:
    req = request(P.JOIN_GROUP, group="g", member_id="", client_id="a", topics=topics, session_timeout_ms=10_000,
                  rebalance_timeout_ms=10_000)
    assert gc._on_join(req) is DEFER
    return gc.context.server.answer(req)  # type: ignore[attr-defined]


def test_ticks_compare_a_stable_groups_partition_counts_only_when_a_subscribed_topic_changed() -> None:
    """Every 100 ms tick gathered every stable group's members' topics again: 2,000 groups of
    one member subscribed to 1,000 topics took 90 ms of each tick."""
    gc, context, _ = _loaded_without_offsets_topic()
    a = _stable(gc, ["t", "u"])
    member = gc.groups["g"].members[a["member_id"]]
    member.topics = _CountedTopics(member.topics)
    gc.tick()  # the first tick after the assignment compares
    _CountedTopics.reads = 0
    for _ in range(10):
        context.reactor.clock.advance(100)
        gc.tick()
    assert _CountedTopics.reads == 0
    context.state.topics["other"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])])
    gc.tick()
    assert gc.groups["g"].state == "Stable", "a topic nobody subscribes to changes nothing"
    context.state.topics["u"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])])
    gc.tick()
    assert gc.groups["g"].state == "PreparingRebalance", "a subscribed topic made: its partitions are assigned"


def test_a_topic_made_again_between_an_assignment_and_the_next_tick_is_still_assigned() -> None:
    gc, context, _ = _loaded_without_offsets_topic()
    context.state.topics["u"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])])
    gc.tick()
    del context.state.topics["u"]  # deleted ...
    _stable(gc, ["t", "u"])          # ... assigned without it ...
    context.state.topics["u"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])])  # ... made again
    gc.tick()  # the same counts as at the tick before: only the comparison after the assignment sees it
    assert gc.groups["g"].state == "PreparingRebalance"


def test_the_assignor_gets_each_members_topics_as_a_set(monkeypatch: pytest.MonkeyPatch) -> None:
    """The assignors ask "does this member subscribe to this topic?" per topic and member: on
    lists a range rebalance of 500 members subscribed to 1,000 topics took 3 s of the reactor."""
    seen: list = []

    def spy(strategy: str, subscriptions: dict, partitions: dict, previous: dict | None = None) -> dict:
        seen.extend(subscriptions.values())
        return assign(strategy, subscriptions, partitions, previous)
    monkeypatch.setattr(groups_module, "assign", spy)
    gc, _, _ = _loaded_without_offsets_topic()
    _stable(gc, ["t", "u"])
    assert seen and all(isinstance(topics, (set, frozenset)) for topics in seen)


def test_describe_answers_a_group_named_many_times_once() -> None:
    """DESCRIBE_GROUPS takes up to GROUPS_MAX names: one group of 100 members with 100 topics
    each, named 2,000 times (a 4 KB request), made a 91 MB answer, built and encoded on the
    coordinator's reactor (1.1 s); larger groups, more."""
    gc, _, _ = _loaded_without_offsets_topic()
    _stable(gc, ["t"])
    out = gc._on_describe_groups(request(P.DESCRIBE_GROUPS, groups=["g"] * 1000 + ["h", "g"]))
    assert [d["group"] for d in out["groups"]] == ["g", "h"]
    assert len(out["groups"][0]["members"]) == 1 and out["groups"][1]["state"] == "Dead"

def test_admin_commits_in_flight_count_towards_the_groups_limit(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Groups whose first commit was still being written were not counted: commits of new
    groups sent together all passed, up to PENDING_COMMITS_MAX groups past the limit."""
    monkeypatch.setattr(P, "GROUPS_MAX", 2)
    gc, _, client = loaded_group_coordinator(tmp_path)
    admin_commit(gc, client, "a", 1, ack=False)
    admin_commit(gc, client, "b", 1, ack=False)
    with pytest.raises(RemoteError) as e:
        gc._on_offset_commit(request(P.OFFSET_COMMIT, group="c", generation=-1, offsets=[["t", 0, 1]]))
    assert e.value.code == P.BUFFER_FULL
    admin_commit(gc, client, "a", 2, ack=False)  # a group held already still commits


def test_a_refused_join_leaves_the_groups_assignor_as_it_was() -> None:
    """A join refused (an unknown member id here) changes nothing of the group: not its assignor,
    which DESCRIBE_GROUPS shows and which a group with only committed offsets keeps."""
    gc, context, _ = _loaded_without_offsets_topic()
    a = context.server.answer(_join(gc, "a"))
    gc._remove_member(gc.groups["g"], a["member_id"], "left")  # empty now, still held
    assert not gc.groups["g"].members and gc.groups["g"].assignor == "range"
    bad = request(P.JOIN_GROUP, group="g", member_id="ghost-1", generation=-1, client_id="x", topics=["t"],
                  session_timeout_ms=10_000, assignor="sticky")
    with pytest.raises(RemoteError) as e:
        gc._on_join(bad)
    assert e.value.code == P.UNKNOWN_MEMBER
    assert gc.groups["g"].assignor == "range"
