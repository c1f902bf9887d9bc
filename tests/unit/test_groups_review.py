"""Consumer-group review, coordinator side: one test per bug found, each driving the classes
directly (fake coordinator/reactor/server objects, no cluster). (The group consumer's and the
services' tests are in test_client_group_consumer.py, test_producer_service.py and
test_consumer_service_instance.py.)"""

from __future__ import annotations

import types
from collections import Counter

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.errors import RemoteError
from fabric.rpc import DEFER
from nodes.coordinator.groups import GroupCoordinator
from nodes.coordinator.offsets import OFFSETS_TOPIC
from nodes.coordinator.store import ClusterState, PartitionState, TopicState


class _Server:
    def __init__(self) -> None:
        self.replies: list[tuple[wire.Request, dict]] = []

    def route(self, command: bytes, fn) -> None:  # noqa: ANN001
        pass

    def reply(self, req: wire.Request, header: dict | None = None, payloads=()) -> None:  # noqa: ANN001
        self.replies.append((req, header or {}))

    def reply_error(self, req: wire.Request, code: int, message: str, **extra) -> None:  # noqa: ANN003
        self.replies.append((req, {"error": code, "message": message}))

    def answer(self, req: wire.Request) -> dict:
        found = [h for r, h in self.replies if r is req]
        assert len(found) == 1, f"{len(found)} replies to one request"
        return found[0]


class _Reactor:
    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.later: list = []

    def call_every(self, interval_ms: int, fn) -> None:  # noqa: ANN001
        pass

    def call_later(self, delay_ms: int, fn) -> None:  # noqa: ANN001
        self.later.append(fn)


class _BrokerClient:
    """Stands in for the coordinator's RpcClient to a broker: keeps what was sent."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes, dict, object]] = []

    def request(self, command: bytes, header: dict, payloads=(), *, callback, timeout_ms: int) -> None:  # noqa: ANN001
        self.sent.append((command, header, callback))

    def of(self, command: bytes) -> list:
        return [s for s in self.sent if s[0] == command]

    def close(self) -> None:
        pass


def _group_coordinator(alive: tuple[int, ...] = (1, 2, 3)) -> tuple[GroupCoordinator, types.SimpleNamespace, _BrokerClient]:
    clock = ManualClock(10_000)
    coord = types.SimpleNamespace(
        clock=clock, reactor=_Reactor(clock), server=_Server(), counters=Counter(), ctx=None,
        state=ClusterState(topics={"t": TopicState([PartitionState(1, 0, [1, 2, 3], [1, 2, 3]) for _ in range(2)])}),
        brokers={b: types.SimpleNamespace(endpoint=f"tcp://127.0.0.1:{b}") for b in (1, 2, 3)},
        alive=set(alive))
    coord.commit = lambda: None
    gc = GroupCoordinator(coord)  # type: ignore[arg-type]
    client = _BrokerClient()
    gc.offsets._client = lambda endpoint: client  # type: ignore[method-assign]
    gc.offsets.start_loading()  # no offsets topic yet: loaded at once
    assert gc.offsets.loaded
    return gc, coord, client


def _req(command: bytes, **header) -> wire.Request:  # noqa: ANN003
    return wire.Request([b"peer"], command, header, [])


def _join(gc: GroupCoordinator, client_id: str, member_id: str = "", generation: int = -1) -> wire.Request:
    req = _req(P.JOIN_GROUP, group="g", member_id=member_id, generation=generation, client_id=client_id,
               topics=["t"], session_timeout_ms=10_000, rebalance_timeout_ms=10_000)
    assert gc._on_join(req) is DEFER
    return req


# -- 1. a commit validated for generation N must not be appended once generation N+1 began ---
def test_commit_of_a_partition_handed_on_by_a_rebalance_is_not_applied() -> None:
    gc, coord, client = _group_coordinator()
    a = coord.server.answer(_join(gc, "a"))
    assert a["generation"] == 1 and gc.groups["g"].members[a["member_id"]].assignment == [("t", 0), ("t", 1)]
    commit = _req(P.OFFSET_COMMIT, group="g", member_id=a["member_id"], generation=1, offsets=[["t", 1, 5]])
    assert gc._on_offset_commit(commit) is DEFER  # valid now: waits for the log-end lookup
    lookup = client.of(P.LIST_OFFSETS)
    assert len(lookup) == 1
    # meanwhile b joins, a rejoins, and generation 2 gives t-1 to b
    b_join = _join(gc, "b")
    _join(gc, "a", a["member_id"], 1)
    b = coord.server.answer(b_join)
    assert b["generation"] == 2 and gc.groups["g"].members[b["member_id"]].assignment == [("t", 1)]
    lookup[0][2]({"parts": [["t", 1, 0, 100]]}, [], None)  # the lookup answers late
    assert client.of(P.PRODUCE) == [], "a commit of generation 1 was appended in generation 2"
    assert coord.server.answer(commit).get("error") == P.ILLEGAL_GENERATION
    assert gc.offsets.offsets_for("g") == {}
    # a commit of the current owner still goes through
    ok = _req(P.OFFSET_COMMIT, group="g", member_id=b["member_id"], generation=2, offsets=[["t", 1, 7]])
    gc._on_offset_commit(ok)
    (produce,) = client.of(P.PRODUCE)
    produce[2]({"results": [[0, 0, ""]]}, [], None)
    assert coord.server.answer(ok) == {"group": "g", "committed": 1}
    assert gc.offsets.offsets_for("g")[("t", 1)].offset == 7


# -- 2. the offsets topic: full replication factor, no size retention (time retention: see
# test_groups_followups, which snapshots make safe) --------------------------------------------
def test_offsets_topic_waits_for_its_replication_factor_and_keeps_records_forever() -> None:
    gc, coord, _ = _group_coordinator(alive=(1,))
    with pytest.raises(RemoteError) as e:
        gc.offsets.ensure_topic()
    assert e.value.code == P.NOT_ENOUGH_REPLICAS and e.value.retriable
    assert OFFSETS_TOPIC not in coord.state.topics, "an offsets topic with one replica would lose offsets with it"
    coord.alive = {1, 2, 3}
    gc.offsets.ensure_topic()
    topic = coord.state.topics[OFFSETS_TOPIC]
    assert all(len(p.replicas) == 3 for p in topic.partitions)
    assert topic.configs["min.insync.replicas"] == 2
    assert topic.configs["retention.bytes"] == -1


# -- 3. bad input gets a clear error, not an internal one ----------------------------------------
def test_offset_fetch_with_mistyped_partitions_is_malformed() -> None:
    gc, _, _ = _group_coordinator()
    with pytest.raises(RemoteError) as e:
        gc._on_offset_fetch(_req(P.OFFSET_FETCH, group="g", partitions=[[{"x": 1}, 0]]))
    assert e.value.code == P.MALFORMED_REQUEST
