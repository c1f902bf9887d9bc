"""The group coordinator's membership and its checks of commits and fetches: the real
GroupCoordinator (and OffsetStore) on a FakeGroupContext (tests/unit/fakes.py), no cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from nodes.coordinator.groups import GroupCoordinator
from tests.unit.fakes import (FakeGroupContext, admin_commit, group_coordinator, loaded_group_coordinator, request,
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
    assert client.of(P.PRODUCE) == [], "a commit of generation 1 was appended in generation 2"
    assert context.server.answer(commit).get("error") == P.ILLEGAL_GENERATION
    assert gc.offsets.offsets_for("g") == {}
    # a commit of the current owner still goes through
    ok = request(P.OFFSET_COMMIT, group="g", member_id=b["member_id"], generation=2, offsets=[["t", 1, 7]])
    gc._on_offset_commit(ok)
    (produce,) = client.of(P.PRODUCE)
    produce[3]({"results": [[0, 0, ""]]}, [], None)
    assert context.server.answer(ok) == {"group": "g", "committed": 1}
    assert gc.offsets.offsets_for("g")[("t", 1)].offset == 7


# -- bad input gets a clear error, not an internal one ---------------------------------------------
def test_offset_fetch_with_mistyped_partitions_is_malformed() -> None:
    gc, _, _ = _loaded_without_offsets_topic()
    with pytest.raises(RemoteError) as e:
        gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[[{"x": 1}, 0]]))
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
