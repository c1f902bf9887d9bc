"""``RecordAccumulator.append``'s short path: a record that goes on its batch's run (keyless,
header-less, no callback, the run's timestamp and size) within room granted and reserved when
the run began (``_grant``), checking nothing else. Whatever the mix of records and limits, an
accumulator with it fills, closes and counts batches exactly as one whose every record goes
the long way (``_grant`` doing nothing: the path every record took before), the buffer bound
holds at the same record, and what it reports (``buffered_bytes``, each taken batch's
``size_bytes``) counts records, never room held for them."""

from __future__ import annotations

import random

import pytest

from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.futures import RecordFuture
from fabric.clock import ManualClock
from fabric.errors import BufferExhaustedError
from fabric.records import pack_values

TS = 1_700_000_000_000


def _accumulator(long_way: bool = False, **settings: int) -> RecordAccumulator:
    acc = RecordAccumulator(AccumulatorSettings(**{"linger_ms": 60_000, "max_block_ms": 0, **settings}),
                            ManualClock(1000), wake=lambda: None)
    if long_way:
        acc._grant = lambda b, bytes_max: None  # type: ignore[method-assign]
    return acc


def _workload(seed: int) -> tuple[dict, list]:
    """Settings and a list of operations: appends (mostly runs of one size and timestamp),
    now and then a keyed or header record, another size, a callback, a new millisecond, a
    ``send_many`` run, a take of the ready batches, a flush, a release of a taken batch, a
    lower topic bound, a look at ``buffered_bytes``."""
    rnd = random.Random(seed)
    settings = {"batch_records_max": rnd.choice([2, 7, 50, 10_000]),
                "batch_bytes_max": rnd.choice([60, 500, 4000, 1 << 20]),
                "buffer_bytes_max": rnd.choice([300, 3000, 64 << 20])}
    ops: list = []
    ts, size = TS, rnd.choice([25, 30, 124])
    for n in range(rnd.randint(50, 2500)):
        r = rnd.random()
        if r < 0.01:
            ts += rnd.choice([1, -2])
        elif r < 0.015:
            size = rnd.choice([25, 30, 124, 1])
        elif r < 0.047:
            ops.append(_other_operation(rnd, r, ts, size))
            continue
        key = b"k" if r > 0.99 else None
        headers = (("h", b""),) if 0.98 < r <= 0.99 else None
        callback = 0.97 < r <= 0.98
        ops.append(("append", rnd.choice([0, 0, 0, 1]), ts, key, b"v" * (size - 24), headers, size, callback))
    return settings, ops


def _other_operation(rnd: random.Random, r: float, ts: int, size: int) -> tuple:
    """An operation other than an append, for ``r`` in [0.015, 0.047)."""
    if r < 0.02:
        return "many", rnd.randint(1, 40), ts, size
    if r < 0.025:
        return ("take",)
    if r < 0.035:
        return ("release",)
    if r < 0.037:
        return "bound", rnd.choice([80, 700])
    return ("count",) if r < 0.045 else ("flush",)


def _run(settings: dict, ops: list, long_way: bool) -> list:
    """Everything the accumulator shows: each append's (batch number, index) or the error it
    raised, ``buffered_bytes`` now and then, each batch taken: its records' count,
    ``size_bytes`` and bytes, and the delivery callbacks' reports once it completes."""
    acc = _accumulator(long_way, **settings)
    seen: list = []
    numbers: dict[int, int] = {}
    kept: list = []
    taken: list = []
    reports: list = []

    def number(b: object) -> int:
        if id(b) not in numbers:
            numbers[id(b)] = len(numbers)
            kept.append(b)  # (alive to the end: a freed batch's id may be another's)
        return numbers[id(b)]

    def take(batches: list) -> None:
        for b in batches:
            seen.append(("batch", number(b), b.record_count, b.size_bytes,
                         b.build(compression=0, producer_id=-1, producer_epoch=-1, base_sequence=-1)))
            b.complete(1000 * number(b), None)  # its records' callbacks: offset 1000 x batch number + index
            taken.append(b)

    for op in ops:
        if op[0] == "append":
            _, partition, ts, key, value, headers, size, callback = op
            on_delivery = (lambda md, err: reports.append(md)) if callback else None
            try:
                f = acc.append("t", partition, ts, key, value, headers, size, on_delivery)
                seen.append((number(f.batch), f.index))
            except BufferExhaustedError:
                seen.append("full")
        elif op[0] == "many":
            _, n, ts, size = op
            values = [b"m" * (size - 24)] * n
            try:
                segments = acc.append_many("t", 0, ts, values, size, lambda a, b: pack_values(values[a:b], ts))
                seen.append([(number(b), first, count) for b, first, count in segments])
            except BufferExhaustedError:
                seen.append("many full")
        elif op[0] == "take":
            take(acc.take_ready(1 << 62))
        elif op[0] == "flush":  # every open batch closes
            acc.close_all()
            take(acc.take_ready(0))
        elif op[0] == "release" and taken:
            acc.release(taken.pop(0))
        elif op[0] == "bound":
            acc.set_topic_bytes_max({"t": op[1]})
        elif op[0] == "count":  # (it gives the room back: not after every operation)
            seen.append(acc.buffered_bytes)
    take(acc.take_ready(1 << 62))
    return seen + reports


