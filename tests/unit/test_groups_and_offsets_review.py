"""Consumer groups and committed offsets, as an adversarial review attacked them: offsets of a
deleted topic carried over to a topic made again under its name (the group skipped its first
records, and its commits were refused as going backward), a member that had left the group
committed as an administrator (offsets moved backward), JOIN_GROUP kept any topic name, and
two members expiring in the tick in which the rebalance deadline passed stopped the
coordinator."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from fabric import protocol as P
from fabric import wire
from fabric.client.group import CommitFailed, GroupConsumer
from fabric.client.group_link import HeartbeatSettings, HeartbeatThread
from fabric.clock import ManualClock
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from nodes.coordinator.groups import GroupCoordinator
from nodes.coordinator.offsets_loader import decode_record
from nodes.coordinator.store import PartitionState, TopicState
from tests.unit.fakes import (FakeGroupContext, NoHeartbeat, ScriptedCoordinatorLink, ack_last_produce, ack_readings,
                              admin_commit,
                              group_coordinator, loaded_group_coordinator, request, two_partition_state)


def _join(gc: GroupCoordinator, client_id: str, member_id: str = "", generation: int = -1) -> wire.Request:
    req = request(P.JOIN_GROUP, group="g", member_id=member_id, generation=generation, client_id=client_id,
                  topics=["t"], session_timeout_ms=10_000, rebalance_timeout_ms=10_000)
    assert gc._on_join(req) is DEFER
    return req


def _member_commit(gc: GroupCoordinator, context, client, member: dict, offset: int, log_end: int) -> dict:  # noqa: ANN001
    req = request(P.OFFSET_COMMIT, group="g", member_id=member["member_id"], generation=member["generation"],
                  offsets=[["t", 0, offset]])
    ack_readings(client)  # the group's reading of t, stored when it joined
    before = len(client.sent)
    try:
        assert gc._on_offset_commit(req) is DEFER
    except RemoteError as e:
        return {"error": e.code, "message": e.message}
    for cmd, _h, _p, cb in client.sent[before:]:
        if cmd == P.LIST_OFFSETS:
            cb({"parts": [["t", 0, 0, log_end]]}, [], None)
    if client.sent[-1][0] == P.PRODUCE:
        ack_last_produce(client, 0)
    return context.server.answer(req)


def _delete_and_recreate(gc: GroupCoordinator, context) -> str:  # noqa: ANN001
    """Topic t deleted (as Coordinator._on_delete_topic does) and made again under its name."""
    old = context.state.topics.pop("t")
    context.state.topic_deleted(old.topic_id)
    gc.topic_deleted("t")
    context.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3]) for _ in range(2)])
    assert context.state.topics["t"].topic_id != old.topic_id
    return old.topic_id


def test_a_recreated_topic_does_not_inherit_the_committed_offsets_of_the_deleted_one(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    a = context.server.answer(_join(gc, "a"))
    assert _member_commit(gc, context, client, a, 500, log_end=1000) == {"group": "g", "committed": 1}
    gc._on_leave(request(P.LEAVE_GROUP, group="g", member_id=a["member_id"]))
    _delete_and_recreate(gc, context)
    b = context.server.answer(_join(gc, "b"))
    fetched = gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[["t", 0]]))
    assert fetched["offsets"] == [["t", 0, -1, "", -1]], f"the new topic starts from the deleted topic's commit: {fetched}"
    got = _member_commit(gc, context, client, b, 50, log_end=100)
    assert got == {"group": "g", "committed": 1}, f"the new topic's progress cannot be committed: {got}"
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 50


def test_offsets_of_a_deleted_topic_read_back_from_the_log_stay_apart_from_the_new_topic(tmp_path: Path) -> None:
    """The commit record names its topic's id: replayed after a coordinator restart, the old
    topic's commit still does not count for the new one (records older than the id count as
    before)."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    a = context.server.answer(_join(gc, "a"))
    _member_commit(gc, context, client, a, 500, log_end=1000)
    old_id = _delete_and_recreate(gc, context)
    entry = gc.offsets.table["g"][("t", 0)]
    assert entry.topic_id == old_id, "the commit was stored without its topic's id"
    gc.offsets.table.clear()  # a restarted coordinator replays the log
    key = msgpack.packb(["g", "t", 0], use_bin_type=True)
    value = msgpack.packb([500, "", 7, old_id], use_bin_type=True)
    gc.offsets.loader.apply_record(key, value)
    assert decode_record(key, value)[0][6] == old_id
    assert gc.offsets.offsets_for("g") == {}, "a replayed commit of the deleted topic counts for the new one"
    legacy = msgpack.packb([500, "", 7], use_bin_type=True)  # written before the id was
    gc.offsets.loader.apply_record(key, legacy)
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 500


