"""An offsets partition read again after a commit that may have landed ended unacknowledged
(nodes/coordinator/offsets_resync.py), at its edges: commits queued behind a snapshot job are
still answered at their deadlines (they waited for the read to end, which may be never);
GROUPS_MAX still counts new groups of that partition (all were taken as held); the read ends
when the leader's log shrank below the end it first saw (it waited for that end for good); a
stale snapshot pointer the read dropped gets a new snapshot (an idle partition had none again).
The real GroupCoordinator and OffsetStore on a FakeGroupContext with a RecordingClient."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import batch as B
from fabric import protocol as P
from fabric.errors import RemoteError
from fabric.records import build_batch
from nodes.coordinator import snapshots as S
from nodes.coordinator.group_readings import Reading
from nodes.coordinator.offsets import COMMIT_TIMEOUT_MS, OFFSETS_TOPIC
from nodes.coordinator.offsets_loader import FENCE_KEY
from tests.unit.fakes import loaded_group_coordinator, offsets_records, request


def _resyncing(tmp_path: Path, group: str = "g"):  # noqa: ANN202 - (gc, context, client, q, written batch)
    """A commit of ``group`` written by the leader at offset 1 (after the partition's snapshot at
    0), then refused for good (storage_error): its offsets partition is being read again (the
    new epoch's fence at offset 2 acknowledged), the read not answered yet."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    q = gc.offsets.partition_for_group(group)
    done: list = []
    gc.offsets.commit(group, [("t", 0, 7, "", -1)], allow_backward=False, check_log_end=False, done=done.append)
    (_, _, payloads, cb) = client.of(P.PRODUCE)[-1]
    client.unanswered.remove(len(client.sent) - 1)
    cb({"results": [[1, P.STORAGE_ERROR, "disk"]]}, [], None)
    assert [e.code for e in done] == [P.STORAGE_ERROR]
    assert gc.offsets.resyncing(group) and not client.of(P.FETCH)
    (_, _, fence, fence_cb) = client.of(P.PRODUCE)[-1]  # a new epoch's fence first (offsets_producer)
    assert [r.key for r in offsets_records(fence[0])] == [FENCE_KEY]
    client.unanswered.remove(len(client.sent) - 1)
    fence_cb({"results": [[2, 0, "", 0]]}, [], None)
    assert gc.offsets.resyncing(group) and client.of(P.FETCH)
    return gc, context, client, q, payloads[0]


def _advance_with_ticks(gc, context, ms: int, step: int = 1000) -> None:  # noqa: ANN001
    for _ in range(ms // step):
        context.reactor.advance(step)
        gc.tick()


# 1 -- commits queued behind a snapshot job are never answered while the partition is read again
def test_a_commit_behind_a_snapshot_is_answered_at_its_deadline_while_the_partition_is_read_again(
        tmp_path: Path) -> None:
    gc, context, client, q, _ = _resyncing(tmp_path)  # the read again waits (say: no leader for long)
    gc.offsets.snapshot(q)  # due now (tick's schedule), or queued before the ambiguous commit ended
    later: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 1, 3, "", -1)], allow_backward=False, check_log_end=False, done=later.append)
    # well past the commit's deadline, and past the snapshot's own (which bounds the wait otherwise)
    _advance_with_ticks(gc, context, COMMIT_TIMEOUT_MS + S.SNAPSHOT_TIMEOUT_MS + 60_000)
    assert [e.code for e in later if e is not None] == [P.REQUEST_TIMED_OUT], \
        f"the commit is still waiting {COMMIT_TIMEOUT_MS + S.SNAPSHOT_TIMEOUT_MS + 60_000} ms on (pending " \
        f"{gc.offsets.pending_count}): the snapshot job at the front stops the deadline pass"


# 2 -- during a read again, every new group id of that partition passes the GROUPS_MAX bound
def test_groups_max_still_holds_for_new_groups_of_a_partition_being_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gc, context, client, q, _ = _resyncing(tmp_path)
    monkeypatch.setattr(P, "GROUPS_MAX", 1)
    gc._on_join(request(P.JOIN_GROUP, group="held", member_id="", client_id="c", topics=["t"],
                        session_timeout_ms=10_000))  # the one group there is room for
    same_q = next(f"new{i}" for i in range(1000) if gc.offsets.partition_for_group(f"new{i}") == q)
    other_q = next(f"new{i}" for i in range(1000) if gc.offsets.partition_for_group(f"new{i}") != q)
    with pytest.raises(RemoteError) as e:
        gc._check_room_for_group(other_q)
    assert e.value.code == P.BUFFER_FULL
    with pytest.raises(RemoteError) as e:  # as full, but its partition is being read again
        gc._check_room_for_group(same_q)
    assert e.value.code == P.BUFFER_FULL


