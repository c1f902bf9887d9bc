"""DELETE_GROUP of a group with very many committed partitions: its tombstones once went as one
commit, which a long group id and enough partitions made larger than PENDING_COMMIT_BYTES_MAX,
so the deletion was refused buffer_full every time and the group could never be deleted. They
go in bounded commits, one after another; a deletion that fails part way has deleted a part
and a retry deletes the rest. The real GroupCoordinator and OffsetStore on a FakeGroupContext
with a RecordingClient."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from nodes.coordinator.offsets_commits import Committed
from nodes.coordinator.store import PartitionState, TopicState
from tests.unit.fakes import is_readings, loaded_group_coordinator, offsets_records, request

GROUP = "g" * 200
PARTITIONS = 300  # about 300 * (100 + 200 + 5) bytes of tombstones: 90 KB


def _big_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN202 - (gc, context, client)
    monkeypatch.setattr(P, "PENDING_COMMIT_BYTES_MAX", 64 * 1024)  # below what its tombstones take
    gc, context, client = loaded_group_coordinator(tmp_path)
    gc.offsets.table[GROUP] = {(f"t{p % 7}", p): Committed(5) for p in range(PARTITIONS)}
    return gc, context, client


def _answer_produces(client, code: int = 0) -> int:  # noqa: ANN001
    """Answer the PRODUCEs sent and not answered (base offset 10, ``code``); how many."""
    n = 0
    for i in [i for i in client.unanswered if client.sent[i][0] == P.PRODUCE]:
        client.unanswered.remove(i)
        client.sent[i][3]({"results": [[10 if code == 0 else -1, code, "x"]]}, [], None)
        n += 1
    return n


def test_a_group_whose_tombstones_exceed_the_pending_bound_is_deleted_in_bounded_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gc, context, client = _big_group(tmp_path, monkeypatch)
    req = request(P.DELETE_GROUP, group=GROUP)
    assert gc._on_delete_group(req) is DEFER
    appends = []
    for _ in range(100):
        sent = [client.sent[i] for i in client.unanswered if client.sent[i][0] == P.PRODUCE]
        if not sent:
            break
        appends.extend(len(offsets_records(s[2][0])) for s in sent)
        assert gc.offsets._pending_bytes <= P.PENDING_COMMIT_BYTES_MAX
        _answer_produces(client)
    assert context.server.replies and context.server.replies[-1][1] == {"group": GROUP, "deleted": True}
    assert sum(appends) == PARTITIONS and len(appends) > 1
    assert GROUP not in gc.offsets.table and GROUP not in gc.offsets.groups()


def test_a_deletion_that_fails_part_way_leaves_the_rest_for_a_retry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gc, context, client = _big_group(tmp_path, monkeypatch)
    req = request(P.DELETE_GROUP, group=GROUP)
    assert gc._on_delete_group(req) is DEFER
    assert _answer_produces(client) == 1  # the first part is deleted
    left = len(gc.offsets.table[GROUP])
    assert 0 < left < PARTITIONS
    assert _answer_produces(client, P.NOT_ENOUGH_REPLICAS) == 1  # the next one is refused (retried)...
    context.reactor.advance(30_000)  # ... until its deadline
    while _answer_produces(client, P.NOT_ENOUGH_REPLICAS):
        context.reactor.advance(30_000)
    assert [e for _r, e, _p in context.server.replies if e.get("error")], "the failure was not answered"
    assert len(gc.offsets.table[GROUP]) == left, "a part not written was dropped from the table"
    retry = request(P.DELETE_GROUP, group=GROUP)
    assert gc._on_delete_group(retry) is DEFER
    while _answer_produces(client):
        pass
    assert context.server.replies[-1][0] is retry and context.server.replies[-1][1] == {"group": GROUP, "deleted": True}
    assert GROUP not in gc.offsets.table


def test_a_member_that_joins_while_the_group_is_deleted_stops_the_deletion(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Kafka deletes only an empty group: the next part of the deletion is not written once a
    member is in the group (answered non_empty_group); what was deleted stays deleted."""
    gc, context, client = _big_group(tmp_path, monkeypatch)
    req = request(P.DELETE_GROUP, group=GROUP)
    assert gc._on_delete_group(req) is DEFER
    sent = len(client.sent)
    gc._on_join(request(P.JOIN_GROUP, group=GROUP, member_id="", client_id="c", topics=["t0"],
                        session_timeout_ms=10_000))
    _answer_produces(client)
    assert not [c for c, _h, p, _cb in client.sent[sent:] if c == P.PRODUCE and not is_readings(p[0])], \
        "a part was written for a group with a member"
    errors = [e for r, e, _p in context.server.replies if r is req]
    assert errors and errors[0].get("error") == P.NON_EMPTY_GROUP


def test_the_expiry_of_a_group_whose_tombstones_exceed_the_pending_bound_goes_in_parts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The expiry wrote all of a group's tombstones as one commit too: refused buffer_full at
    every check, the group never expired, and the check stopped there, so no group after it
    expired either."""
    gc, context, client = _big_group(tmp_path, monkeypatch)
    gc.offsets.table["small"] = {("t0", 0): Committed(5)}
    gc.offsets_retention_ms = 60_000
    gc._expire_offsets()  # the retention counts from here (no member was seen)
    for _ in range(100):
        context.clock.advance(gc.offsets_retention_ms)
        gc._expire_offsets()
        _answer_produces(client)
        if not gc.offsets.table:
            break
    assert gc.offsets.table == {}, f"left: {[(g, len(t)) for g, t in gc.offsets.table.items()]}"


def test_a_commit_between_the_parts_of_a_deletion_is_not_half_deleted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An administrator's commit (generation -1, allowed on an empty group) of one partition in
    the deletion's first part and one in its last, taken while the first part is written: it
    landed between the parts, so the deletion kept the first and deleted the last -- half of one
    acknowledged commit gone, the other half there after the group was answered deleted (no
    order of the two requests gives that). Kafka's group is dead while it is deleted."""
    gc, context, client = _big_group(tmp_path, monkeypatch)
    for name in ("a", "z"):  # a partition sorted before every other of the group, one after
        context.state.topics[name] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])])
    gc.offsets.table[GROUP].update({("a", 0): Committed(5), ("z", 0): Committed(5)})
    delete = request(P.DELETE_GROUP, group=GROUP)
    assert gc._on_delete_group(delete) is DEFER  # its first part is being written
    commit = request(P.OFFSET_COMMIT, group=GROUP, generation=-1, offsets=[["a", 0, 99], ["z", 0, 99]])
    try:
        assert gc._on_offset_commit(commit) is DEFER
    except RemoteError as e:  # refused at once: fine, nothing of it is applied
        context.server.reply_error(commit, e.code, e.message)
    for _ in range(100):
        for i in [i for i in client.unanswered if client.sent[i][0] == P.LIST_OFFSETS]:
            client.unanswered.remove(i)
            client.sent[i][3]({"parts": [[t, p, 0, 1 << 40] for t, p, _ in client.sent[i][1]["parts"]]}, [], None)
        if not _answer_produces(client):
            break
    answers = {id(r): e for r, e, _p in context.server.replies}
    assert id(delete) in answers and id(commit) in answers
    left = gc.offsets.table.get(GROUP, {})
    assert (("a", 0) in left) == (("z", 0) in left), f"half of a commit deleted: {answers[id(commit)]}"
    if answers[id(commit)].get("error"):
        assert answers[id(commit)]["error"] in P.RETRIABLE
