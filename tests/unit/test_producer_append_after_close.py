"""A record appended after the producer's accumulator closed is refused (``ProducerClosedError``),
never queued. ``Producer.send`` checks "closed" before it appends, outside any lock; a ``close``
from another thread can end between that check and the append, and the I/O thread's last
``take_ready`` (which fails every batch left) can then run before the append: a record queued
after it is never handed out, and its future never completes (``result()`` without a timeout
waits for ever). The accumulator's own flag, set under its lock before that last take, decides:
an append before it is taken (and failed) with the rest, one after it is refused."""

from __future__ import annotations

import pytest

from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.clock import ManualClock
from fabric.errors import ProducerClosedError
from fabric.records import pack_values

TS = 1_700_000_000_000


def _accumulator() -> RecordAccumulator:
    return RecordAccumulator(AccumulatorSettings(linger_ms=60_000, max_block_ms=0), ManualClock(1000),
                             wake=lambda: None)


def _last_take(acc: RecordAccumulator) -> list:
    """What the I/O thread does as it ends: close, then take (and fail) every batch left."""
    acc.close()
    return acc.take_ready(1 << 62)


@pytest.mark.parametrize("run", [0, 1, 5], ids=["nothing-before", "one-before", "a-run-before"])
def test_an_append_after_the_close_is_refused_not_queued_for_nobody(run: int) -> None:
    acc = _accumulator()
    before = [acc.append("t", 0, TS, None, b"v" * 10, None, 30) for _ in range(run)]
    taken = _last_take(acc)
    assert sum(b.record_count for b in taken) == run  # every record before the close is taken
    assert all(f.batch in taken for f in before)
    with pytest.raises(ProducerClosedError):
        acc.append("t", 0, TS, None, b"v" * 10, None, 30)  # a run's record: the short path's shape
    with pytest.raises(ProducerClosedError):
        acc.append("t", 1, TS, b"k", b"v", None, 30)
    assert acc.take_ready(1 << 62) == []
    assert acc.buffered_bytes == sum(b.size_bytes for b in taken)  # nothing counted for a refused one


def test_a_send_many_after_the_close_is_refused_with_what_it_queued() -> None:
    acc = _accumulator()
    _last_take(acc)
    values = [b"v" * 10] * 4
    with pytest.raises(ProducerClosedError) as e:
        acc.append_many("t", 0, TS, values, 30, lambda a, b: pack_values(values[a:b], TS))
    assert e.value.segments == []  # type: ignore[attr-defined]
    assert acc.take_ready(1 << 62) == []


def test_a_send_after_the_io_thread_failed_everything_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The producer's own path: its I/O thread ends (``stop``: it fails every batch left) while a
    ``send`` has passed its "closed" check -- modelled by stopping the sender alone, so the
    producer has not marked itself closed. The send is refused; before, it was queued after the
    last take and its future never completed."""
    from tests.unit.driven_producer import driven_producer
    p = driven_producer(monkeypatch)
    before = p.send("t", b"x", partition=0)
    p.sender.stop()
    assert isinstance(before.exception(timeout=0), ProducerClosedError)
    with pytest.raises(ProducerClosedError):
        p.send("t", b"y", partition=0)
    with pytest.raises(ProducerClosedError):
        p.send_many("t", [b"a", b"b"], partition=1)
