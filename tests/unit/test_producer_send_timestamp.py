"""``timestamp_ms`` given to ``send`` and ``send_many``: an int of 64 bits (a batch header's
field), else refused at the call with ``FabricError`` and nothing queued. A timestamp the batch
cannot hold must not reach the accumulator: there it would fail another record's ``send`` (its
run of values packed when a later record ends it) or stop the I/O thread (the batch built)."""

from __future__ import annotations

from enum import IntEnum
from typing import Iterator

import pytest

from fabric import protocol as P
from fabric.client.producer import Producer
from fabric.errors import FabricError
from fabric.records import build_batch
from tests.unit.driven_producer import LEADER, driven_producer

TS = 1_700_000_000_000
NOT_TIMESTAMPS = [1 << 63, -(1 << 63) - 1, 1 << 64, 10 ** 30, "1700000000000", 1.5, float(TS), True, b"1"]


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Producer]:
    p = driven_producer(monkeypatch, linger_ms=60_000)
    yield p
    p.sender.stop()


def _sent_batches(p: Producer) -> list[bytes]:
    p.accumulator.close_all()
    p.sender.run_pass()
    return [payload for _, _, payloads, _ in p.sender.recording[LEADER].of(P.PRODUCE) for payload in payloads]  # type: ignore[attr-defined]


@pytest.mark.parametrize("bad", NOT_TIMESTAMPS, ids=repr)
def test_a_timestamp_a_batch_cannot_hold_is_refused_and_the_records_after_it_are_sent(producer: Producer,
                                                                                       bad: object) -> None:
    producer.send("t", b"abc", partition=0, timestamp_ms=TS)
    with pytest.raises(FabricError, match="timestamp_ms"):
        producer.send("t", b"abc", partition=0, timestamp_ms=bad)  # type: ignore[arg-type]
    # records of the run's size and other timestamps: the run is packed as they come
    records = [(TS, None, b"abc", None)] + [(TS + 1 + i // 2, None, b"abc", None) for i in range(40)]
    for ts, _, value, _ in records[1:]:
        producer.send("t", value, partition=0, timestamp_ms=ts)
    assert _sent_batches(producer) == [build_batch(records)]


@pytest.mark.parametrize("bad", NOT_TIMESTAMPS, ids=repr)
def test_send_many_refuses_a_timestamp_a_batch_cannot_hold_with_nothing_queued(producer: Producer,
                                                                             bad: object) -> None:
    for keys in (None, [b"k", None]):
        with pytest.raises(FabricError, match="timestamp_ms"):
            producer.send_many("t", [b"a", b"b"], keys, partition=0, timestamp_ms=bad)  # type: ignore[arg-type]
    assert producer.accumulator.buffered_bytes == 0
    producer.send("t", b"abc", partition=0, timestamp_ms=TS)
    assert _sent_batches(producer) == [build_batch([(TS, None, b"abc", None)])]


class At(IntEnum):
    NOW = TS


def test_the_int64_bounds_and_int_subclasses_are_timestamps(producer: Producer) -> None:
    for ts in (-(1 << 63), (1 << 63) - 1, 0, At.NOW):
        producer.send("t", b"abc", partition=0, timestamp_ms=ts)
    producer.send_many("t", [b"abc"], partition=0, timestamp_ms=At.NOW)
    stamps = (-(1 << 63), (1 << 63) - 1, 0, TS, TS)  # an int subclass is written as the int
    assert _sent_batches(producer) == [build_batch([(ts, None, b"abc", None) for ts in stamps])]
