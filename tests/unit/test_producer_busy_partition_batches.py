"""When a lingering batch leaves the accumulator: a partition with a request in flight keeps its
open batch filling instead of queueing a batch of one record behind the request (Kafka's muted
partitions)."""

from __future__ import annotations

from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.clock import ManualClock


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
