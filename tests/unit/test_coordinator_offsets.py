"""Committed offsets in ``__consumer_offsets``: the offsets topic, commits in flight, appends
that time out or are refused, the log-end cache. The real GroupCoordinator, OffsetStore and
OffsetsTopicClient on a FakeGroupContext with a RecordingClient (tests/unit/fakes.py)."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from fabric import protocol as P
from fabric.config import LimitsConfig
from fabric.errors import RemoteError, RequestQueueFullError, RequestTimeout
from nodes.coordinator import snapshots as S
from nodes.coordinator.offsets import COMMIT_TIMEOUT_MS, OFFSETS_TOPIC, RETRY_MS
from nodes.coordinator.offsets_client import AppendOutcome
from nodes.coordinator.store import PartitionState, TopicState
from tests.unit.fakes import (FakeGroupContext, ack_fences, ack_last_produce, admin_commit, commit_produces,
                              group_coordinator, loaded_group_coordinator, offsets_records, request,
                              two_partition_state)


# -- the offsets topic: full replication factor, no size retention (time retention: see
# test_coordinator_offsets_snapshots, which snapshots make safe) -------------------------------------
def test_offsets_topic_waits_for_its_replication_factor_and_keeps_records_forever() -> None:
    context = FakeGroupContext(two_partition_state(), alive=(1,))
    gc, _ = group_coordinator(context)
    with pytest.raises(RemoteError) as e:
        gc.offsets.ensure_topic()
    assert e.value.code == P.NOT_ENOUGH_REPLICAS and e.value.retriable
    assert OFFSETS_TOPIC not in context.state.topics, "an offsets topic with one replica would lose offsets with it"
    context.alive = {1, 2, 3}
    gc.offsets.ensure_topic()
    topic = context.state.topics[OFFSETS_TOPIC]
    assert all(len(p.replicas) == 3 for p in topic.partitions)
    assert topic.configs["min.insync.replicas"] == 2
    assert topic.configs["retention.bytes"] == -1


# -- OFFSET_FETCH while a commit is being written ---------------------------------------------------
def test_offset_fetch_of_a_partition_with_a_commit_in_flight_is_unstable_and_retriable(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    admin_commit(gc, client, "g", 5)
    admin_commit(gc, client, "g", 9, ack=False)  # in flight
    for wanted in ([["t", 0]], None):
        with pytest.raises(RemoteError) as e:
            gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=wanted))
        assert e.value.code == P.UNSTABLE_OFFSET_COMMIT and e.value.retriable
    assert gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[["t", 1]]))["offsets"] == [["t", 1, -1, "", -1]]
    ack_last_produce(client, 1)
    assert gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[["t", 0]]))["offsets"] == [["t", 0, 9, "", -1]]


# -- the committed leader epoch (KIP-320) ------------------------------------------------------------
def test_a_commits_leader_epoch_is_answered_and_stored_in_the_log_only_when_known(tmp_path: Path) -> None:
    """The epoch of the record before the offset, as the member read it: OFFSET_FETCH answers it
    (-1: not known); a record written without one is one older code reads too."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    admin_commit(gc, client, "g", 0, offsets=[["t", 0, 9, "m", 4], ["t", 1, 3]])
    fetched = gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[["t", 0], ["t", 1]]))
    assert fetched["offsets"] == [["t", 0, 9, "m", 4], ["t", 1, 3, "", -1]]
    records = offsets_records(client.of(P.PRODUCE)[-1][2][0], 0)
    # the commit records as older code writes and reads them, then the epoch record it skips
    assert [len(msgpack.unpackb(r.value)) for r in records[:2]] == [4, 4]
    assert [S.is_epochs_key(r.key) for r in records] == [False, False, True]
    assert msgpack.unpackb(records[2].value) == [["g", "t", 0, 9, "m", msgpack.unpackb(records[0].value)[2],
                                                  msgpack.unpackb(records[0].value)[3], 4]]
    admin_commit(gc, client, "g", 0, offsets=[["t", 0, 12, "", -1]])  # the next commit's (none) replaces it
    assert gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=[["t", 0]]))["offsets"] == \
        [["t", 0, 12, "", -1]]


@pytest.mark.parametrize("epoch", [-2, "4", True, 1.0, None, [4], 2 ** 31, 2 ** 63])
def test_a_leader_epoch_that_is_not_one_refuses_the_commit_as_malformed(tmp_path: Path, epoch: object) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    with pytest.raises(RemoteError) as e:
        gc._on_offset_commit(request(P.OFFSET_COMMIT, group="g", generation=-1, offsets=[["t", 0, 9, "", epoch]]))
    assert e.value.code == P.MALFORMED_REQUEST and "leader_epoch" in e.value.message
    assert not client.of(P.PRODUCE), "a refused commit was appended"