def _bridge(gc: GroupCoordinator, context, client):  # noqa: ANN001, ANN202
    """A ScriptedCoordinatorLink answer that hands each call to the real GroupCoordinator (the
    log-end lookups and appends it makes are answered at once: t-0 and t-1 hold 1000 records)."""
    handlers = {P.JOIN_GROUP: gc._on_join, P.SYNC_GROUP: gc._on_sync, P.HEARTBEAT: gc._on_heartbeat,
                P.LEAVE_GROUP: gc._on_leave, P.OFFSET_COMMIT: gc._on_offset_commit,
                P.OFFSET_FETCH: gc._on_offset_fetch}

    def answer(command: bytes, header: dict) -> dict:
        req = request(command, **header)
        ack_readings(client)  # the groups' readings stored so far
        before = len(client.sent)
        out = handlers[command](req)
        if out is not DEFER:
            return out
        for cmd, h, _p, cb in client.sent[before:]:
            if cmd == P.LIST_OFFSETS:
                cb({"parts": [[t, p, 0, 1000] for t, p, _ in h["parts"]]}, [], None)
        if len(client.sent) > before and client.sent[-1][0] == P.PRODUCE:
            ack_last_produce(client, 0)
        reply = context.server.answer(req)
        if "error" in reply:
            raise RemoteError(reply["error"], reply["message"])
        return reply
    return answer


class _Beats:
    def __init__(self, gc: GroupCoordinator) -> None:
        self.gc = gc

    def call(self, command: bytes, header: dict, **_kw: object) -> tuple[dict, list]:
        fn = {P.HEARTBEAT: self.gc._on_heartbeat, P.LEAVE_GROUP: self.gc._on_leave}[command]
        return fn(request(command, **header)), []


