"""A leader whose high watermark has not reached the start of its epoch does not know the end
consumers may see yet (KIP-207). A replica elected leader starts from its follower view of
the HW, which may lag the HW the deposed leader had acknowledged and consumers had read to;
it learns the real one only when its followers fetch. Before, LIST_OFFSETS "latest" answered
that lagging HW: the coordinator then refused, as offset_out_of_range (not retriable), a
commit of an offset a consumer had really read, and a consumer resetting to latest moved
back. Now "latest" -- and a timestamp whose offset is not below the HW -- answers the
retriable offset_not_available until the HW reaches the epoch start; "earliest" and a
timestamp found below the HW are known and answered. The real BrokerCore on the segment
engine, and the real group coordinator on a RecordingClient."""

from __future__ import annotations

from pathlib import Path

from fabric import protocol as P
from fabric.errors import RemoteError
from fabric.records import build_batch
from fabric.rpc import DEFER
from nodes.broker.core import BrokerCore
from tests.unit.fakes import ack_last_produce, broker_core, loaded_group_coordinator, request

LEADER, FOLLOWER = 1, 2
KEY = ("t", 0)
T0 = 1_700_000_000_000


def _reelected_leader(directory: Path) -> BrokerCore:
    """A leader of epoch 2 holding offsets 0-9 (timestamps T0 + offset) whose HW is 5: under
    epoch 1 its follower had fetched only to 5 when the leadership moved on and came back."""
    core = broker_core(directory, LEADER, engine="segment")
    part = core.open_partition(*KEY, {})
    part.become_leader(1, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    part.append_as_leader([build_batch([(T0 + i, None, b"v%d" % i, None)]) for i in range(10)], 1 << 20)
    part.record_follower_fetch(FOLLOWER, 5, now_ms=10)
    assert part.high_watermark == 5
    part.become_leader(2, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=20)
    assert part.high_watermark == 5 and part.log_end_offset == 10
    return core


def test_latest_is_not_available_until_the_hw_reaches_the_epoch_start(tmp_path: Path) -> None:
    core = _reelected_leader(tmp_path)
    try:
        assert core.list_offset(KEY, -1) == (P.OFFSET_NOT_AVAILABLE, 5), \
            "a lagging HW must not be answered as the log end (it goes with the code as a lower bound)"
        assert P.OFFSET_NOT_AVAILABLE in P.RETRIABLE
        assert core.list_offset(KEY, -2) == (0, 0), "the log start is known"
        assert core.list_offset(KEY, T0 + 3) == (0, 3), "an offset below the HW is known"
        assert core.list_offset(KEY, T0 + 7)[0] == P.OFFSET_NOT_AVAILABLE, "past the HW it may be the end"
        core.partitions[KEY].record_follower_fetch(FOLLOWER, 10, now_ms=30)
        assert core.list_offset(KEY, -1) == (0, 10)
        assert core.list_offset(KEY, T0 + 7) == (0, 7)
        assert core.list_offset(KEY, T0 + 99) == (0, 10), "no record that late: the HW"
    finally:
        core.close()


def test_a_leader_alone_in_its_isr_knows_its_end_at_once(tmp_path: Path) -> None:
    core = broker_core(tmp_path, LEADER, engine="segment")
    try:
        part = core.open_partition(*KEY, {})
        part.become_leader(1, [LEADER, FOLLOWER], [LEADER], now_ms=0)
        part.append_as_leader([build_batch([(T0, None, b"v", None)])], 1 << 20)
        part.become_leader(2, [LEADER, FOLLOWER], [LEADER], now_ms=10)
        assert core.list_offset(KEY, -1) == (0, 1)
    finally:
        core.close()


def _commit_checked_by(tmp_path: Path, offset: int) -> tuple[list[RemoteError | None], object]:
    """A commit of t-0 ``offset`` whose log-end lookup the re-elected leader (HW 5, log end 10)
    answers, as the real broker does."""
    core = _reelected_leader(tmp_path / "broker")
    gc, _context, client = loaded_group_coordinator(tmp_path / "coordinator")
    try:
        results: list[RemoteError | None] = []
        gc.offsets.commit("g", [("t", 0, offset, "", -1)], allow_backward=True, check_log_end=True, done=results.append)
        (lookup,) = client.of(P.LIST_OFFSETS)
        code, end = core.list_offset(KEY, lookup[1]["parts"][0][2])
        lookup[3]({"parts": [["t", 0, code, end]]}, [], None)
        if client.of(P.PRODUCE):
            ack_last_produce(client, 0)
        return results, gc
    finally:
        core.close()


def test_a_commit_past_such_a_leaders_hw_is_refused_retriably(tmp_path: Path) -> None:
    results, gc = _commit_checked_by(tmp_path, 8)
    assert len(results) == 1 and results[0] is not None
    assert results[0].code == P.OFFSET_NOT_AVAILABLE and results[0].retriable
    assert "g" not in gc.offsets.table  # type: ignore[attr-defined]


def test_a_commit_its_hw_so_far_covers_goes_through(tmp_path: Path) -> None:
    """Offsets up to the HW the new leader has are committed whatever it learns next: a commit
    of them is not held up until the followers fetch (after a whole-cluster restart, every
    leader starts that way)."""
    results, gc = _commit_checked_by(tmp_path, 5)
    assert results == [None]
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 5  # type: ignore[attr-defined]


def test_a_commit_past_a_known_log_end_is_still_out_of_range(tmp_path: Path) -> None:
    gc, _context, client = loaded_group_coordinator(tmp_path)
    results: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 12, "", -1)], allow_backward=True, check_log_end=True, done=results.append)
    (lookup,) = client.of(P.LIST_OFFSETS)
    lookup[3]({"parts": [["t", 0, 0, 10]]}, [], None)
    assert len(results) == 1 and results[0] is not None and results[0].code == P.OFFSET_OUT_OF_RANGE


