"""``Producer.send_many(..., on_complete=fn)``: ``fn(futures)`` runs exactly once, only when
every record of the call is known (delivered or failed) -- over several batches and partitions,
after retries, when the buffer fills part-way -- and never after a call that raised with
nothing queued; ``RecordFutures.outcomes()`` gives each record's partition, offset and error
in the order given. The producer and its sender are the real ones, the sender driven by the
test (tests/unit/driven_producer.py)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from fabric import protocol as P
from fabric.client.futures import RecordFutures
from fabric.client.completion import Completion
from fabric.client.producer import RECORD_OVERHEAD_BYTES, Producer
from fabric.errors import BufferExhaustedError, RecordSizeExceededError, RemoteError
from fabric.records import pack_values, partition_for_key
from tests.unit.driven_producer import answer, driven_producer, send_pass

TS = 1_700_000_000_123


class Hook:
    """An ``on_complete`` that records each call, its thread and whether every record was known."""

    def __init__(self) -> None:
        self.calls: list[tuple[RecordFutures, bool, str]] = []

    def __call__(self, futures: RecordFutures) -> None:
        self.calls.append((futures, futures.done(), threading.current_thread().name))


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Producer]:
    p = driven_producer(monkeypatch, batch_records_max=4, max_block_ms=100, record_bytes_max=200,
                        buffer_bytes_max=10_000)
    yield p
    p.sender.stop()


def test_the_hook_runs_once_when_every_batch_is_known_with_each_records_outcome(producer: Producer) -> None:
    hook = Hook()
    futures = producer.send_many("t", [b"v%d" % i for i in range(10)], on_complete=hook)
    parts = send_pass(producer)
    assert len(parts) == 3 and len(set(parts)) == 3  # 4 + 4 + 2 records, sticky over three partitions
    assert hook.calls == []
    answer(producer, [[100, 0, ""], [200, 0, ""], [300, 0, ""]])
    assert len(hook.calls) == 1
    called_with, all_known, _ = hook.calls[0]
    assert called_with is futures and all_known
    positions, partitions, offsets, errors = futures.outcomes(0)
    assert list(positions) == list(range(10)) and errors == [None] * 10
    assert offsets == [100, 101, 102, 103, 200, 201, 202, 203, 300, 301]
    assert partitions == [parts[0][1]] * 4 + [parts[1][1]] * 4 + [parts[2][1]] * 2
    assert [(md.partition, md.offset) for md in futures.result(0)] == list(zip(partitions, offsets))
    send_pass(producer)
    assert len(hook.calls) == 1


def test_the_hook_waits_for_a_retried_batch_and_reports_a_failed_one(monkeypatch: pytest.MonkeyPatch) -> None:
    # no retry backoff: the driven sender's clock is the real one (test_producer_retry_backoff
    # tests the backoff on a ManualClock)
    producer = driven_producer(monkeypatch, batch_records_max=4, max_block_ms=100, record_bytes_max=200,
                               buffer_bytes_max=10_000, retry_backoff_ms=0)
    try:
        _the_hook_waits_for_a_retried_batch_and_reports_a_failed_one(producer)
    finally:
        producer.sender.stop()


def _the_hook_waits_for_a_retried_batch_and_reports_a_failed_one(producer: Producer) -> None:
    hook = Hook()
    futures = producer.send_many("t", [b"v%d" % i for i in range(10)], on_complete=hook)
    send_pass(producer)
    answer(producer, [[100, 0, ""], [-1, P.NOT_ENOUGH_REPLICAS, "retry"], [-1, P.INVALID_RECORD, "bad"]])
    assert hook.calls == []  # one batch is still being retried
    producer.sender.reactor.clock.advance(1000)  # type: ignore[union-attr]
    producer.sender.reactor.run_due()  # type: ignore[union-attr]
    assert len(send_pass(producer)) == 1
    assert hook.calls == []
    answer(producer, [[500, 0, ""]])
    assert len(hook.calls) == 1 and hook.calls[0][1]
    _, partitions, offsets, errors = futures.outcomes(0)
    assert offsets == [100, 101, 102, 103, 500, 501, 502, 503, -1, -1]
    assert errors[:8] == [None] * 8
    assert all(isinstance(e, RemoteError) and e.code == P.INVALID_RECORD for e in errors[8:])


def test_keyed_records_over_several_partitions_come_back_in_the_order_given(producer: Producer) -> None:
    hook = Hook()
    keys = [b"k%d" % (i % 5) for i in range(12)]
    futures = producer.send_many("t", [b"v%d" % i for i in range(12)], keys, on_complete=hook)
    parts = send_pass(producer)
    answer(producer, [[1000 * (i + 1), 0, ""] for i in range(len(parts))])
    assert len(hook.calls) == 1
    positions, partitions, offsets, errors = futures.outcomes(0)
    assert sorted(positions) == list(range(12)) and errors == [None] * 12
    by_position = dict(zip(positions, zip(partitions, offsets)))
    assert [by_position[i][0] for i in range(12)] == [partition_for_key(k, 3) for k in keys]
    assert [by_position[i] for i in range(12)] == [(md.partition, md.offset) for md in futures.result(0)]


def test_a_full_buffer_part_way_calls_the_hook_once_with_the_records_queued(producer: Producer) -> None:
    hook = Hook()
    with pytest.raises(BufferExhaustedError) as e:
        producer.send_many("t", [b"x" * 150] * 100, on_complete=hook)  # 174 bytes each, 10,000 buffered
    queued = e.value.futures  # type: ignore[attr-defined]
    assert 0 < len(queued) < 100 and hook.calls == []
    parts = send_pass(producer)
    answer(producer, [[0, 0, ""]] * len(parts))
    assert len(hook.calls) == 1 and hook.calls[0][0] is queued and hook.calls[0][1]
    positions, _, offsets, errors = queued.outcomes(0)
    assert list(positions) == list(range(len(queued))) and errors == [None] * len(queued)


def test_a_call_that_raises_with_nothing_queued_never_calls_the_hook(producer: Producer) -> None:
    hook = Hook()
    with pytest.raises(RecordSizeExceededError):
        producer.send_many("t", [b"ok", b"x" * 300], on_complete=hook)
    producer.send_many("t", [], on_complete=hook)  # nothing to wait for: called at once
    assert [len(c[0]) for c in hook.calls] == [0]
    assert producer.sender.run_pass() is None and hook.calls[1:] == []


def test_a_batch_finishing_before_the_call_returns_does_not_fire_the_hook_early(producer: Producer) -> None:
    # the race send_many closes with the caller's hold: a first batch finishes while the call
    # is still appending (here: before the caller releases its hold)
    hook = Hook()
    completion = Completion(hook)
    values = [b"v%d" % i for i in range(4)]
    segments = producer.accumulator.append_many("t", 0, TS, values, 2 + RECORD_OVERHEAD_BYTES,
                                                lambda a, b: pack_values(values[a:b], TS), 3, None, completion)
    send_pass(producer)
    answer(producer, [[7, 0, ""]])
    assert segments[0][0].event.is_set() and hook.calls == []
    completion.futures = RecordFutures(segments)
    completion.release()
    assert len(hook.calls) == 1 and hook.calls[0][2] == threading.current_thread().name
    assert hook.calls[0][0].outcomes(0)[2] == [7, 8, 9, 10]
