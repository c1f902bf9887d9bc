"""Bounds on what the whole coordinator holds, beyond each group's: members across all groups,
the topic names they subscribe to, and the bytes of the offset commits waiting for their
append. Before, GROUPS_MAX groups of GROUP_MEMBERS_MAX members of TOPICS_PER_MEMBER_MAX names
each (10,000 x 1,000 x 1,000 names of up to 249 characters), or PENDING_COMMITS_MAX commits of
up to a megabyte each, were all admitted: a client could grow the coordinator's memory without
bound it would notice. Past a bound a request is refused with the retriable buffer_full and
nothing changes. Room comes back as members leave or expire (the held totals are counted
again on every tick) and as commits land (their bytes at once). The real GroupCoordinator on a FakeGroupContext."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from nodes.coordinator.groups import GroupCoordinator
from tests.unit.fakes import (FakeGroupContext, ack_last_produce, group_coordinator, loaded_group_coordinator, request,
                              two_partition_state)


def _coordinator() -> tuple[GroupCoordinator, FakeGroupContext]:
    context = FakeGroupContext(two_partition_state())
    gc, _client = group_coordinator(context)
    gc.offsets.start_loading()  # no offsets topic yet: loaded at once
    return gc, context


def _join(gc: GroupCoordinator, group: str, topics: list[str], member_id: str = "") -> wire.Request:
    req = request(P.JOIN_GROUP, group=group, member_id=member_id, client_id="c", topics=topics,
                  session_timeout_ms=10_000, rebalance_timeout_ms=10_000)
    assert gc._on_join(req) is DEFER
    return req


def _refused(gc: GroupCoordinator, group: str, topics: list[str], member_id: str = "") -> RemoteError:
    with pytest.raises(RemoteError) as e:
        gc._on_join(request(P.JOIN_GROUP, group=group, member_id=member_id, client_id="c", topics=topics,
                            session_timeout_ms=10_000, rebalance_timeout_ms=10_000))
    assert e.value.code == P.BUFFER_FULL and e.value.retriable
    return e.value


def test_members_across_all_groups_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "MEMBERS_MAX", 3)
    gc, context = _coordinator()
    joined = [context.server.answer(_join(gc, f"g{i}", ["t"])) for i in range(3)]
    _refused(gc, "g3", ["t"])
    assert "g3" not in gc.groups, "a refused join leaves no group behind"
    _refused(gc, "g0", ["t"])  # nor may an existing group grow
    gc._on_leave(request(P.LEAVE_GROUP, group="g0", member_id=joined[0]["member_id"]))
    gc.tick()
    context.server.answer(_join(gc, "g3", ["t"]))
    # a member joining again is not one more
    gc._on_join(request(P.JOIN_GROUP, group="g1", member_id=joined[1]["member_id"], client_id="c", topics=["t"],
                        generation=joined[1]["generation"], session_timeout_ms=10_000, rebalance_timeout_ms=10_000))


def test_a_member_id_handed_out_counts_as_a_member(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "MEMBERS_MAX", 2)
    gc, context = _coordinator()
    ids = []
    for i in range(2):  # KIP-394: the first join only gets a member id
        req = request(P.JOIN_GROUP, group=f"g{i}", member_id="", client_id="c", topics=["t"], require_member_id=True,
                      session_timeout_ms=10_000, rebalance_timeout_ms=10_000)
        ids.append(gc._on_join(req)["member_id"])
    _refused(gc, "g2", ["t"])
    context.server.answer(_join(gc, "g0", ["t"], ids[0]))  # the id handed out joins: not one more


def test_subscribed_names_across_all_members_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "SUBSCRIBED_TOPICS_MAX", 5)
    gc, context = _coordinator()
    a = context.server.answer(_join(gc, "g0", ["t", "x1", "x2"]))
    _refused(gc, "g1", ["t", "y1", "y2"])
    context.server.answer(_join(gc, "g1", ["t", "y1"]))
    _refused(gc, "g0", ["t", "x1", "x2", "x3"], a["member_id"])  # a rejoin may not grow past it either
    assert sorted(gc.groups["g0"].members[a["member_id"]].topics) == ["t", "x1", "x2"], "nothing changed"
    context.server.answer(_join(gc, "g0", ["t"], a["member_id"]))  # shrinking is fine
    gc.tick()
    context.server.answer(_join(gc, "g2", ["t", "z1"]))


def test_bytes_of_commits_waiting_for_their_append_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "PENDING_COMMIT_BYTES_MAX", 20_000)
    gc, context, client = loaded_group_coordinator(tmp_path)
    big = "m" * 4000

    def commit(group: str, offset: int) -> wire.Request:
        req = request(P.OFFSET_COMMIT, group=group, generation=-1, offsets=[["t", 0, offset, big], ["t", 1, offset, big]])
        assert gc._on_offset_commit(req) is DEFER
        return req
    waiting = [commit("g", 1), commit("g", 2)]  # ~16 KB waiting for the log-end lookups
    with pytest.raises(RemoteError) as e:
        commit("g", 3)
    assert e.value.code == P.BUFFER_FULL and e.value.retriable
    for cmd, _h, _p, cb in list(client.sent):
        if cmd == P.LIST_OFFSETS:
            cb({"parts": [["t", 0, 0, 1000], ["t", 1, 0, 1000]]}, [], None)
    ack_last_produce(client, 0)  # one append at a time per offsets partition
    ack_last_produce(client, 1)
    assert all(context.server.answer(r) == {"group": "g", "committed": 2} for r in waiting)
    commit("g", 3)  # room again