def test_log_end_cache_forgets_a_deleted_topic(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    admin_commit(gc, client, "a", 1)
    assert ("t", 0) in gc.offsets._hw_seen
    del context.state.topics["t"]
    gc.topic_deleted("t")
    assert not any(t == "t" for t, _ in gc.offsets._hw_seen)


# -- an append that timed out is retried as the same append ---------------------------------------------
# An offset commit whose append timed out is retried as the same append, judged as it was the
# first time: a rebalance in between must not turn it into illegal_generation (the first append
# may well have landed, and would then be in the log but missing from the table).
def _commit_with_a_recheck(tmp_path: Path):  # noqa: ANN202 - (group coordinator, context, client, refusal, results)
    """A commit of t-0 offset 7 whose recheck answers ``refusal[0]``; its first append is sent."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    refusal: list[RemoteError | None] = [None]
    results: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 7, "", -1)], allow_backward=False, check_log_end=False,
                      done=results.append, recheck=lambda: refusal[0])
    return gc, context, client, refusal, results


def test_a_retried_append_is_not_rechecked_after_a_rebalance(tmp_path: Path) -> None:
    gc, context, client, refusal, results = _commit_with_a_recheck(tmp_path)
    (first,) = client.of(P.PRODUCE)
    first[3](None, [], RequestTimeout("no reply"))  # the append may or may not have landed
    assert results == []
    # meanwhile a rebalance ends the member's generation
    refusal[0] = RemoteError(P.ILLEGAL_GENERATION, "generation 1 is over")
    context.reactor.advance(RETRY_MS)
    produces = client.of(P.PRODUCE)
    assert len(produces) == 2, "the timed-out append must be sent again, not refused"
    # the same records (the timestamp in the value is the retry's own)
    assert [(r.key, msgpack.unpackb(r.value)[:2]) for r in offsets_records(produces[1][2][0])] == \
        [(r.key, msgpack.unpackb(r.value)[:2]) for r in offsets_records(first[2][0])]
    produces[1][3]({"results": [[0, 0, "", 0]]}, [], None)
    assert results == [None]
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 7


def test_a_commit_not_yet_sent_is_still_rechecked(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    results: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 7, "", -1)], allow_backward=False, check_log_end=False, done=results.append,
                      recheck=lambda: RemoteError(P.ILLEGAL_GENERATION, "generation 1 is over"))
    assert client.of(P.PRODUCE) == []
    assert [e.code for e in results if e is not None] == [P.ILLEGAL_GENERATION]
    assert "g" not in gc.offsets.table


def test_an_append_the_broker_refused_is_rechecked_before_the_retry(tmp_path: Path) -> None:
    gc, context, client, refusal, results = _commit_with_a_recheck(tmp_path)
    (first,) = client.of(P.PRODUCE)
    first[3]({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr [1]"]]}, [], None)  # not written
    refusal[0] = RemoteError(P.ILLEGAL_GENERATION, "generation 1 is over")
    context.reactor.advance(RETRY_MS)
    assert len(client.of(P.PRODUCE)) == 1
    assert [e.code for e in results if e is not None] == [P.ILLEGAL_GENERATION]
    assert "g" not in gc.offsets.table


def test_a_refused_retry_does_not_undo_an_earlier_append_that_may_have_landed(tmp_path: Path) -> None:
    # the first append timed out (it may be in the log); its retry is refused (that one is not);
    # the commit is still one that may be in the log: a rebalance meanwhile must not refuse it
    gc, context, client, refusal, results = _commit_with_a_recheck(tmp_path)
    client.of(P.PRODUCE)[0][3](None, [], RequestTimeout("no reply"))
    context.reactor.advance(RETRY_MS)
    client.of(P.PRODUCE)[1][3]({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr [1]"]]}, [], None)
    refusal[0] = RemoteError(P.ILLEGAL_GENERATION, "generation 1 is over")
    context.reactor.advance(RETRY_MS)
    produces = client.of(P.PRODUCE)
    assert len(produces) == 3, "a commit that may be in the log was refused on its retry"
    produces[2][3]({"results": [[0, 0, "", 0]]}, [], None)
    assert results == [None] and gc.offsets.offsets_for("g")[("t", 0)].offset == 7


def test_an_append_stays_within_the_brokers_batch_limit(tmp_path: Path) -> None:
    """An append folded up to COMMITS_PER_APPEND_MAX commits whatever their bytes: 20 commits of
    250 partitions with 4 KiB metadata (each within the 1 MiB request header) made one ~21 MB
    append, over the broker's 16 MiB batch limit -- refused, and every commit in it with it,
    other groups' too. Appends are bounded by their bytes now (a commit always fits alone)."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    context.state.topics["t"] = TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3]) for _ in range(250)])
    entries = [("t", p, 1, "m" * 4096, -1) for p in range(250)]
    results: list[RemoteError | None] = []
    for _ in range(21):
        gc.offsets.commit("g", entries, allow_backward=False, check_log_end=False, done=results.append)
    base = 0
    while len(results) < 21:
        assert base < 21, "more appends than commits"
        (_, _, payloads, _) = client.of(P.PRODUCE)[-1]
        assert len(payloads[0]) <= LimitsConfig().batch_bytes_max // 2, f"an append of {len(payloads[0])} bytes"
        ack_last_produce(client, base)
        base += 1
    assert results == [None] * 21


def test_a_waiting_commit_is_counted_in_encoded_bytes_with_its_group_per_entry(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What P.PENDING_COMMIT_BYTES_MAX bounds is what the commits will be in the log: each
    entry's record repeats the group id, and characters are up to four bytes (the count took
    the metadata's characters and the group once: 64 MiB nominal could be ~200 MiB)."""
    monkeypatch.setattr(P, "PENDING_COMMIT_BYTES_MAX", 30_000)
    gc, context, client = loaded_group_coordinator(tmp_path)
    group = "g" * 249
    gc.offsets.commit(group, [("t", 0, 1, "\u20ac" * 2000, -1), ("t", 1, 1, "", -1)], allow_backward=False,
                      check_log_end=False, done=lambda _e: None)
    with pytest.raises(RemoteError) as e:  # ~6 KB + 2 x 249 + the fixed cost, twice, is over 30,000 three times
        for _ in range(4):
            gc.offsets.commit(group, [("t", 0, 1, "\u20ac" * 2000, -1), ("t", 1, 1, "", -1)], allow_backward=False,
                              check_log_end=False, done=lambda _e: None)
    assert e.value.code == P.BUFFER_FULL


def test_a_snapshot_queued_behind_a_commit_does_not_stop_the_coordinator(tmp_path: Path) -> None:
    """The byte bound of an append read the size of the queue's next item before asking whether
    it was a snapshot job, which has none: an append in flight, a commit and then a snapshot
    queued behind it, and the acknowledgement's pump raised AttributeError on the reactor."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    results: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 1, "", -1)], allow_backward=False, check_log_end=False, done=results.append)
    gc.offsets.commit("g", [("t", 0, 2, "", -1)], allow_backward=False, check_log_end=False, done=results.append)
    gc.offsets.snapshot(gc.offsets.partition_for_group("g"))
    ack_last_produce(client, 0)
    ack_last_produce(client, 1)
    assert results == [None, None]


# -- a commit that may be in the log but ended unacknowledged: its offsets partition is read again ------
def _timed_out_after_a_write(tmp_path: Path, landed: bool):  # noqa: ANN202 - (gc, context, client, results, batch)
    """A commit of t-0 offset 7 whose first append reached the log (``landed``) or was discarded
    unread, whose answer never came, and whose retries failed until its deadline."""
    gc, context, client, _refusal, results = _commit_with_a_recheck(tmp_path)
    (_, _, payloads, cb) = client.of(P.PRODUCE)[0]
    client.unanswered.remove(client.sent.index(client.of(P.PRODUCE)[0]))  # answered once
    cb(None, [], RequestTimeout("no reply"))
    for _ in range(COMMIT_TIMEOUT_MS // RETRY_MS + 1):
        context.reactor.advance(RETRY_MS)
        for i in list(client.unanswered):
            if client.sent[i][0] == P.PRODUCE:
                client.unanswered.remove(i)
                client.sent[i][3]({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr [1]"]]}, [], None)
    assert [e.code for e in results if e is not None] == [P.REQUEST_TIMED_OUT]
    return gc, context, client, results, payloads[0] if landed else b""


def _answer_the_reread(context, client, batch: bytes) -> None:  # noqa: ANN001
    """The offsets partition read again holds ``batch`` only (its snapshot is not there: the
    reader goes back to the log start, as at a start)."""
    end = len(offsets_records(batch)) if batch else 0
    for _ in range(10):
        context.reactor.advance(RETRY_MS)
        ack_fences(client, end)  # the new epoch's fence goes first (nodes/coordinator/offsets_producer.py)
        fetches = [i for i in client.unanswered if client.sent[i][0] == P.FETCH]
        for i in fetches:
            client.unanswered.remove(i)
            header, cb = client.sent[i][1], client.sent[i][3]
            (_, q, offset, _max) = header["parts"][0]
            cb({"parts": [[OFFSETS_TOPIC, q, 0, end, end, 0, None]]}, [batch if offset < end else b""], None)


def test_a_commit_that_landed_unacknowledged_is_read_back_from_the_log(tmp_path: Path) -> None:
    """The log held the commit while the table did not, until a restart read it: the group
    then jumped to an offset the running coordinator had never shown (a group deleted that way
    came back). Now its offsets partition is read again at once; meanwhile the group's offsets
    are not answered, nor is it deleted (both retriable), and its new commits wait."""
    gc, context, client, results, batch = _timed_out_after_a_write(tmp_path, landed=True)
    for req in (request(P.OFFSET_FETCH, group="g", partitions=None), request(P.DELETE_GROUP, group="g")):
        handler = gc._on_offset_fetch if req.command == P.OFFSET_FETCH else gc._on_delete_group
        with pytest.raises(RemoteError) as e:
            handler(req)
        assert e.value.code == P.UNSTABLE_OFFSET_COMMIT and e.value.retriable
    later: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 1, 3, "", -1)], allow_backward=False, check_log_end=False, done=later.append)
    produces = len(commit_produces(client))
    _answer_the_reread(context, client, batch)
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 7, "the table follows the log"
    assert len(commit_produces(client)) == produces + 1, "the commit that waited goes now"
    ack_last_produce(client, 1)
    assert later == [None] and gc.offsets.offsets_for("g")[("t", 1)].offset == 3
    assert gc._on_offset_fetch(request(P.OFFSET_FETCH, group="g", partitions=None))["offsets"]


def test_an_append_discarded_unread_does_not_wedge_the_offsets_partition(tmp_path: Path) -> None:
    """Its outcome is unknown (no answer for the partition) until the partition is read again:
    then known, nothing of it there, and the partition takes commits again."""
    gc, context, client, results, batch = _timed_out_after_a_write(tmp_path, landed=False)
    _answer_the_reread(context, client, batch)
    assert "g" not in gc.offsets.table and gc.offsets.pending_count == 0 and not gc.offsets.has_in_flight("g")
    again: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 7, "", -1)], allow_backward=False, check_log_end=False, done=again.append)
    ack_last_produce(client, 0)
    assert again == [None] and gc.offsets.offsets_for("g")[("t", 0)].offset == 7


def test_a_commit_written_then_refused_for_good_is_read_back(tmp_path: Path) -> None:
    """Written by the leader, then refused (storage_error, with the offset it was written at):
    the refusal is not the outcome -- the log holds it."""
    gc, context, client, _refusal, results = _commit_with_a_recheck(tmp_path)
    (_, _, payloads, cb) = client.of(P.PRODUCE)[0]
    cb({"results": [[0, P.STORAGE_ERROR, "disk"]]}, [], None)
    assert [e.code for e in results if e is not None] == [P.STORAGE_ERROR]
    _answer_the_reread(context, client, payloads[0])
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 7


# -- one reading of an append's reply, for commits and snapshots alike --------------------------------
def test_an_append_outcome_says_whether_it_may_be_in_the_log() -> None:
    ok = AppendOutcome.from_reply({"results": [[12, 0, "", 0]]}, None)
    assert ok.ok and ok.base_offset == 12 and not ok.maybe_written
    refused = AppendOutcome.from_reply({"results": [[-1, P.NOT_ENOUGH_REPLICAS, "isr [1]"]]}, None)
    assert refused.retriable and not refused.maybe_written and refused.message == "isr [1]"
    fatal = AppendOutcome.from_reply({"results": [[-1, P.RECORD_TOO_LARGE, "too big"]]}, None)
    assert not fatal.retriable and not fatal.maybe_written
    lost = AppendOutcome.from_reply(None, RequestTimeout("no reply"))
    assert lost.retriable and lost.maybe_written and lost.code == P.REQUEST_TIMED_OUT
    never_left = AppendOutcome.from_reply(None, RequestQueueFullError("too many requests in flight"))
    assert never_left.retriable and not never_left.maybe_written
    parked_full = AppendOutcome.from_reply(None, RemoteError(P.BUFFER_FULL, "too many requests waiting"))
    assert parked_full.retriable and parked_full.maybe_written  # the broker answers it after the write
    late = AppendOutcome.from_reply({"results": [[12, P.REQUEST_TIMED_OUT, "not replicated in time"]]}, None)
    assert late.retriable and late.maybe_written and late.base_offset == 12
    for unreadable in ({"results": [[5]]}, {"results": ["x"]}, {"results": [["a", "b"]]}, {"results": 3}):
        out = AppendOutcome.from_reply(unreadable, None)  # a peer's bad reply: no answer, not a crash
        assert out.retriable and out.maybe_written and not out.ok


# -- a programmer error is not swallowed -----------------------------------------------------------------
def test_a_bug_in_a_commit_callback_leaves_the_store_instead_of_being_logged_and_forgotten(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)

    def buggy_done(err: RemoteError | None) -> None:
        raise TypeError("a bug in the commit's callback")
    gc.offsets.commit("g", [("t", 0, 7, "", -1)], allow_backward=False, check_log_end=False, done=buggy_done)
    with pytest.raises(TypeError, match="commit's callback"):
        ack_last_produce(client, 0)


# -- a zombie member's retried commit cannot land after the new owner's ---------------------------------
# A zombie member's commit whose append timed out is retried without a new generation check (the
# same append, as it was); it cannot land after the partition's new owner started or committed:
# while it is in flight the new owner's OFFSET_FETCH is unstable (retriable), and the new owner's
# commit queues behind the retry, so the log and the table end with the new owner's offset.
def test_a_retried_zombie_commit_lands_before_the_new_owners_commit(tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    zombie: list[RemoteError | None] = []
    owner: list[RemoteError | None] = []
    gc.offsets.commit("g", [("t", 0, 7, "", -1)], allow_backward=False, check_log_end=False,
                      done=zombie.append, recheck=lambda: None)
    (first,) = client.of(P.PRODUCE)
    first[3](None, [], RequestTimeout("no reply"))  # may have landed
    # a rebalance hands t-0 on; the new owner may not start from the committed offsets yet
    assert gc.offsets.unstable("g", [("t", 0)]) == [("t", 0)]
    gc.offsets.commit("g", [("t", 0, 9, "", -1)], allow_backward=False, check_log_end=False,
                      done=owner.append, recheck=lambda: None)
    context.reactor.advance(RETRY_MS)
    retry = client.of(P.PRODUCE)[1]
    offsets = [msgpack.unpackb(r.value)[0] for r in offsets_records(retry[2][0])]
    assert offsets == [7], "the zombie's retry is the append as it was (nodes/coordinator/offsets_producer.py)"
    retry[3]({"results": [[0, 0, "", 0]]}, [], None)
    after = client.of(P.PRODUCE)[2]
    assert [msgpack.unpackb(r.value)[0] for r in offsets_records(after[2][0])] == [9], "the new owner's goes after it"
    after[3]({"results": [[1, 0, "", 0]]}, [], None)
    assert zombie == [None] and owner == [None]
    assert gc.offsets.offsets_for("g")[("t", 0)].offset == 9
    assert gc.offsets.unstable("g", [("t", 0)]) == []


def test_the_log_end_cache_does_not_vouch_for_a_partition_under_a_new_leader(tmp_path: Path) -> None:
    """A commit of t-0 at 900 was taken on a log end of 1000 its leader answered; then t-0 got a
    new leader (a new epoch) whose log ends at 40 (an unclean election truncated it). A commit
    of 900 (a member whose position was read before the truncation) was taken on the cached end
    of the old leader's log, with no lookup: the next member then started past records the new
    leader writes at 40..899 -- once the log grows past 900, they are skipped."""
    gc, context, client = loaded_group_coordinator(tmp_path)
    admin_commit(gc, client, "g", 900)
    assert ("t", 0) in gc.offsets._hw_seen
    part = context.state.topics["t"].partitions[0]
    part.leader, part.leader_epoch = 2, part.leader_epoch + 1
    before = len(client.sent)
    late = request(P.OFFSET_COMMIT, group="h", generation=-1, offsets=[["t", 0, 900]])
    gc._on_offset_commit(late)
    lookups = [cb for c, _h, _p, cb in client.sent[before:] if c == P.LIST_OFFSETS]
    assert lookups, "the old leader's log end vouched for an offset under the new leader"
    lookups[0]({"parts": [["t", 0, 0, 40]]}, [], None)
    assert context.server.answer(late)["error"] == P.OFFSET_OUT_OF_RANGE
    fine = request(P.OFFSET_COMMIT, group="h", generation=-1, offsets=[["t", 0, 40]])
    before = len(client.sent)
    gc._on_offset_commit(fine)
    assert not [c for c, *_ in client.sent[before:] if c == P.LIST_OFFSETS], "the new leader's end is cached"
