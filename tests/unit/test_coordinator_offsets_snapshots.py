"""Snapshots of ``__consumer_offsets`` and loading the committed offsets on start: the real
OffsetStore and OffsetsLoader (sharing one OffsetsTopicClient) on a FakeGroupContext with a
RecordingClient (tests/unit/fakes.py)."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from engines import batch as B
from engines.api import StorageFull
from fabric import protocol as P
from fabric.records import build_batch
from nodes.coordinator import snapshots as S
from nodes.coordinator.offsets import OFFSETS_TOPIC, OffsetStore
from nodes.coordinator.offsets_commits import Committed
from nodes.coordinator.store import ClusterState, PartitionState, StateStore, TopicState
from tests.unit.fakes import (FakeGroupContext, ack_last_produce, admin_commit, group_coordinator,
                              loaded_group_coordinator, offsets_records, two_partition_state)


def _groups_of_partition(q: int, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        if OffsetStore.partition_for_group(f"g{i}") == q:
            out.append(f"g{i}")
        i += 1
    return out


def _snapshot_after_three_commits(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """A loaded coordinator after three commits of offsets partition 0 (offsets 10, 11, 12 of
    three groups) and the tick that sends its snapshot (unanswered):
    (gc, context, client, groups, the snapshot's PRODUCE)."""
    monkeypatch.setattr(S, "SNAPSHOT_COMMIT_RECORDS", 3)
    gc, context, client = loaded_group_coordinator(tmp_path)
    groups = _groups_of_partition(0, 3)
    for i, g in enumerate(groups):
        admin_commit(gc, client, g, 10 + i, base_offset=i)
    gc.tick()
    (snap,) = client.of(P.PRODUCE)[3:]
    return gc, context, client, groups, snap


def test_snapshot_after_n_commits_holds_every_offset_of_its_partition_and_is_remembered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gc, context, client, groups, snap = _snapshot_after_three_commits(tmp_path, monkeypatch)
    assert snap[1]["acks"] == -1 and snap[1]["parts"] == [[OFFSETS_TOPIC, 0, -1, 0]]
    (record,) = offsets_records(snap[2][0])
    ident, index, last = S.parse_key(record.key)
    assert index == 0 and last
    assert sorted((e[0], e[1], e[2], e[3]) for e in S.decode_entries(record.value)) == \
        sorted((g, "t", 0, 10 + i) for i, g in enumerate(groups))
    # a commit arriving while the snapshot is written is appended after it, never before
    late = admin_commit(gc, client, groups[0], 20, ack=False)
    assert len(client.of(P.PRODUCE)) == 4, "a commit overtook the snapshot being written"
    snap[3]({"results": [[3, 0, "", 0]]}, [], None)
    assert StateStore(tmp_path).load().offsets_snapshots[0][:2] == [3, ident]
    ack_last_produce(client, 4)
    assert context.server.answer(late) == {"group": groups[0], "committed": 1}


def test_large_snapshot_is_split_into_bounded_records_with_a_last_marker(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "SNAPSHOT_RECORD_BYTES_MAX", 200)
    gc, context, client = loaded_group_coordinator(tmp_path)
    for g in _groups_of_partition(1, 30):
        gc.offsets.table[g] = {("t", 0): Committed(5, "m" * 20, 1)}
    gc.offsets.snapshot(1)
    seen, base, pieces = [], 100, 0
    while True:
        cmd, header, payloads, cb = client.sent[-1]
        assert cmd == P.PRODUCE and header["parts"] == [[OFFSETS_TOPIC, 1, -1, 0]]
        (record,) = offsets_records(payloads[0])
        assert len(record.value) <= 200
        ident, index, last = S.parse_key(record.key)
        assert index == pieces
        pieces += 1
        seen += S.decode_entries(record.value)
        cb({"results": [[base + index, 0, "", 0]]}, [], None)
        if last:
            break
    assert index > 1 and sorted(e[0] for e in seen) == sorted(_groups_of_partition(1, 30))
    assert context.state.offsets_snapshots[1][:2] == [100, ident]


def test_loading_starts_at_the_remembered_snapshot_and_falls_back_to_the_log_start(tmp_path: Path) -> None:
    state = ClusterState(topics={"t": TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])])})
    context = FakeGroupContext(state, store=StateStore(tmp_path))
    gc, client = group_coordinator(context)
    gc.offsets.ensure_topic()
    context.state.offsets_snapshots = {0: [40, "aa", context.clock.wall_ms()], 1: [7, "bb", context.clock.wall_ms()]}
    gc.offsets.start_loading()
    fetches = {f[1]["parts"][0][1]: f for f in client.of(P.FETCH)}
    assert fetches[0][1]["parts"][0][2] == 40 and fetches[1][1]["parts"][0][2] == 7
    assert fetches[2][1]["parts"][0][2] == 0  # no snapshot yet: from the log start
    (g0,) = _groups_of_partition(0, 1)
    (key, value), = S.snapshot_records("aa", [(g0, "t", 0, 12, "", 1, "", -1)])
    snap = bytearray(build_batch([(1, key, value, None)]))
    B.set_base_offset(snap, 40)
    fetches[0][3]({"parts": [[OFFSETS_TOPIC, 0, 0, 41, 41, 0, None]]}, [bytes(snap)], None)
    # partition 1: the remembered offset holds no snapshot any more (say, a truncated log)
    other = bytearray(build_batch([(1, msgpack.packb(["x", "t", 0]), msgpack.packb([3, "", 1]), None)]))
    B.set_base_offset(other, 7)
    client.sent.clear()
    fetches[1][3]({"parts": [[OFFSETS_TOPIC, 1, 0, 8, 8, 0, None]]}, [bytes(other)], None)
    assert gc.offsets.offsets_for("x") == {}, "a record at a stale snapshot pointer was applied"
    context.reactor.advance(0)  # the loader reads that partition again at once
    (again,) = client.of(P.FETCH)
    assert again[1]["parts"][0][2] == 0, "no fallback to the log start"
    fetches[2][3]({"parts": [[OFFSETS_TOPIC, 2, 0, 0, 0, 0, None]]}, [b""], None)
    assert {q for q, st in gc.offsets.loader.states.items() if st.done} == {0, 2}
    assert gc.offsets.offsets_for(g0)[("t", 0)].offset == 12


