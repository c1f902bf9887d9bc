"""Replication and failover review: one test per bug found, each driving the classes directly
(memory engine, fake broker/reactor objects, no processes, no sockets to peers)."""

from __future__ import annotations

import types
from collections import Counter
from pathlib import Path

import pytest

from engines import batch as B
from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric import wire
from fabric.client.producer import BatchState
from fabric.client.sender import Sender
from fabric.errors import RemoteError, RequestTimeout
from fabric.records import build_batch
from nodes.broker.epochs import EpochCache
from nodes.broker.fetcher import ReplicaFetcher
from nodes.broker.node import Broker
from nodes.broker.parking import ParkedProduce, ParkingLot
from nodes.broker.partition import Partition
from nodes.broker.replication import ReplicationSubscriber
from nodes.broker.isr import IsrProposer
from nodes.coordinator.alter_isr import IsrChange, judge
from nodes.coordinator.store import PartitionState, TopicState

BATCH_MAX = 1024 * 1024


def _batch(n: int = 2, pid: int = -1, epoch: int = -1, seq: int = -1, tag: str = "v") -> bytes:
    recs = [(1_700_000_000_000 + i, None, f"{tag}{i}".encode(), None) for i in range(n)]
    return build_batch(recs, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


def _part(broker_id: int = 1, directory: str | None = None, engine: MemoryEngine | None = None) -> Partition:
    return Partition("t", 0, broker_id, engine or MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), directory)


class _Recorder:
    """Stands in for the reactor / coordinator client / server: records what is asked of it."""

    def __init__(self) -> None:
        self.calls: list = []
        self.replies: list = []

    def call_later(self, delay_ms: int, fn) -> None:  # noqa: ANN001
        self.calls.append((delay_ms, fn))

    def request(self, command: bytes, header: dict, payloads=(), *, callback, timeout_ms: int) -> None:  # noqa: ANN001
        self.calls.append((command, header, callback))

    def reply(self, req, header=None, payloads=()) -> None:  # noqa: ANN001
        self.replies.append(header)

    def reply_error(self, req, code, message) -> None:  # noqa: ANN001
        self.replies.append({"error": code})


# -- 1. a follower must not acknowledge (or take a HW) before its log was checked ----------------
class _FakeFetcher:
    def __init__(self, ready: bool) -> None:
        self.ready = ready
        self.acks = 0
        self.triggers = 0

    def stream_ready(self, key) -> bool:  # noqa: ANN001
        return self.ready

    def trigger(self) -> None:
        self.triggers += 1

    def ack(self, part) -> None:  # noqa: ANN001
        self.acks += 1

    def ack_parts(self, parts) -> None:  # noqa: ANN001
        self.acks += len(parts)


def _subscriber(part: Partition, fetcher: _FakeFetcher) -> ReplicationSubscriber:
    sub = ReplicationSubscriber.__new__(ReplicationSubscriber)
    sub.broker = types.SimpleNamespace(
        partitions={("t", 0): part}, fetchers={part.leader_id: fetcher},
        faults=types.SimpleNamespace(blocks=lambda name: False), mark_dirty=lambda: None)
    sub.counters = Counter()
    return sub


def _heartbeat(epoch: int, hw: int, leo: int, topic: object = "t", partition: object = 0) -> list[bytes]:
    header = {"node": "broker-2", "topic": topic, "partition": partition, "epoch": epoch, "hw": hw, "leo": leo}
    return [P.replica_topic("t", 0), P.VERSION, P.PUB_REPLICA, wire.pack(header)]


