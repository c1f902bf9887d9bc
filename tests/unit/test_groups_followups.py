"""Consumer-group follow-ups, coordinator side: offsets snapshots and retention, unstable offset
fetches, no ghost members from a retried join, bounded group and log-end tables (the group
consumer's side: test_client_group_consumer.py).
Driven on the classes directly (fake coordinator/reactor/server objects, no cluster)."""

from __future__ import annotations

import types
from collections import Counter
from pathlib import Path

import msgpack
import pytest

from engines import batch as B
from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.errors import RemoteError
from fabric.records import build_batch, decode_batches
from fabric.rpc import DEFER
from nodes.coordinator import snapshots as S
from nodes.coordinator.groups import GroupCoordinator
from nodes.coordinator.offsets import OFFSETS_TOPIC, OffsetStore
from nodes.coordinator.store import ClusterState, PartitionState, StateStore, TopicState
from tests.unit.test_groups_review import _Reactor, _req, _Server


class _BrokerClient:
    """Stands in for the coordinator's RpcClient to a broker: keeps what was sent, payloads too."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict, list, object]] = []

    def request(self, command: bytes, header: dict, payloads=(), *, callback, timeout_ms: int) -> None:  # noqa: ANN001
        self.sent.append((command, header, list(payloads), callback))

    def of(self, command: bytes) -> list:
        return [s for s in self.sent if s[0] == command]

    def close(self) -> None:
        pass


def _coordinator(tmp_path: Path, state: ClusterState | None = None,
                 with_offsets_topic: bool = True) -> tuple[GroupCoordinator, types.SimpleNamespace, _BrokerClient]:
    clock = ManualClock(10_000)
    store = StateStore(tmp_path)
    if state is None:
        state = ClusterState(topics={"t": TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3]) for _ in range(2)])})
    coord = types.SimpleNamespace(
        clock=clock, reactor=_Reactor(clock), server=_Server(), counters=Counter(), ctx=None, state=state,
        store=store, brokers={b: types.SimpleNamespace(endpoint=f"tcp://127.0.0.1:{b}") for b in (1, 2, 3)},
        alive={1, 2, 3})
    coord.commit = lambda: store.save(coord.state)
    gc = GroupCoordinator(coord)  # type: ignore[arg-type]
    client = _BrokerClient()
    gc.offsets._client = lambda endpoint: client  # type: ignore[method-assign]
    if with_offsets_topic:
        gc.offsets.ensure_topic()
    return gc, coord, client


def _loaded(tmp_path: Path) -> tuple[GroupCoordinator, types.SimpleNamespace, _BrokerClient]:
    gc, coord, client = _coordinator(tmp_path)
    gc.offsets.start_loading()
    for q, (_, _, _, cb) in enumerate(client.of(P.FETCH)):  # every offsets partition is empty
        cb({"parts": [[OFFSETS_TOPIC, q, 0, 0, 0, 0, None]]}, [b""], None)
    assert gc.offsets.loaded
    gc.tick()  # read without a snapshot: each partition gets its first (empty) one at once
    snaps = client.of(P.PRODUCE)
    assert len(snaps) == 3
    for _, _, payloads, cb in snaps:
        (record,) = _records(payloads[0])
        assert S.parse_key(record.key)[1:] == (0, True) and S.decode_entries(record.value) == []
        cb({"results": [[0, 0, "", 0]]}, [], None)
    assert sorted(coord.state.offsets_snapshots) == [0, 1, 2]
    client.sent.clear()
    return gc, coord, client


def _groups_of_partition(q: int, n: int) -> list[str]:
    out, i = [], 0
    while len(out) < n:
        if OffsetStore.partition_for_group(f"g{i}") == q:
            out.append(f"g{i}")
        i += 1
    return out


def _admin_commit(gc: GroupCoordinator, client: _BrokerClient, group: str, offset: int,
                  *, ack: bool = True, base_offset: int = 0) -> wire.Request:
    """An administrative commit of t-0 (the log-end lookup and the append answered at once)."""
    req = _req(P.OFFSET_COMMIT, group=group, generation=-1, offsets=[["t", 0, offset]])
    before = len(client.sent)
    assert gc._on_offset_commit(req) is DEFER
    for cmd, _h, _p, cb in client.sent[before:]:
        if cmd == P.LIST_OFFSETS:
            cb({"parts": [["t", 0, 0, 1000]]}, [], None)
    if ack:
        _ack_last_produce(client, base_offset)
    return req


def _ack_last_produce(client: _BrokerClient, base_offset: int) -> None:
    cmd, _h, _p, cb = client.sent[-1]
    assert cmd == P.PRODUCE
    cb({"results": [[base_offset, 0, "", 0]]}, [], None)


def _records(payload: bytes, base_offset: int = 0) -> list:
    data = bytearray(payload)
    B.set_base_offset(data, base_offset)
    return decode_batches(OFFSETS_TOPIC, 0, bytes(data))


# -- 1. snapshots of __consumer_offsets -----------------------------------------------------------
def test_snapshot_after_n_commits_holds_every_offset_of_its_partition_and_is_remembered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "SNAPSHOT_COMMIT_RECORDS", 3)
    gc, coord, client = _loaded(tmp_path)
    groups = _groups_of_partition(0, 3)
    for i, g in enumerate(groups):
        _admin_commit(gc, client, g, 10 + i, base_offset=i)
    gc.tick()
    (snap,) = client.of(P.PRODUCE)[3:]
    assert snap[1]["acks"] == -1 and snap[1]["parts"] == [[OFFSETS_TOPIC, 0]]
    (record,) = _records(snap[2][0])
    ident, index, last = S.parse_key(record.key)
    assert index == 0 and last
    assert sorted((e[0], e[1], e[2], e[3]) for e in S.decode_entries(record.value)) == \
        sorted((g, "t", 0, 10 + i) for i, g in enumerate(groups))
    # a commit arriving while the snapshot is written is appended after it, never before
    late = _admin_commit(gc, client, groups[0], 20, ack=False)
    assert len(client.of(P.PRODUCE)) == 4, "a commit overtook the snapshot being written"
    snap[3]({"results": [[3, 0, "", 0]]}, [], None)
    assert StateStore(tmp_path).load().offsets_snapshots[0][:2] == [3, ident]
    _ack_last_produce(client, 4)
    assert coord.server.answer(late) == {"group": groups[0], "committed": 1}


def test_large_snapshot_is_split_into_bounded_records_with_a_last_marker(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(S, "SNAPSHOT_RECORD_BYTES_MAX", 200)
    gc, coord, client = _loaded(tmp_path)
    from nodes.coordinator.offsets import Committed
    for g in _groups_of_partition(1, 30):
        gc.offsets.table[g] = {("t", 0): Committed(5, "m" * 20, 1)}
    gc.offsets.snapshot(1)
    seen, base, pieces = [], 100, 0
    while True:
        cmd, header, payloads, cb = client.sent[-1]
        assert cmd == P.PRODUCE and header["parts"] == [[OFFSETS_TOPIC, 1]]
        (record,) = _records(payloads[0])
        assert len(record.value) <= 200
        ident, index, last = S.parse_key(record.key)
        assert index == pieces
        pieces += 1
        seen += S.decode_entries(record.value)
        cb({"results": [[base + index, 0, "", 0]]}, [], None)
        if last:
            break
    assert index > 1 and sorted(e[0] for e in seen) == sorted(_groups_of_partition(1, 30))
    assert coord.state.offsets_snapshots[1][:2] == [100, ident]


def test_loading_starts_at_the_remembered_snapshot_and_falls_back_to_the_log_start(tmp_path: Path) -> None:
    state = ClusterState(topics={"t": TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3])])})
    gc, coord, client = _coordinator(tmp_path, state)
    coord.state.offsets_snapshots = {0: [40, "aa", coord.clock.wall_ms()], 1: [7, "bb", coord.clock.wall_ms()]}
    gc.offsets.start_loading()
    fetches = {f[1]["parts"][0][1]: f for f in client.of(P.FETCH)}
    assert fetches[0][1]["parts"][0][2] == 40 and fetches[1][1]["parts"][0][2] == 7
    assert fetches[2][1]["parts"][0][2] == 0  # no snapshot yet: from the log start
    (g0,) = _groups_of_partition(0, 1)
    (key, value), = S.snapshot_records("aa", [(g0, "t", 0, 12, "", 1)])
    snap = bytearray(build_batch([(1, key, value, None)]))
    B.set_base_offset(snap, 40)
    fetches[0][3]({"parts": [[OFFSETS_TOPIC, 0, 0, 41, 41, 0, None]]}, [bytes(snap)], None)
    # partition 1: the remembered offset holds no snapshot any more (say, a truncated log)
    other = bytearray(build_batch([(1, msgpack.packb(["x", "t", 0]), msgpack.packb([3, "", 1]), None)]))
    B.set_base_offset(other, 7)
    client.sent.clear()
    fetches[1][3]({"parts": [[OFFSETS_TOPIC, 1, 0, 8, 8, 0, None]]}, [bytes(other)], None)
    assert gc.offsets.offsets_for("x") == {}, "a record at a stale snapshot pointer was applied"
    for fn in coord.reactor.later:
        fn()
    (again,) = client.of(P.FETCH)
    assert again[1]["parts"][0][2] == 0, "no fallback to the log start"
    fetches[2][3]({"parts": [[OFFSETS_TOPIC, 2, 0, 0, 0, 0, None]]}, [b""], None)
    assert {q for q, st in gc.offsets.loader.states.items() if st.done} == {0, 2}
    assert gc.offsets.offsets_for(g0)[("t", 0)].offset == 12


def test_offsets_topic_has_a_time_retention_far_longer_than_the_snapshot_refresh(tmp_path: Path) -> None:
    gc, coord, _ = _coordinator(tmp_path)
    configs = coord.state.topics[OFFSETS_TOPIC].configs
    assert configs["retention.ms"] == S.OFFSETS_RETENTION_MS > 0
    assert S.OFFSETS_RETENTION_MS >= 5 * S.SNAPSHOT_REFRESH_MS >= 5 * S.SNAPSHOT_INTERVAL_MS


def test_idle_partition_is_snapshotted_again_before_retention_could_reach_its_snapshot(
        tmp_path: Path) -> None:
    gc, coord, client = _loaded(tmp_path)
    (g,) = _groups_of_partition(2, 1)
    _admin_commit(gc, client, g, 5)
    coord.clock.advance(S.SNAPSHOT_INTERVAL_MS)
    gc.tick()
    _ack_last_produce(client, 1)
    assert 2 in coord.state.offsets_snapshots
    n = len(client.of(P.PRODUCE))
    coord.clock.advance(S.SNAPSHOT_INTERVAL_MS)
    gc.tick()
    assert len(client.of(P.PRODUCE)) == n, "an unchanged partition was snapshotted again at once"
    coord.clock.advance(S.SNAPSHOT_REFRESH_MS)
    gc.tick()
    (record,) = _records(client.of(P.PRODUCE)[-1][2][0])
    assert [e[0] for e in S.decode_entries(record.value)] == [g]


def test_offsets_topic_from_before_snapshots_gets_its_retention_once_every_partition_has_one(
        tmp_path: Path) -> None:
    gc, coord, client = _coordinator(tmp_path)
    coord.state.topics[OFFSETS_TOPIC].configs["retention.ms"] = -1  # made by an older coordinator
    gc.offsets.start_loading()
    for q, (_, _, _, cb) in enumerate(client.of(P.FETCH)):
        cb({"parts": [[OFFSETS_TOPIC, q, 0, 0, 0, 0, None]]}, [b""], None)
    gc.tick()
    snaps = client.of(P.PRODUCE)
    for _, _, _, cb in snaps:
        assert coord.state.topics[OFFSETS_TOPIC].configs["retention.ms"] == -1, "retention before every snapshot"
        cb({"results": [[0, 0, "", 0]]}, [], None)
    assert len(snaps) == 3
    assert StateStore(tmp_path).load().topics[OFFSETS_TOPIC].configs["retention.ms"] == S.OFFSETS_RETENTION_MS


# -- 3. OFFSET_FETCH while a commit is being written -----------------------------------------------
def test_offset_fetch_of_a_partition_with_a_commit_in_flight_is_unstable_and_retriable(tmp_path: Path) -> None:
    gc, coord, client = _loaded(tmp_path)
    _admin_commit(gc, client, "g", 5)
    _admin_commit(gc, client, "g", 9, ack=False)  # in flight
    for wanted in ([["t", 0]], None):
        with pytest.raises(RemoteError) as e:
            gc._on_offset_fetch(_req(P.OFFSET_FETCH, group="g", partitions=wanted))
        assert e.value.code == P.UNSTABLE_OFFSET_COMMIT and e.value.retriable
    assert gc._on_offset_fetch(_req(P.OFFSET_FETCH, group="g", partitions=[["t", 1]]))["offsets"] == [["t", 1, -1, ""]]
    _ack_last_produce(client, 1)
    assert gc._on_offset_fetch(_req(P.OFFSET_FETCH, group="g", partitions=[["t", 0]]))["offsets"] == [["t", 0, 9, ""]]


# -- 4. a retried JOIN creates no ghost member -------------------------------------------------------
def test_join_hands_out_the_member_id_first_so_a_lost_reply_leaves_no_ghost(tmp_path: Path) -> None:
    gc, coord, _ = _coordinator(tmp_path, with_offsets_topic=False)
    join = dict(group="g", member_id="", client_id="a", topics=["t"], session_timeout_ms=10_000,
                rebalance_timeout_ms=10_000, require_member_id=True)
    first = gc._on_join(_req(P.JOIN_GROUP, **join))
    retry = gc._on_join(_req(P.JOIN_GROUP, **join))  # the first reply was lost: the client asks again
    assert first["member_id_required"] and retry["member_id_required"] and first["member_id"] != retry["member_id"]
    assert not gc.groups["g"].members, "an id handed out is not yet a member"
    req = _req(P.JOIN_GROUP, **dict(join, member_id=retry["member_id"]))
    assert gc._on_join(req) is DEFER
    assert coord.server.answer(req)["generation"] == 1
    assert list(gc.groups["g"].members) == [retry["member_id"]]
    coord.clock.advance(10_001)  # the unused id expires; a join with it is refused
    gc.tick()
    with pytest.raises(RemoteError) as e:
        gc._on_join(_req(P.JOIN_GROUP, **dict(join, member_id=first["member_id"])))
    assert e.value.code == P.UNKNOWN_MEMBER


# -- 5. bounded tables ---------------------------------------------------------------------------------
def test_admin_commits_cannot_grow_the_groups_past_the_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "GROUPS_MAX", 2)
    gc, coord, client = _loaded(tmp_path)
    _admin_commit(gc, client, "a", 1)
    _admin_commit(gc, client, "b", 1)
    with pytest.raises(RemoteError) as e:
        gc._on_offset_commit(_req(P.OFFSET_COMMIT, group="c", generation=-1, offsets=[["t", 0, 1]]))
    assert e.value.code == P.BUFFER_FULL
    _admin_commit(gc, client, "a", 2)  # a known group still commits
    with pytest.raises(RemoteError) as e:  # and a join cannot make a third group either
        gc._on_join(_req(P.JOIN_GROUP, group="c", member_id="", topics=["t"], session_timeout_ms=10_000))
    assert e.value.code == P.BUFFER_FULL


def test_log_end_cache_forgets_a_deleted_topic(tmp_path: Path) -> None:
    gc, coord, client = _loaded(tmp_path)
    _admin_commit(gc, client, "a", 1)
    assert ("t", 0) in gc.offsets._hw_seen
    del coord.state.topics["t"]
    gc.topic_deleted("t")
    assert not any(t == "t" for t, _ in gc.offsets._hw_seen)
