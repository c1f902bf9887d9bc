"""An exception raised inside ``RecordAccumulator.append`` while it holds the lock -- a signal
handler's ``KeyboardInterrupt`` in an application's main thread sending in a loop, raised where
Python checks for pending signals: right after a call returns -- lets the lock go, so that the
producer's I/O thread, ``flush`` and ``close`` do not wait for it for ever; on the short path
(a record going on its run) the batch counts exactly the records it holds.

The exception is injected by a trace function at every point after a call in ``append`` at
which the lock is held, and right after the ``with`` took it: the return of a ``lock.acquire()``
comes before any ``try`` can start, which is why ``append`` takes the lock with ``with``."""

from __future__ import annotations

import dis
import sys
from types import CodeType, FrameType
from typing import Any, Callable, Container

import pytest

from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.clock import ManualClock
from fabric.records import decode_batches

TS = 1_700_000_000_000
SIZE = 30
CODE = RecordAccumulator.append.__code__


class Interrupt(BaseException):
    """What a signal handler raises (as KeyboardInterrupt: not an Exception)."""


def _after_calls() -> set[int]:
    """The offsets in ``append`` right after a call returns (a ``lock.acquire()``'s too), or
    after ``with`` took the lock."""
    ins = list(dis.get_instructions(CODE))
    return {ins[i + 1].offset for i, x in enumerate(ins[:-1]) if x.opname in ("CALL", "BEFORE_WITH")}


AFTER_CALLS = _after_calls()


def _interrupted(acc: RecordAccumulator, point: int, call: Callable[[], Any]) -> bool:
    """Run ``call`` raising ``Interrupt`` at the ``point``-th place after a call in ``append``
    at which the lock is held; False if there are fewer such places."""
    seen = [0]

    def here(offset: int) -> bool:
        if offset in AFTER_CALLS and acc._lock.locked():
            seen[0] += 1
        return seen[0] == point

    return _raising(here, call) or seen[0] >= point


def _interrupted_at(offset: int, call: Callable[[], Any]) -> bool:
    """Run ``call`` raising ``Interrupt`` the first time ``append`` reaches ``offset``."""
    return _raising(offset.__eq__, call)


def _raising(here: Callable[[int], bool], call: Callable[[], Any], codes: Container[CodeType] = (CODE,)) -> bool:
    """Run ``call`` raising ``Interrupt`` (from a trace function) before the first instruction
    of ``append`` (or of a function of ``codes``) at whose offset ``here`` is true (called with
    the offset, and the code object too when ``codes`` is given); True if it was raised."""
    def local(frame: FrameType, event: str, arg: Any) -> Any:
        if event == "opcode" and (here(frame.f_lasti) if codes == (CODE,) else here(frame.f_code, frame.f_lasti)):
            raise Interrupt()
        return local

    def enter(frame: FrameType, event: str, arg: Any) -> Any:
        if frame.f_code in codes:
            frame.f_trace_opcodes = True
            return local
        return None

    old = sys.gettrace()
    sys.settrace(enter)
    try:
        call()
    except Interrupt:
        return True
    finally:
        sys.settrace(old)
    return False


def _accumulator() -> RecordAccumulator:
    acc = RecordAccumulator(AccumulatorSettings(linger_ms=60_000, max_block_ms=0), ManualClock(1000), wake=lambda: None)
    for _ in range(3):  # a run granted room: the next such record takes the short path
        acc.append("t", 0, TS, None, b"v" * (SIZE - 24), None, SIZE)
    assert acc._last.run_records_end > 3
    return acc


RECORDS = {
    "on the run": (None, None),
    "on the run, with a callback": (None, lambda md, err: None),
    "keyed": (b"k", None),
}


@pytest.mark.parametrize("record", sorted(RECORDS))
def test_an_exception_inside_append_lets_the_lock_go_and_leaves_the_batch_whole(record: str) -> None:
    key, callback = RECORDS[record]
    points = 0
    for point in range(1, 50):
        acc = _accumulator()
        hit = _interrupted(acc, point, lambda: acc.append("t", 0, TS, key, b"w" * (SIZE - 24 - len(key or b"")),
                                                         None, SIZE, callback))
        if not hit:
            break
        points += 1
        assert acc._lock.acquire(blocking=False), f"{record}: the lock is held after an exception at point {point}"
        acc._lock.release()
        [b] = acc.close_all()
        acc.take_ready(0)
        records = decode_batches("t", 0, b.build(compression=0, producer_id=-1, producer_epoch=-1, base_sequence=-1))
        assert len(records) == b.record_count and b.size_bytes == SIZE * b.record_count, (record, point)
        assert acc.buffered_bytes == b.size_bytes
    assert points > 0


def test_an_empty_batch_an_interrupted_append_left_is_dropped_not_built(monkeypatch: pytest.MonkeyPatch) -> None:
    """An append cut right after it opened a new batch, before the record went in (a Ctrl-C: 4
    of 1,000 SIGALRM interrupts of a sending loop did it): the open batch holds nothing. The
    sender drops it instead of building it (``build_batch`` of no record raised IndexError on
    the I/O thread, which then stopped and failed every record of the producer, and every later
    send); the records around it go out."""
    from fabric import protocol as P
    from tests.unit.driven_producer import driven_producer
    p = driven_producer(monkeypatch)
    before = p.send("t", b"a", key=b"k", partition=0, timestamp_ms=TS)
    code = RecordAccumulator.append.__code__
    ins = list(dis.get_instructions(code))
    opened = next(i for i, x in enumerate(ins) if x.argval == "_next_batch")
    at = next(ins[i + 1].offset for i in range(opened, len(ins)) if ins[i].opname == "CALL")
    assert _interrupted_at(at, lambda: p.send("t", b"b", key=b"k", partition=1, timestamp_ms=TS))
    [empty] = [b for b in p.accumulator._open.values() if b.partition == 1]
    assert empty.record_count == 0
    p.sender.run_pass()
    assert p.sender.failure is None, p.sender.failure
    after = p.send("t", b"c", key=b"k", partition=1, timestamp_ms=TS)
    p.sender.run_pass()
    sent = [s for c in p.sender.recording.values() for s in c.sent if s[0] == P.PRODUCE]
    assert sent and p.sender.failure is None
    assert not before.done() and not after.done()  # in flight, not failed
    p.sender.stop()