def test_divergent_follower_does_not_ack_a_heartbeat_before_the_divergence_check() -> None:
    # broker 1 led epoch 1 and wrote 10 records that never reached broker 2; broker 2 now leads
    # epoch 2 with a log of 4. A heartbeat (leo 4) must not make broker 1 claim LEO 10 at epoch 2:
    # the leader would count it caught up, admit it to the ISR and advance the HW past records
    # it does not have.
    f = _part()
    f.become_leader(1, [1, 2], [1, 2], now_ms=0)
    f.append_as_leader([_batch(5), _batch(5)], BATCH_MAX)
    f.become_follower(2, 2, [1, 2], [2])
    fetcher = _FakeFetcher(ready=False)
    _subscriber(f, fetcher)._on_message(_heartbeat(epoch=2, hw=4, leo=4))
    assert fetcher.acks == 0
    assert f.high_watermark == 0  # the leader's HW names offsets our divergent tail holds
    fetcher.ready = True  # once a fetch checked the log, heartbeats ack and carry the HW
    _subscriber(f, fetcher)._on_message(_heartbeat(epoch=2, hw=4, leo=4))
    assert fetcher.acks == 1 and f.high_watermark == 4


def test_leader_ignores_a_replica_ack_past_its_log_end() -> None:
    leader = _part(broker_id=2)
    leader.become_leader(2, [1, 2], [1, 2], now_ms=0)
    leader.append_as_leader([_batch(4)], BATCH_MAX)
    broker = types.SimpleNamespace(partitions={("t", 0): leader}, clock=types.SimpleNamespace(now_ms=lambda: 5),
                                   _dirty=False)
    req = types.SimpleNamespace(header={"broker_id": 1, "parts": [["t", 0, 10, 2]]})
    Broker._on_replica_ack(broker, req)
    assert leader.high_watermark == 0
    assert leader.followers[1].log_end_offset == -1


def test_malformed_replication_messages_are_counted_not_raised() -> None:
    f = _part()
    f.become_follower(2, 2, [1, 2], [1, 2])
    fetcher = _FakeFetcher(ready=True)
    sub = _subscriber(f, fetcher)
    sub._on_message(_heartbeat(epoch=2, hw=0, leo=0, topic=["t"]))  # unhashable key
    sub._on_message(_heartbeat(epoch=2, hw="x", leo="y"))  # not integers
    assert sub.counters["repl_malformed"] == 2


# -- 2. an ALTER_ISR with no answer may have been applied: keep the maximal ISR ------------------
def _isr_proposer() -> tuple[IsrProposer, list]:
    sent: list = []
    proposer = IsrProposer(1, lambda header, callback: sent.append((header, callback)),
                           refresh_metadata=lambda: sent.append("refresh"), on_fenced=lambda: sent.append("fenced"),
                           mark_dirty=lambda: None)
    return proposer, sent


def test_isr_expansion_without_an_answer_keeps_counting_the_new_member() -> None:
    p = _part()
    p.become_leader(1, [1, 2, 3], [1, 2], now_ms=0)
    p.append_as_leader([_batch(3)], BATCH_MAX)
    p.record_follower_fetch(2, 3, now_ms=10)
    p.record_follower_fetch(3, 3, now_ms=10)
    assert p.isr_changes(10, 1000) == {1, 2, 3}
    proposer, sent = _isr_proposer()
    assert proposer.check([p], 10, 1000) == 1
    header, callback = sent[-1]
    assert header["parts"][0]["isr"] == [1, 2, 3] and header["parts"][0]["partition_epoch"] == p.partition_epoch
    callback(None, [], RequestTimeout())  # the coordinator may well have applied it
    # broker 3 can be in the committed ISR (and be elected): the HW must keep waiting for it
    p.append_as_leader([_batch(2)], BATCH_MAX)
    p.record_follower_fetch(2, 5, now_ms=20)
    assert p.high_watermark == 3
    # the proposal is asked again with the next check, and its answer settles it
    assert proposer.check([p], 20, 1000) == 1
    header, callback = sent[-1]
    assert header["parts"][0]["isr"] == [1, 2, 3]
    callback({"parts": [{"error": 0, "leader_epoch": 1, "partition_epoch": 7, "isr": [1, 2, 3]}]}, [], None)
    assert p.isr == {1, 2, 3} and p.pending_isr is None and p.partition_epoch == 7


