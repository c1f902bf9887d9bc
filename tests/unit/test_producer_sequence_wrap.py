"""Idempotent-producer sequences wrap at 2**31 - 1 -> 0 (as Kafka's): the broker's producer
state compares them wrap-aware, through the real ``Partition`` and ``ProducerStateTable``. (The
client never takes a ``duplicate_sequence`` answer for a delivery: test_producer_sender.py.)"""

from __future__ import annotations

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.broker.partition import Partition
from nodes.broker.producers import SEQUENCE_MAX, ProducerStateTable
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024
PID, EPOCH = 7, 0


def _batch(n: int, seq: int) -> bytes:
    return make_batch(n, PID, EPOCH, seq, f"s{seq}-", keys=False)


def _leader() -> Partition:
    p = Partition("t", 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    p.become_leader(1, [1], [1], now_ms=0)
    return p


def _codes(p: Partition, batches: list[bytes]) -> list[tuple[int, int]]:
    return [(r[0], r[1]) for r in p.append_as_leader(batches, BATCH_MAX)[0]]


def test_sequence_max_is_int31_max() -> None:
    assert SEQUENCE_MAX == 2**31 - 1


def test_sequence_wraps_to_zero_and_the_batch_is_written() -> None:
    p = _leader()
    assert _codes(p, [_batch(2, SEQUENCE_MAX - 1)]) == [(0, 0)]     # last sequence = 2**31 - 1
    assert _codes(p, [_batch(3, 0)]) == [(2, 0)]                    # wrapped: the next one
    assert _codes(p, [_batch(1, 3)]) == [(5, 0)]
    assert p.log_end_offset == 6


def test_a_batch_spanning_the_wrap_is_in_sequence_and_its_retry_is_a_duplicate() -> None:
    p = _leader()
    assert _codes(p, [_batch(1, SEQUENCE_MAX - 2)]) == [(0, 0)]
    spanning = _batch(5, SEQUENCE_MAX - 1)                          # 2**31-2, 2**31-1, 0, 1, 2
    assert _codes(p, [spanning]) == [(1, 0)]
    assert _codes(p, [_batch(1, 3)]) == [(6, 0)]
    assert _codes(p, [spanning]) == [(1, 0)]                        # a retry: original offset
    assert p.log_end_offset == 7


def test_an_old_batch_from_before_the_wrap_is_a_duplicate_error_never_written() -> None:
    t = ProducerStateTable()
    t.update(PID, EPOCH, SEQUENCE_MAX - 40, 40, base_offset=0)      # ends at 2**31 - 1
    for i in range(40):                                             # push it out of memory
        t.update(PID, EPOCH, i, 1, base_offset=40 + i)
    try:
        t.check(PID, EPOCH, SEQUENCE_MAX - 40, 40)
    except RemoteError as e:
        assert e.code == P.DUPLICATE_SEQUENCE
    else:
        raise AssertionError("a forgotten old batch must be refused, not appended")
    assert t.check(PID, EPOCH, 40, 1) is None                       # the next one is in sequence
    try:
        t.check(PID, EPOCH, 45, 1)
    except RemoteError as e:
        assert e.code == P.OUT_OF_ORDER_SEQUENCE                    # ahead: a gap
    else:
        raise AssertionError("a gap must be refused")
