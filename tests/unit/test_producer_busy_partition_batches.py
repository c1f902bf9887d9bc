"""When a lingering batch leaves the accumulator: a partition with a request in flight keeps its
open batch filling instead of queueing a batch of one record behind the request (Kafka's muted
partitions)."""

from __future__ import annotations

from fabric import protocol as P
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.metadata_cache import MetadataCache
from fabric.client.sender import Sender, SenderSettings
from fabric.clock import ManualClock
from fabric.metadata import ClusterMetadata
from tests.unit.fakes import FakeReactor, RecordingClient


def _accumulator(linger_ms: int) -> tuple[RecordAccumulator, ManualClock, list[int]]:
    clock = ManualClock(1000)
    wakes: list[int] = []
    return RecordAccumulator(AccumulatorSettings(linger_ms=linger_ms), clock, wake=lambda: wakes.append(1)), clock, wakes


def test_a_busy_partition_keeps_filling_its_open_batch() -> None:
    acc, clock, _ = _accumulator(0)
    for _ in range(3):
        acc.append("t", 0, 0, None, b"v", None, 30)
    acc.append("t", 1, 0, None, b"v", None, 30)
    ready = acc.take_ready(clock.now_ms(), busy={("t", 0)})
    assert [(b.partition, b.record_count) for b in ready] == [(1, 1)]
    acc.append("t", 0, 0, None, b"v", None, 30)
    [batch] = acc.take_ready(clock.now_ms())  # the reply came: the partition is free
    assert (batch.partition, batch.record_count) == (0, 4)


def test_the_sender_holds_a_busy_partitions_records_in_one_batch_until_the_reply() -> None:
    acc, clock, _ = _accumulator(0)
    metadata = MetadataCache(wake=lambda: None)
    metadata.update(ClusterMetadata.from_wire({
        "version": 1, "cluster": "c", "coordinator": "tcp://127.0.0.1:9", "brokers": [[1, "127.0.0.1", 1, 101, True]],
        "topics": {"t": {"configs": {}, "partitions": [[1, 3, [1], [1]]]}}}))
    clients: dict[str, RecordingClient] = {}
    sender = Sender(SenderSettings(acks=-1, idempotent=False), acc, metadata, ["tcp://127.0.0.1:9"], clock=clock,
                    client_factory=lambda ep: clients.setdefault(ep, RecordingClient()))
    sender.attach(FakeReactor(clock))
    try:
        acc.append("t", 0, 0, None, b"first", None, 30)
        sender.run_pass()
        leader = clients["tcp://127.0.0.1:1"]
        for i in range(5):  # while the first request is out, each pass finds the partition busy
            acc.append("t", 0, 0, None, b"v%d" % i, None, 30)
            clock.advance(1)
            sender.run_pass()
        assert len(leader.of(P.PRODUCE)) == 1
        leader.answer_last(P.PRODUCE, {"results": [[0, 0, ""]]})
        sender.run_pass()
        [_, (_, header, payloads, _)] = leader.of(P.PRODUCE)
        assert len(payloads) == 1, "the five records went as one batch, not five"
    finally:
        sender.stop()