def test_isr_proposal_rejected_by_the_coordinator_is_dropped() -> None:
    p = _part()
    p.become_leader(1, [1, 2, 3], [1, 2, 3], now_ms=0)
    p.followers[3].last_caught_up_ms = -5000
    proposer, sent = _isr_proposer()
    assert proposer.check([p], 0, 1000) == 1
    sent[-1][1]({"parts": [{"error": P.INVALID_CONFIG, "message": "no"}]}, [], None)
    assert p.pending_isr is None and len(sent) == 1


def _coordinator(isr: list[int]) -> dict[str, TopicState]:
    return {"t": TopicState([PartitionState(1, 4, [1, 2, 3], list(isr), partition_epoch=9)])}


def _change(isr: list[int], partition_epoch: int) -> IsrChange:
    return IsrChange("t", 0, 4, partition_epoch, isr)


def test_coordinator_refuses_an_isr_change_computed_from_a_stale_isr() -> None:
    # the coordinator dropped dead broker 3 from the ISR (partition epoch 8 -> 9); the leader has
    # not heard yet and asks to add broker 2 on top of its old view, which still names 3
    topics = _coordinator(isr=[1])
    assert judge(_change([1, 2, 3], 8), 1, topics, {1, 2, 3})[0] == P.STALE_ISR
    assert topics["t"].partitions[0].isr == [1]
    # a retry of a proposal that was already applied is answered, not refused
    topics = _coordinator(isr=[1, 2])
    assert judge(_change([1, 2], 8), 1, topics, {1, 2, 3}) == (0, "")
    # the current view is applied
    assert judge(_change([1, 2, 3], 9), 1, topics, {1, 2, 3}) == (0, "")
    assert topics["t"].partitions[0].isr == [1, 2, 3]
    # a proposal from a broker that no longer leads is fenced
    assert judge(_change([2, 3], 9), 2, topics, {1, 2, 3})[0] == P.FENCED_LEADER_EPOCH


# -- 3. the epoch cache must not name offsets the log lost in a crash ----------------------------
def test_reopen_drops_epoch_entries_past_the_recovered_log_end(tmp_path: Path) -> None:
    # epoch 5 was checkpointed at offset 10, but the log tail it covered was not durable
    cache = EpochCache(tmp_path)
    cache.assign(3, 0)
    cache.assign(5, 10)
    engine = MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX))
    buf = bytearray(_batch(4))
    B.set_leader_epoch(buf, 3)
    engine.append(buf)  # offsets 0-3 survived; the epoch-5 tail from 10 did not
    f = _part(directory=str(tmp_path), engine=engine)
    assert f.epochs.entries == [(3, 0)]
    assert EpochCache(tmp_path).entries == [(3, 0)]


# -- 4. acks=all needs min.insync.replicas when the HW arrives, not only at append ----------------
def test_acks_all_is_not_acknowledged_after_the_isr_shrank_below_min_isr() -> None:
    p = _part()
    p.become_leader(1, [1, 2, 3], [1, 2], now_ms=0)
    results, _ = p.append_as_leader([_batch(2)], BATCH_MAX)
    server = _Recorder()
    broker = types.SimpleNamespace(
        partitions={("t", 0): p}, server=server,
        metadata=types.SimpleNamespace(topics={"t": types.SimpleNamespace(configs={"min.insync.replicas": 2})}),
        config=types.SimpleNamespace(topics=types.SimpleNamespace(min_insync_replicas=1)))
    broker.min_insync_replicas = types.MethodType(Broker.min_insync_replicas, broker)
    lot = ParkingLot()
    req = types.SimpleNamespace(header={"parts": [["t", 0]]})
    lot.park_produce(ParkedProduce(req, [[0, 0, "", 1]], [(("t", 0), 2)], 10_000), server)
    p.update_isr([1])  # broker 2 fell behind: the HW is now the leader's LEO, one copy
    assert p.high_watermark == 2
    lot.service(broker, now_ms=1)
    assert server.replies[-1]["results"][0][1] == P.NOT_ENOUGH_REPLICAS_AFTER_APPEND