def test_offsets_topic_has_a_time_retention_far_longer_than_the_snapshot_refresh(tmp_path: Path) -> None:
    context = FakeGroupContext(two_partition_state(), store=StateStore(tmp_path))
    gc, _ = group_coordinator(context)
    gc.offsets.ensure_topic()
    configs = context.state.topics[OFFSETS_TOPIC].configs
    assert configs["retention.ms"] == S.OFFSETS_RETENTION_MS > 0
    assert S.OFFSETS_RETENTION_MS >= 5 * S.SNAPSHOT_REFRESH_MS >= 5 * S.SNAPSHOT_INTERVAL_MS


def test_idle_partition_is_snapshotted_again_before_retention_could_reach_its_snapshot(
        tmp_path: Path) -> None:
    gc, context, client = loaded_group_coordinator(tmp_path)
    (g,) = _groups_of_partition(2, 1)
    admin_commit(gc, client, g, 5)
    context.clock.advance(S.SNAPSHOT_INTERVAL_MS)
    gc.tick()
    ack_last_produce(client, 1)
    assert 2 in context.state.offsets_snapshots
    n = len(client.of(P.PRODUCE))
    context.clock.advance(S.SNAPSHOT_INTERVAL_MS)
    gc.tick()
    assert len(client.of(P.PRODUCE)) == n, "an unchanged partition was snapshotted again at once"
    context.clock.advance(S.SNAPSHOT_REFRESH_MS)
    gc.tick()
    (record,) = offsets_records(client.of(P.PRODUCE)[-1][2][0])
    assert [e[0] for e in S.decode_entries(record.value)] == [g]


def test_offsets_topic_from_before_snapshots_gets_its_retention_once_every_partition_has_one(
        tmp_path: Path) -> None:
    context = FakeGroupContext(two_partition_state(), store=StateStore(tmp_path))
    gc, client = group_coordinator(context)
    gc.offsets.ensure_topic()
    context.state.topics[OFFSETS_TOPIC].configs["retention.ms"] = -1  # made by an older coordinator
    gc.offsets.start_loading()
    for q, (_, _, _, cb) in enumerate(client.of(P.FETCH)):
        cb({"parts": [[OFFSETS_TOPIC, q, 0, 0, 0, 0, None]]}, [b""], None)
    for _, _, _, cb in client.of(P.PRODUCE):  # the fences (nodes/coordinator/offsets_producer.py)
        cb({"results": [[0, 0, "", 0]]}, [], None)
    gc.tick()
    snaps = client.of(P.PRODUCE)[3:]
    for _, _, _, cb in snaps:
        assert context.state.topics[OFFSETS_TOPIC].configs["retention.ms"] == -1, "retention before every snapshot"
        cb({"results": [[0, 0, "", 0]]}, [], None)
    assert len(snaps) == 3
    assert StateStore(tmp_path).load().topics[OFFSETS_TOPIC].configs["retention.ms"] == S.OFFSETS_RETENTION_MS


def test_a_snapshot_whose_pointer_cannot_be_stored_is_not_written_again_at_every_tick(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The state write after a snapshot failed (a full disk on the coordinator): the snapshot
    was still due, so each tick appended the whole partition's offsets to the log again, and the
    commits queued behind the snapshot waited for a commit that came later to send them."""
    gc, context, client, groups, snap = _snapshot_after_three_commits(tmp_path, monkeypatch)
    late = admin_commit(gc, client, groups[0], 20, ack=False)  # queued behind the snapshot

    def full(_state: object) -> None:
        raise StorageFull("No space left on device")
    monkeypatch.setattr(context.store, "save", full)
    with pytest.raises(StorageFull):  # logged by the reactor; the coordinator serves on
        snap[3]({"results": [[3, 0, "", 0]]}, [], None)
    assert len(client.of(P.PRODUCE)) == 5, "the commit queued behind the snapshot was not sent"
    ack_last_produce(client, 4)
    assert context.server.answer(late) == {"group": groups[0], "committed": 1}
    for _ in range(30):
        context.reactor.clock.advance(100)
        gc.tick()
    assert len(client.of(P.PRODUCE)) == 5, "the snapshot was written again at every tick"