def test_a_member_that_left_for_not_polling_cannot_commit_as_an_administrator(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    clock = ManualClock(1000)
    a = GroupConsumer("127.0.0.1:1", group_id="g", coordinator=ScriptedCoordinatorLink(_bridge(gc, context, client)),
                      heartbeat_factory=NoHeartbeat.make, clock=clock, enable_auto_commit=False,
                      max_poll_interval_ms=5000)
    try:
        a.subscribe(["t"])
        a.poll(0)
        assert a.generation == 1 and a.assignment() == [("t", 0), ("t", 1)]
        a.commit({("t", 0): 10})
        # a's application works on a batch longer than max_poll_interval_ms: its heartbeat
        # thread leaves the group for it
        clock.advance(6000)
        HeartbeatThread(a, HeartbeatSettings("g", "a", 1000, 10_000), "tcp://127.0.0.1:1").beat(_Beats(gc))
        assert not gc.groups["g"].members
        # b takes the partitions, reads on and commits 40, then goes
        b_join = request(P.JOIN_GROUP, group="g", member_id="", client_id="b", topics=["t"], session_timeout_ms=10_000)
        gc._on_join(b_join)
        b = context.server.answer(b_join)
        _bridge(gc, context, client)(P.OFFSET_COMMIT, {"group": "g", "member_id": b["member_id"],
                                                        "generation": b["generation"], "offsets": [["t", 0, 40]]})
        gc._on_leave(request(P.LEAVE_GROUP, group="g", member_id=b["member_id"]))
        with pytest.raises(CommitFailed) as refused:  # a commits what it processed, as after any poll
            a.commit({("t", 0): 12})
        assert refused.value.code == P.UNKNOWN_MEMBER
        assert gc.offsets.offsets_for("g")[("t", 0)].offset == 40, "the commit of a member that left moved it back"
    finally:
        a.close()


@pytest.mark.parametrize("topics", [["x" * 1_000_000], [""], ["a/../b"]])
def test_join_refuses_topic_names_no_topic_can_have(topics: list[str]) -> None:
    context = FakeGroupContext(two_partition_state())
    gc, _ = group_coordinator(context)
    req = request(P.JOIN_GROUP, group="g", member_id="", client_id="a", topics=topics, session_timeout_ms=10_000)
    with pytest.raises(RemoteError) as e:
        gc._on_join(req)
    assert e.value.code == P.INVALID_TOPIC and len(e.value.message) < 500
    assert "g" not in gc.groups or not gc.groups["g"].members


def test_two_members_expiring_as_the_rebalance_deadline_passes_do_not_break_the_tick() -> None:
    context = FakeGroupContext(two_partition_state())
    gc, _ = group_coordinator(context)
    gc.offsets.start_loading()
    a = context.server.answer(_join(gc, "a"))
    b_req = _join(gc, "b")
    _join(gc, "a", a["member_id"], a["generation"])
    b = context.server.answer(b_req)
    assert b["generation"] == 2 and len(gc.groups["g"].members) == 2  # every last_seen_ms is now
    context.clock.advance(50)
    _join(gc, "c")  # a third member joins: a and b are asked to rejoin ... and both die at once
    context.clock.advance(10_050)  # both sessions are over and the deadline has passed
    gc.tick()
    group = gc.groups["g"]
    assert group.generation == 3 and [m.client_id for m in group.members.values()] == ["c"]


def test_an_async_commit_of_a_consumer_that_left_is_reported_through_on_commit(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    clock = ManualClock(1000)
    seen: list = []
    a = GroupConsumer("127.0.0.1:1", group_id="g", coordinator=ScriptedCoordinatorLink(_bridge(gc, context, client)),
                      heartbeat_factory=NoHeartbeat.make, clock=clock, enable_auto_commit=False,
                      max_poll_interval_ms=5000, on_commit=lambda offsets, err: seen.append((offsets, err)))
    try:
        a.subscribe(["t"])
        a.poll(0)
        assert a.generation == 1
        clock.advance(6000)
        assert a.leave_if_poll_expired() is not None
        a.commit({("t", 0): 12}, asynchronous=True)  # the result goes to on_commit, as every async one's
        assert len(seen) == 1 and isinstance(seen[0][1], CommitFailed) and seen[0][1].code == P.UNKNOWN_MEMBER
    finally:
        a.close()


def test_a_commit_waiting_across_a_delete_and_recreate_does_not_land_on_the_new_topic(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    req = request(P.OFFSET_COMMIT, group="g", generation=-1, offsets=[["t", 0, 500]])
    before = len(client.sent)
    assert gc._on_offset_commit(req) is DEFER
    lookups = [cb for cmd, _h, _p, cb in client.sent[before:] if cmd == P.LIST_OFFSETS]
    _delete_and_recreate(gc, context)  # while the commit waits for its log-end lookup
    for cb in lookups:
        cb({"parts": [["t", 0, 0, 1000]]}, [], None)
    if client.sent[-1][0] == P.PRODUCE:
        ack_last_produce(client, 0)
    assert ("t", 0) not in gc.offsets.offsets_for("g"), "the new topic starts at the deleted topic's offset"
    assert context.server.answer(req)["error"] == P.UNKNOWN_TOPIC_OR_PARTITION


def test_a_group_left_with_offsets_of_a_deleted_topic_only_can_be_deleted_and_commit_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    monkeypatch.setattr(P, "GROUPS_MAX", 1)
    admin_commit(gc, client, "g", 500)
    _delete_and_recreate(gc, context)
    admin_commit(gc, client, "g", 5)  # the same group, at the groups limit: not one too many
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 5
    _delete_and_recreate(gc, context)
    assert "g" in [g["group"] for g in gc._on_list_groups(request(P.LIST_GROUPS))["groups"]]
    deleted = request(P.DELETE_GROUP, group="g")
    assert gc._on_delete_group(deleted) is DEFER
    ack_last_produce(client, 0)
    assert context.server.answer(deleted) == {"group": "g", "deleted": True} and "g" not in gc.offsets.table


def test_groups_with_no_members_lose_their_offsets_after_the_retention(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a retention, groups nobody joins again (one per anonymous stream, or per run of a
    script with a random group) stayed for good: at GROUPS_MAX every new group was refused."""
    monkeypatch.setattr(P, "GROUPS_MAX", 3)
    gc, context, client = loaded_group_coordinator(tmp_path)
    for i in range(3):  # three groups that joined, committed and left
        req = request(P.JOIN_GROUP, group=f"ws-{i}", member_id="", client_id="c", topics=["t"], session_timeout_ms=10_000)
        gc._on_join(req)
        m = context.server.answer(req)
        _bridge(gc, context, client)(P.OFFSET_COMMIT, {"group": f"ws-{i}", "member_id": m["member_id"],
                                                        "generation": m["generation"], "offsets": [["t", 0, 5]]})
        gc._on_leave(request(P.LEAVE_GROUP, group=f"ws-{i}", member_id=m["member_id"]))
    with pytest.raises(RemoteError):  # at the limit
        gc._on_join(request(P.JOIN_GROUP, group="billing", member_id="", client_id="c", topics=["t"],
                            session_timeout_ms=10_000))
    answered = [len(client.sent)]

    def tick() -> None:
        gc.tick()
        while answered[0] < len(client.sent):  # appends (snapshots, tombstones) land, each once, in order
            cmd, _h, _p, callback = client.sent[answered[0]]
            answered[0] += 1
            if cmd == P.PRODUCE:
                callback({"results": [[1, 0, "", 0]]}, [], None)
    context.clock.advance(gc.offsets_retention_ms // 2)
    tick()
    assert len(gc.offsets.table) == 3, "expired before the retention"
    context.clock.advance(gc.offsets_retention_ms // 2 + 60_000)
    tick()
    tick()
    assert gc.offsets.table == {} and context.counters["group_offsets_expired"] == 3
    join = request(P.JOIN_GROUP, group="billing", member_id="", client_id="c", topics=["t"], session_timeout_ms=10_000)
    assert gc._on_join(join) is DEFER  # room again


def _ticker(gc: GroupCoordinator, client):  # noqa: ANN001, ANN202
    answered = [len(client.sent)]

    def tick() -> None:
        gc.tick()
        while answered[0] < len(client.sent):  # appends (snapshots, tombstones) land, in order
            cmd, _h, _p, callback = client.sent[answered[0]]
            answered[0] += 1
            if cmd == P.PRODUCE and answered[0] - 1 in client.unanswered:  # each once
                client.unanswered.remove(answered[0] - 1)
                callback({"results": [[1, 0, "", 0]]}, [], None)
    return tick


def test_a_group_in_use_on_a_quiet_topic_keeps_its_offsets_when_its_consumer_restarts(tmp_path: Path) -> None:
    """Kafka's KIP-211: a group's offsets expire a retention after the group became EMPTY, not
    after its newest commit. A consumer of a quiet topic commits nothing new (the client only
    commits positions that moved), so its newest commit grows old while the group is in use;
    the first minute without members (a redeploy) then deletes every offset at once, and the
    restarted consumer resets (auto_offset_reset=latest skips what came meanwhile)."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    gc.offsets_retention_ms = 10 * 60_000  # 10 minutes (the config's minimum is 1 minute)
    tick = _ticker(gc, client)
    call = _bridge(gc, context, client)
    m = call(P.JOIN_GROUP, {"group": "g", "member_id": "", "client_id": "c", "topics": ["t"],
                            "session_timeout_ms": 10_000})
    call(P.OFFSET_COMMIT, {"group": "g", "member_id": m["member_id"], "generation": m["generation"],
                           "offsets": [["t", 0, 5]]})
    for _ in range(15 * 60 // 3):  # 15 minutes in the group, heartbeating; nothing new to commit
        context.clock.advance(3000)
        call(P.HEARTBEAT, {"group": "g", "member_id": m["member_id"], "generation": m["generation"]})
        tick()
    assert gc.offsets.offsets_for("g"), "expired while the group had a member"
    call(P.LEAVE_GROUP, {"group": "g", "member_id": m["member_id"]})  # the consumer is redeployed ...
    for _ in range(60):  # ... and is back a minute later
        context.clock.advance(1000)
        tick()
    fetched = gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[["t", 0]]))
    assert fetched["offsets"] == [["t", 0, 5, "", -1]], \
        f"a group empty for one minute lost its offsets (retention 10 minutes): {fetched}"


def test_the_expiry_leaves_room_for_the_commits_of_live_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One expiry check queues a tombstone commit per expired group until PENDING_COMMITS_MAX
    (as after an upgrade on a cluster at GROUPS_MAX, the very case the retention was made for):
    every live member's commit is then refused buffer_full until they are all replicated."""
    monkeypatch.setattr(P, "PENDING_COMMITS_MAX", 4)
    gc, context, client = loaded_group_coordinator(tmp_path)
    call = _bridge(gc, context, client)
    for i in range(6):  # six groups that committed once and left
        m = call(P.JOIN_GROUP, {"group": f"old-{i}", "member_id": "", "client_id": "c", "topics": ["t"],
                                "session_timeout_ms": 10_000})
        call(P.OFFSET_COMMIT, {"group": f"old-{i}", "member_id": m["member_id"], "generation": m["generation"],
                               "offsets": [["t", 0, 5]]})
        call(P.LEAVE_GROUP, {"group": f"old-{i}", "member_id": m["member_id"]})
    context.clock.advance(gc.offsets_retention_ms + 60_000)
    live = request(P.JOIN_GROUP, group="live", member_id="", client_id="c", topics=["t"], session_timeout_ms=10_000)
    gc._on_join(live)
    m = context.server.answer(live)
    gc.tick()  # the expiry check: tombstones queued (their appends outstanding)
    commit = request(P.OFFSET_COMMIT, group="live", member_id=m["member_id"], generation=m["generation"],
                     offsets=[["t", 0, 7]])
    try:
        out = gc._on_offset_commit(commit)
    except RemoteError as e:
        out = e
    assert out is DEFER, f"a live member's commit was refused because the expiry took every slot: {out}"


class _LeavesBeforeTheHeader(GroupConsumer):
    """The heartbeat thread leaves the group (max_poll_interval_ms) while the consumer's thread
    is in commit(), after its check of the membership and before the header is built."""

    leave: object = None

    def _commit_header(self, *args):  # noqa: ANN002, ANN202
        leave, self.leave = self.leave, None
        if callable(leave):
            leave()
        return super()._commit_header(*args)


def test_a_commit_reads_the_membership_once_a_leave_meanwhile_is_no_administrators_commit(tmp_path: Path) -> None:
    """commit() checked the member id and generation, then read them again for the header: a
    leave by the heartbeat thread in between sent member "" and generation -1 -- an
    administrator's commit, which an emptied group takes (it may move offsets backward)."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    clock = ManualClock(1000)
    answer = _bridge(gc, context, client)
    a = _LeavesBeforeTheHeader("127.0.0.1:1", group_id="g", coordinator=ScriptedCoordinatorLink(answer),
                               heartbeat_factory=NoHeartbeat.make, clock=clock, enable_auto_commit=False,
                               max_poll_interval_ms=5000)
    try:
        a.subscribe(["t"])
        a.poll(0)
        assert a.generation == 1
        a.commit({("t", 0): 40})

        def heartbeat_thread_leaves() -> None:
            clock.advance(6000)
            mid = a.leave_if_poll_expired()
            assert mid
            answer(P.LEAVE_GROUP, {"group": "g", "member_id": mid})  # what the heartbeat thread sends then
        a.leave = heartbeat_thread_leaves
        with pytest.raises(CommitFailed):
            a.commit({("t", 0): 12})
        assert gc.offsets.offsets_for("g")[("t", 0)].offset == 40, "the left member's commit moved the offset back"
    finally:
        a.leave = None
        a.close()


@pytest.mark.parametrize("recreated", [False, True])
def test_a_group_is_deleted_though_a_topic_of_it_goes_while_its_tombstones_wait(tmp_path: Path, recreated: bool) -> None:
    """DELETE_GROUP failed (unknown_topic_or_partition, the group kept) when one of the group's
    topics was deleted while the tombstones waited in the offsets partition's queue: the check
    that keeps a deleted topic's offset from landing on a topic made again under its name also
    ran on tombstones, which only delete. A tombstone queued before a commit of the new topic
    is written and applied before it, so nothing of the new topic is lost."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    admin_commit(gc, client, "g", 5)
    admin_commit(gc, client, "g", 6, ack=False)  # the offsets partition's append is busy
    deleted = request(P.DELETE_GROUP, group="g")
    assert gc._on_delete_group(deleted) is DEFER
    if recreated:
        _delete_and_recreate(gc, context)
    else:
        context.state.topic_deleted(context.state.topics.pop("t").topic_id)
        gc.topic_deleted("t")
    ack_last_produce(client, 1)  # the commit lands; the tombstones go next
    ack_last_produce(client, 2)
    assert context.server.answer(deleted) == {"group": "g", "deleted": True}
    assert "g" not in gc.offsets.table


def test_a_deleted_group_does_not_come_back_with_a_commit_that_was_in_flight(tmp_path: Path) -> None:
    """The tombstones named only the partitions in the table: a first commit of t-1 queued
    before DELETE_GROUP landed before them and survived them -- the deletion was answered
    "deleted" and the group was back with an offset. The partitions of commits in flight get
    tombstones too (queued behind them: they land, then go)."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    admin_commit(gc, client, "g", 5)
    reset = request(P.OFFSET_COMMIT, group="g", generation=-1, offsets=[["t", 1, 3]])
    gc._on_offset_commit(reset)
    for cmd, _h, _p, cb in list(client.sent):
        if cmd == P.LIST_OFFSETS:
            cb({"parts": [["t", 1, 0, 1000]]}, [], None)
    deleted = request(P.DELETE_GROUP, group="g")
    gc._on_delete_group(deleted)
    ack_last_produce(client, 1)  # the commit of t-1
    ack_last_produce(client, 2)  # the tombstones
    assert context.server.answer(reset) == {"group": "g", "committed": 1}
    assert context.server.answer(deleted) == {"group": "g", "deleted": True}
    assert "g" not in gc.offsets.table, f"the deleted group is back: {gc.offsets.table.get('g')}"


def test_a_group_whose_only_offsets_are_in_flight_can_be_deleted(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    first = request(P.OFFSET_COMMIT, group="g", generation=-1, offsets=[["t", 1, 3]])
    gc._on_offset_commit(first)  # waits for its log-end lookup
    deleted = request(P.DELETE_GROUP, group="g")
    assert gc._on_delete_group(deleted) is DEFER, "not unknown_group: its first commit is on its way"
    for cmd, _h, _p, cb in list(client.sent):
        if cmd == P.LIST_OFFSETS:
            cb({"parts": [["t", 1, 0, 1000]]}, [], None)
    ack_last_produce(client, 0)  # the commit and the tombstones: one append
    assert context.server.answer(deleted) == {"group": "g", "deleted": True}
    assert "g" not in gc.offsets.table