def test_a_leader_that_has_not_learned_the_topic_yet_is_a_retriable_refusal(tmp_path: Path) -> None:
    """A commit names a partition the coordinator knows (it checked), so a leader answering
    unknown_topic_or_partition has not heard of it yet: retriable as leader_not_available,
    while unknown_topic_or_partition from the coordinator itself is final for a commit."""
    gc, _context, client = loaded_group_coordinator(tmp_path)
    results: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 8, "", -1)], allow_backward=True, check_log_end=True, done=results.append)
    (lookup,) = client.of(P.LIST_OFFSETS)
    lookup[3]({"parts": [["t", 0, P.UNKNOWN_TOPIC_OR_PARTITION, -1]]}, [], None)
    assert len(results) == 1 and results[0] is not None
    assert results[0].code == P.LEADER_NOT_AVAILABLE and results[0].retriable


def test_the_commit_goes_through_once_the_leader_knows(tmp_path: Path) -> None:
    gc, _context, client = loaded_group_coordinator(tmp_path)
    req = request(P.OFFSET_COMMIT, group="g", generation=-1, offsets=[["t", 0, 8]])
    assert gc._on_offset_commit(req) is DEFER
    (lookup,) = client.of(P.LIST_OFFSETS)
    lookup[3]({"parts": [["t", 0, 0, 10]]}, [], None)
    ack_last_produce(client, 0)
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 8


def test_the_log_end_lookup_names_the_topics_ids(tmp_path: Path) -> None:
    """A leader that has not yet applied the deletion of a topic made again under its name
    would answer the deleted topic's end: with the ids it answers unknown_topic_or_partition
    (retried by the commit as leader_not_available)."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    gc.offsets.commit("g", [("t", 0, 8, "", -1)], allow_backward=True, check_log_end=True, done=lambda _e: None)
    (lookup,) = client.of(P.LIST_OFFSETS)
    assert lookup[1]["topic_ids"] == {"t": context.state.topics["t"].topic_id} != {"t": ""}


def test_a_late_log_end_answer_of_a_deleted_topic_does_not_vouch_for_its_successor(tmp_path: Path) -> None:
    """An answer that came after its topic was deleted and made again under its name was kept
    as the name's log end: commits of the new, empty topic then went through past its end
    without a lookup. It now refuses the commit it was asked for and is not kept."""
    from nodes.coordinator.store import PartitionState, TopicState
    gc, context, client = loaded_group_coordinator(tmp_path)
    old = request(P.OFFSET_COMMIT, group="g", generation=-1, offsets=[["t", 0, 900]])
    gc._on_offset_commit(old)
    lookup = client.of(P.LIST_OFFSETS)[-1][3]
    del context.state.topics["t"]
    gc.topic_deleted("t")
    context.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3]) for _ in range(2)])
    lookup({"parts": [["t", 0, 0, 1000]]}, [], None)  # a leader that still held the old t
    assert context.server.answer(old)["error"] == P.UNKNOWN_TOPIC_OR_PARTITION
    before = len(client.sent)
    gc._on_offset_commit(request(P.OFFSET_COMMIT, group="h", generation=-1, offsets=[["t", 0, 500]]))
    assert [c for c, *_ in client.sent[before:] if c == P.LIST_OFFSETS], \
        f"the new t's offset 500 taken on the old t's end: {gc.offsets._hw_seen}"
