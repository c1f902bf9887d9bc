"""A ``send`` cut by an exception a signal handler raised (a KeyboardInterrupt, a SIGALRM
timeout an application catches before it sends on) never leaves its batch holding a record it
does not count, nor counting one it does not hold: the batch built from it is what its header
says, every record whose ``send`` returned is in it at its future's index, and the interrupted
record is in it at most once. (A record added but not counted made the leader store a batch
whose payload held one record more than its header: acknowledged, and unreadable by every
consumer -- corrupt_message; a keyed batch built from its tuples counted it, so each later
record's future named its neighbour's offset and the next batch's sequence overlapped.)

The exception is injected by a trace function where CPython checks for pending signals -- after
a call returns, and at a function's start -- in ``RecordAccumulator.append`` and in the
``BatchState`` methods it calls that change the batch."""

from __future__ import annotations

import dis
from types import CodeType
from typing import Any, Callable

import pytest

from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.futures import BatchState
from fabric.clock import ManualClock
from fabric.records import decode_batches
from tests.unit.test_producer_append_interrupted import _raising

TS = 1_700_000_000_000
CODES = (RecordAccumulator.append.__code__, BatchState.add_record.__code__, BatchState._seal_run.__code__,
         BatchState.seal_records.__code__, RecordAccumulator._close_batch.__code__, RecordAccumulator.close_all.__code__,
         RecordAccumulator._settle.__code__)


def _check_points(code: CodeType) -> set[int]:
    """The offsets in ``code`` where CPython may run a signal handler: after a call returns,
    and at the function's start (RESUME). (The handler's exception is raised at the call, so
    the call's ``try``/``with`` handles it: the instruction after a call that the same handler
    does not cover -- the exit of a ``with`` whose last statement returns a call's result --
    is no such point; the trace function raises at the instruction after.)"""
    table = dis._parse_exception_table(code)  # type: ignore[attr-defined]

    def handler(offset: int) -> int:
        return next((e.target for e in table if e.start <= offset < e.end), -1)
    ins = list(dis.get_instructions(code))
    after = {ins[i + 1].offset for i, x in enumerate(ins[:-1])
             if x.opname in ("CALL", "BEFORE_WITH") and handler(x.offset) == handler(ins[i + 1].offset)}
    return after | {x.offset for x in ins if x.opname == "RESUME"}


POINTS = {code: _check_points(code) for code in CODES}


def _interrupt_at(point: int, call: Callable[[], Any], lock: Any) -> bool:
    """Run ``call`` raising ``Interrupt`` at the ``point``-th check point reached (while the
    accumulator's lock is held); False if fewer were reached."""
    seen = [0]

    def here(code: CodeType, offset: int) -> bool:
        if offset in POINTS[code] and lock.locked():
            seen[0] += 1
        return seen[0] == point

    return _raising(here, call, POINTS)  # type: ignore[arg-type]


# (key, value, size, timestamp) of the record interrupted: one that goes on the run, one of
# another size (a new run), one of another millisecond, a keyed one (a tuple); or a flush
CUT = {
    "a flush": None,
    "on the run": (None, b"w" * 6, 30, TS),
    "another size": (None, b"w" * 16, 40, TS),
    "another millisecond": (None, b"w" * 6, 30, TS + 1),
    "keyed": (b"k", b"w" * 5, 30, TS),
}
# what the batch held before: nothing, a run of values, keyed records (tuples), a run sealed
# into a chunk by a record of another size
BEFORE = {
    "empty": [],
    "a run": [(None, b"a%05d" % i, 30, TS) for i in range(20)],
    "keyed": [(b"k", b"a%04d" % i, 30, TS) for i in range(3)],
    "a sealed run": [(None, b"a%05d" % i, 30, TS) for i in range(20)] + [(None, b"b" * 16, 40, TS)],
}


@pytest.mark.parametrize("fills", [False, True], ids=["room left", "it fills the batch"])
@pytest.mark.parametrize("before", sorted(BEFORE))
@pytest.mark.parametrize("cut", sorted(CUT))
def test_an_interrupted_send_leaves_its_batch_holding_exactly_what_it_counts(before: str, cut: str, fills: bool) -> None:
    """The sender takes (and builds) the ready batches right after the interrupted send (or
    flush), then the application sends on: every record whose ``send`` returned is in the bytes
    of its batch as built, at its future's index, and no batch is taken twice."""
    points = 0
    for point in range(1, 80):
        records_max = len(BEFORE[before]) + 1 if fills else 10_000
        acc = RecordAccumulator(AccumulatorSettings(linger_ms=60_000, max_block_ms=0, batch_records_max=records_max),
                                ManualClock(1000), wake=lambda: None)
        sent = []
        for key, value, size, ts in BEFORE[before]:
            sent.append((acc.append("t", 0, ts, key, value, None, size), value))
        if CUT[cut] is None:
            value = None
            if not _interrupt_at(point, acc.close_all, acc._lock):
                break
        else:
            key, value, size, ts = CUT[cut]
            value = b"CUT" + value[3:]
            if not _interrupt_at(point, lambda: acc.append("t", 0, ts, key, value, None, size), acc._lock):
                break
        points += 1
        built = {}

        def take(batches: list) -> None:
            for b in batches:
                assert id(b) not in built, "a batch taken twice"
                data = b.build(compression=0, producer_id=7, producer_epoch=0, base_sequence=0)
                # raises corrupt_message if header and payload differ
                values = [r.value for r in decode_batches("t", 0, data)]
                assert len(values) == b.record_count, (before, cut, point, values, b.record_count)
                built[id(b)] = (b, values)
        take(acc.take_ready(0))  # the closed batches, as the sender takes them
        for i in range(3):  # the sends after it, as an application that caught it goes on
            after = b"z%05d" % i
            sent.append((acc.append("t", 0, TS, None, after, None, 30), after))
        acc.close_all()
        take(acc.take_ready(0))
        where = (before, cut, point)
        for f, v in sent:
            assert id(f.batch) in built, ("a record's batch never taken", where, v)
            assert built[id(f.batch)][1][f.index] == v, (where, v, built[id(f.batch)][1])
        held = [v for b, values in built.values() for v in values]
        assert sorted(v for v in held if v != value) == sorted(v for _, v in sent), where
        assert acc.buffered_bytes == sum(b.size_bytes for b, _ in built.values()), where
    assert points > 0