@pytest.mark.parametrize("seed", range(60))
def test_the_short_path_fills_closes_and_counts_batches_as_the_long_way_does(seed: int) -> None:
    settings, ops = _workload(seed)
    assert _run(settings, ops, long_way=False) == _run(settings, ops, long_way=True)


def test_room_granted_is_reserved_in_the_buffer_and_given_back_when_the_run_ends() -> None:
    acc = _accumulator(buffer_bytes_max=100 * 30)
    for _ in range(5):
        acc.append("t", 0, TS, None, b"v" * 6, None, 30)
    b = acc._last
    assert b.run_records_end > 5 and b.size_bytes > 5 * 30  # room held beyond the records
    assert acc.buffered_bytes == 5 * 30  # reported: the records only (the room is given back)
    assert b.run_records_end <= 5 and b.size_bytes == 5 * 30
    acc.append("t", 0, TS, None, b"v" * 6, None, 30)  # a new grant
    acc.append("t", 1, TS, None, b"v" * 6, None, 30)  # another batch: the first one's room goes back
    assert b.run_records_end <= 6 and b.size_bytes == 6 * 30
    [first, second] = acc.take_ready(1 << 62)
    assert (first.size_bytes, second.size_bytes, acc.buffered_bytes) == (6 * 30, 30, 7 * 30)


def test_the_buffer_bound_stops_the_short_path_at_the_record_that_does_not_fit() -> None:
    """With ``max_block_ms`` 0, the record that would take the buffer over its bound raises at
    once; every record before it was queued."""
    acc = _accumulator(buffer_bytes_max=1000, batch_bytes_max=1 << 20)
    futures = []
    with pytest.raises(BufferExhaustedError):
        for _ in range(100):
            futures.append(acc.append("t", 0, TS, None, b"v" * 6, None, 30))
    assert len(futures) == 1000 // 30 and acc.buffered_bytes == 33 * 30


def test_send_returns_record_futures_and_one_can_still_be_made_from_a_batch_and_index() -> None:
    acc = _accumulator()
    fs = [acc.append("t", 0, TS, None, b"v", None, 25) for _ in range(3)]
    assert all(isinstance(f, RecordFuture) for f in fs) and [f.index for f in fs] == [0, 1, 2]
    made = RecordFuture(fs[2].batch, 2)
    [b] = acc.take_ready(1 << 62)
    b.complete(40, None)
    assert made.result(0).offset == fs[2].result(0).offset == 42 and made.partition == 0


def test_a_run_granted_room_while_an_append_waited_for_space_gives_it_back() -> None:
    """While an append waits for buffer space (its lock let go), another thread's records start
    a run with room granted on another partition: the waiter, once it goes on, gives that room
    back before it looks at the buffer and the batches."""
    acc = _accumulator(buffer_bytes_max=10 * 30, max_block_ms=1000)
    for _ in range(10):
        acc.append("t", 0, TS, None, b"v" * 6, None, 30)  # the buffer is full
    [full] = acc.take_ready(1 << 62)
    lock = acc._lock

    class Meanwhile:
        """The space condition: its wait is when the other thread runs."""

        def wait(self, timeout: float) -> bool:
            lock.release()
            acc.release(full)
            for _ in range(3):
                acc.append("t", 2, TS, None, b"v" * 6, None, 30)
            lock.acquire()
            return True

        def notify_all(self) -> None:
            pass

    acc._space = Meanwhile()  # type: ignore[assignment]
    acc.append("t", 1, TS, None, b"v" * 6, None, 30)
    batches = acc.take_ready(1 << 62)
    assert sorted((b.partition, b.record_count, b.size_bytes) for b in batches) == [(1, 1, 30), (2, 3, 90)]
    assert acc.buffered_bytes == 4 * 30


def test_an_append_that_waited_for_space_while_its_batch_was_taken_starts_the_next_one() -> None:
    """The batch an append looked at before it waited for space may be taken meanwhile (the
    I/O thread's ``take_ready``): once it goes on, the record goes to a new batch."""
    acc = _accumulator(buffer_bytes_max=10 * 30, max_block_ms=1000)
    for _ in range(9):
        acc.append("t", 0, TS, b"k", b"v" * 5, None, 30)  # keyed: no room granted
    [full] = acc.take_ready(1 << 62)
    acc.append("t", 0, TS, b"k", b"v" * 5, None, 30)  # the buffer is full; partition 0's open batch holds it
    lock = acc._lock
    taken: list = []

    class Meanwhile:
        def wait(self, timeout: float) -> bool:
            lock.release()
            taken.extend(acc.take_ready(1 << 62))
            acc.release(full)
            lock.acquire()
            return True

        def notify_all(self) -> None:
            pass

    acc._space = Meanwhile()  # type: ignore[assignment]
    f = acc.append("t", 0, TS, b"k", b"v" * 5, None, 30)
    [then] = taken
    assert f.batch is not then and then.record_count == 1
    assert acc.take_ready(1 << 62) == [f.batch] and f.batch.record_count == 1