# 3 -- the reader's target is never learned again when the same leader's log ends below it
def test_a_read_again_ends_when_the_leaders_log_shrank_below_the_end_it_first_saw(tmp_path: Path) -> None:
    """The leader held the ambiguous commit at offset 1 above its HW (1), then lost that tail
    (it restarted faster than its session, or lost and regained the leadership between two
    reads) and answers from the same endpoint with log end 1. Nothing is appended to the
    partition while it is read again, so its log never reaches 2: the read never ends, and the
    partition's groups' fetches and commits are refused for good."""
    gc, context, client, q, _ = _resyncing(tmp_path)
    sid = context.state.offsets_snapshots[q][1]
    snap = build_batch([(0, k, v, None) for k, v in S.snapshot_records(sid, [])])  # the snapshot at 0

    def answer(hw: int, leo: int) -> None:
        for i in [i for i in client.unanswered if client.sent[i][0] == P.FETCH]:
            client.unanswered.remove(i)
            (_, _, offset, _) = client.sent[i][1]["parts"][0]
            client.sent[i][3]({"parts": [[OFFSETS_TOPIC, q, 0, hw, leo, 0, None]]},
                              [snap if offset == 0 else b""], None)
    answer(hw=1, leo=2)  # the snapshot, and the commit above the HW
    for _ in range(50):
        context.reactor.advance(200)
        answer(hw=1, leo=1)  # the tail is gone; the log stays as it is
    assert not gc.offsets.resyncing("g"), "still reading towards log end 2 of a log that ends at 1"


# 4 -- a stale snapshot pointer forgotten by a read again is never replaced
def test_a_snapshot_pointer_dropped_by_a_read_again_gets_a_new_snapshot(tmp_path: Path) -> None:
    """At a start, a partition read without its snapshot gets a new one at once (_loaded). A
    read again that finds the pointer stale drops it from the state too, but nothing schedules
    a snapshot: with no acknowledged commit after it, the partition has none for good, and once
    the retention passes a restart reads from a log start that lost its groups' offsets."""
    gc, context, client, q, payload = _resyncing(tmp_path)
    batch = bytearray(payload)
    B.set_base_offset(batch, 1)  # where the leader wrote it
    batch = bytes(batch)
    for i in [i for i in client.unanswered if client.sent[i][0] == P.FETCH]:  # the snapshot is gone:
        client.unanswered.remove(i)                                            # log start 1
        client.sent[i][3]({"parts": [[OFFSETS_TOPIC, q, P.OFFSET_OUT_OF_RANGE, 2, 2, 1, None]]}, [], None)
    for _ in range(5):
        context.reactor.advance(200)
        for i in [i for i in client.unanswered if client.sent[i][0] == P.FETCH]:
            client.unanswered.remove(i)
            client.sent[i][3]({"parts": [[OFFSETS_TOPIC, q, 0, 2, 2, 1, None]]}, [batch], None)
    assert not gc.offsets.resyncing("g") and gc.offsets.offsets_for("g")[("t", 0)].offset == 7
    assert q not in context.state.offsets_snapshots
    sent = len(client.sent)
    _advance_with_ticks(gc, context, 2 * S.SNAPSHOT_REFRESH_MS, step=60_000)
    snaps = [h for c, h, _p, _cb in client.sent[sent:] if c == P.PRODUCE and h["parts"][0][1] == q]
    assert snaps, "no snapshot of the partition in two days: it has no pointer, and none is scheduled"


# 5 -- a change of a group's stored readings that may have landed is read back with the partition
def test_a_readings_change_that_ended_unacknowledged_is_read_back_with_its_partition(tmp_path: Path) -> None:
    """A group's reading of a topic (nodes/coordinator/group_readings.py) goes through the commit
    queue as commits do: when its append ends unacknowledged but may be in the log, the partition
    read again takes it into the stored readings, as a restart would."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    context.state.version = 5  # the reading's version is one there has been
    q = gc.offsets.partition_for_group("g")
    done: list = []
    gc.offsets.commit("g", [], allow_backward=True, check_log_end=False, done=done.append,
                      readings={"t": Reading(5, 77)})
    assert gc.offsets.reading_in_flight("g")
    (_, _, payloads, cb) = client.of(P.PRODUCE)[-1]
    client.unanswered.remove(len(client.sent) - 1)
    cb({"results": [[1, P.STORAGE_ERROR, "disk"]]}, [], None)
    assert [e.code for e in done] == [P.STORAGE_ERROR] and gc.offsets.readings == {}
    assert not gc.offsets.reading_in_flight("g") and gc.offsets.resyncing("g")
    (_, _, _fence, fence_cb) = client.of(P.PRODUCE)[-1]
    client.unanswered.remove(len(client.sent) - 1)
    fence_cb({"results": [[2, 0, "", 0]]}, [], None)
    sid = context.state.offsets_snapshots[q][1]
    snap = build_batch([(0, k, v, None) for k, v in S.snapshot_records(sid, [])])
    written = bytearray(payloads[0])
    B.set_base_offset(written, 1)  # where the leader wrote it
    for i in [i for i in client.unanswered if client.sent[i][0] == P.FETCH]:
        client.unanswered.remove(i)
        client.sent[i][3]({"parts": [[OFFSETS_TOPIC, q, 0, 2, 2, 0, None]]}, [snap + bytes(written)], None)
    assert not gc.offsets.resyncing("g")
    assert gc.offsets.readings == {"g": {"t": Reading(5, 77)}}
