"""Consumer-group and service review: one test per bug found, each driving the classes directly
(fake coordinator/reactor/server objects, no cluster; the group consumer's coordinator calls
are replaced, its sockets only ever point at a closed loopback port)."""

from __future__ import annotations

import queue
import threading
import time
import types
from collections import Counter

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.client.group import GroupConsumer
from fabric.clock import ManualClock
from fabric.errors import FabricError, RemoteError, RequestTimeout
from fabric.rpc import DEFER
from nodes.consumer import COMMANDS_PER_INSTANCE_MAX, Instance
from nodes.coordinator.groups import GroupCoordinator
from nodes.coordinator.offsets import OFFSETS_TOPIC
from nodes.coordinator.store import ClusterState, PartitionState, TopicState
from nodes.producer import ProducerService


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


# -- 4. the group consumer: no endless rejoin loop inside poll -----------------------------------
class _NoHeartbeat:
    def stop(self) -> None:
        pass


def _consumer(error: RemoteError, **kw) -> tuple[GroupConsumer, list]:  # noqa: ANN003
    c = GroupConsumer("127.0.0.1:1", group_id="g", **kw)
    c._heartbeat = _NoHeartbeat()  # type: ignore[assignment]
    calls: list = []

    def call(command: bytes, header: dict, **_kw) -> dict:  # noqa: ANN003
        calls.append(command)
        time.sleep(0.005)  # a real call takes time; the reactor has no socket to wait on here
        if len(calls) > 200:
            raise RuntimeError("still rejoining after 200 coordinator calls")
        raise error
    c._call = call  # type: ignore[method-assign]
    c.subscribe(["t"])
    return c, calls


def test_poll_raises_a_join_error_that_retrying_cannot_cure() -> None:
    c, calls = _consumer(RemoteError(P.INCONSISTENT_GROUP_PROTOCOL, "group uses range"))
    try:
        with pytest.raises(RemoteError) as e:
            c.poll(100)
        assert e.value.code == P.INCONSISTENT_GROUP_PROTOCOL and calls == [P.JOIN_GROUP]
        assert c._rejoin_needed  # the next poll tries again
    finally:
        c.close()


def test_poll_returns_at_its_timeout_while_the_coordinator_is_away() -> None:
    c, calls = _consumer(RequestTimeout("no reply"))
    try:
        started = time.monotonic()
        assert c.poll(300) == []
        assert time.monotonic() - started < 5 and calls
        before = len(calls)
        c.maintain()  # a hosted instance: one attempt per maintain, then its requests are served
        assert c._rejoin_needed and len(calls) == before + 1
    finally:
        c.close()


def test_heartbeat_interval_must_be_positive_and_below_the_session() -> None:
    for hb in (-1, 10_000):
        with pytest.raises(FabricError):
            GroupConsumer("127.0.0.1:1", group_id="g", session_timeout_ms=10_000, heartbeat_interval_ms=hb)


# -- 5. producer service: header bytes count against the bounded buffer --------------------------
def test_producer_service_counts_header_bytes_against_its_buffer() -> None:
    svc = types.SimpleNamespace(services=types.SimpleNamespace(producer_buffer_bytes_max=4096), _buffered_bytes=0,
                                counters=Counter(), _jobs=queue.Queue(10))
    req = _req(P.SERVICE_PRODUCE, topic="t", acks=1, records=[[None, b"v", [["h", b"x" * 100_000]], None]])
    with pytest.raises(RemoteError) as e:
        ProducerService._on_produce(svc, req)  # type: ignore[arg-type]
    assert e.value.code == P.BUFFER_FULL and svc._buffered_bytes == 0 and svc._jobs.empty()


# -- 6. consumer service: stopping an instance never blocks the reactor --------------------------
def test_stopping_an_instance_with_a_full_queue_does_not_block_and_answers_everything() -> None:
    service = types.SimpleNamespace(name="consumer-1", config=types.SimpleNamespace(
        services=types.SimpleNamespace(consumer_instance_idle_timeout_ms=1000)))
    inst = Instance(service, "g", "i", {}, 0)  # type: ignore[arg-type]
    answers: list = []
    lock = threading.Lock()

    def answer(header: dict | None, err: RemoteError | None) -> None:
        with lock:
            answers.append(err.code if err else 0)
    for _ in range(COMMANDS_PER_INSTANCE_MAX):
        inst.submit("subscription", {}, answer)
    started = time.monotonic()
    inst.stop()  # on the reactor: must return at once
    assert time.monotonic() - started < 1
    inst.start()
    inst.join(timeout=5)
    assert not inst.is_alive()
    assert answers == [P.UNKNOWN_CONSUMER_INSTANCE] * COMMANDS_PER_INSTANCE_MAX