# -- 5. a fetch answer must belong to the epoch it was asked in ----------------------------------
def test_fetch_reply_from_an_earlier_epoch_is_not_applied() -> None:
    f = _part()
    f.become_follower(2, 3, [1, 2], [1, 2])
    fetcher = ReplicaFetcher.__new__(ReplicaFetcher)
    fetcher.partitions = {("t", 0): f}
    fetcher._stream_ready = {}
    fetcher.last_error = ""
    leader = _part(broker_id=2)
    leader.become_leader(3, [1, 2], [1, 2], now_ms=0)
    leader.append_as_leader([_batch(2)], BATCH_MAX)
    data = leader.read(0, 1 << 20, leader.log_end_offset)
    entry = ["t", 0, 0, 2, 2, 0, None]
    f.become_follower(2, 5, [1, 2], [1, 2])  # leadership moved away and back while it was in flight
    assert fetcher._apply(entry, data, {("t", 0): 3}) is False
    assert f.log_end_offset == 0 and not fetcher.stream_ready(("t", 0))
    assert fetcher._apply(entry, data, {("t", 0): 5}) is True
    assert f.log_end_offset == 2 and fetcher.stream_ready(("t", 0))


# -- 6. idempotent producer: a batch that fails for good must not wedge its partition -------------
class _FakeProducer:
    compression = 0
    acks = -1
    linger_ms = 5

    def release(self, b) -> None:  # noqa: ANN001
        pass

    def take_ready(self, now_ms: int) -> list:
        return []


def _sender() -> Sender:
    s = Sender(_FakeProducer(), ["tcp://127.0.0.1:1"], idempotent=True, delivery_timeout_ms=1000,
               request_timeout_ms=1000)
    s.reactor = _Recorder()  # type: ignore[assignment]
    return s


def _bstate(tag: str) -> BatchState:
    b = BatchState("t", 0, 0)
    b.records = [(1_700_000_000_000, None, f"{tag}{i}".encode(), None) for i in range(2)]
    return b


def test_terminal_failure_of_a_sequenced_batch_does_not_wedge_the_partition() -> None:
    leader = _part()
    leader.become_leader(1, [1], [1], now_ms=0)
    s = _sender()
    s.producer_id, s.producer_epoch = 7, 0
    tp = ("t", 0)
    b0, b1, b2 = _bstate("a"), _bstate("b"), _bstate("c")
    assert leader.append_as_leader([s._pack(b0, tp)], BATCH_MAX)[0][0][1] == 0
    s._pack(b1, tp)
    b1.attempts = 1
    s._on_reply([(tp, [b1])], [b1], {"results": [[-1, P.RECORD_TOO_LARGE, "too large"]]}, None)
    assert isinstance(b1.error, RemoteError)
    s._queues[tp].append(b2)
    s._pack(b2, tp)  # packed (the size check packs the queue head) but never sent
    if s.producer_id < 0:  # the producer starts over under a new id
        s.producer_id, s.producer_epoch = 8, 0
    res = leader.append_as_leader([s._pack(s._queues[tp][0], tp)], BATCH_MAX)[0][0]
    assert res[1] == 0, P.error_name(res[1])
    s._waker.close()


def test_duplicate_sequence_is_an_error_not_a_delivery_with_a_made_up_offset() -> None:
    # an unremembered old duplicate is not proof that this batch is in the log (before the
    # sequence wrap fix, every batch after 2**31 records got this answer and was dropped)
    s = _sender()
    s.producer_id, s.producer_epoch = 7, 0
    tp = ("t", 0)
    b = _bstate("a")
    s._pack(b, tp)
    from fabric.client.producer import RecordFuture
    fut = RecordFuture(b, 1)
    s._on_reply([(tp, [b])], [b], {"results": [[-1, P.DUPLICATE_SEQUENCE, "old duplicate"]]}, None)
    with pytest.raises(RemoteError) as e:
        fut.result(0)
    assert e.value.code == P.DUPLICATE_SEQUENCE
    s._waker.close()
