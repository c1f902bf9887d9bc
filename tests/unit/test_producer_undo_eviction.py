"""ProducerStateTable.undo_write is not exact when a producer the write touched is
then evicted in the same write (more new producers in one group commit than the table has
room for): the evicted entry -- already holding the failed batch -- is put back over the
saved copy, and a new producer evicted in the same write is brought back to life."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.api import StorageFull
from fabric import protocol as P
from nodes.broker import producers as producers_mod
from tests.unit.fakes import broker_core, make_batch


def _leader(tmp_path: Path):  # noqa: ANN202
    core = broker_core(tmp_path, 1)
    part = core.open_partition("t", 0, {})
    part.become_leader(1, [1], [1], now_ms=0)
    return part


def _full(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
    raise StorageFull("No space left on device")


def test_a_producer_touched_then_evicted_in_a_failed_write_keeps_no_batch_of_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producers_mod, "PRODUCERS_MAX", 2)
    part = _leader(tmp_path)
    part.append_as_leader([make_batch(3, pid=1, epoch=0, seq=0), make_batch(1, pid=2, epoch=0, seq=0)], 1 << 20)
    assert part.log_end_offset == 4
    monkeypatch.setattr(part.engine, "append_many", _full)
    results, _ = part.append_as_leader([make_batch(2, pid=1, epoch=0, seq=3, tag="lost"),  # pid 1 saved, MRU
                                        make_batch(1, pid=3, epoch=0, seq=0),   # evicts pid 2
                                        make_batch(1, pid=4, epoch=0, seq=0)],  # evicts pid 1 (touched)
                                       1 << 20, [True, False, False])  # first sends of the new producers
    assert all(code == P.STORAGE_ERROR for _, code, _ in results)
    monkeypatch.undo()
    # the client retries pid 1's batch (its send failed: possibly written as far as it knows)
    [(offset, code, message)], _ = part.append_as_leader([make_batch(2, pid=1, epoch=0, seq=3, tag="lost")],
                                                         1 << 20, [True])
    assert (code, message) != (0, "duplicate"), (
        f"the retry is answered a duplicate at offset {offset}, which the log (end {part.log_end_offset}) "
        "never held: acknowledged, never written")
    assert (offset, code, part.log_end_offset) == (4, 0, 6)


def test_a_new_producer_evicted_in_a_failed_write_is_not_brought_back(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(producers_mod, "PRODUCERS_MAX", 2)
    part = _leader(tmp_path)
    part.append_as_leader([make_batch(1, pid=1, epoch=0, seq=0), make_batch(1, pid=2, epoch=0, seq=0)], 1 << 20)
    monkeypatch.setattr(part.engine, "append_many", _full)
    part.append_as_leader([make_batch(1, pid=3, epoch=0, seq=0, tag="x"),  # new, evicts 1
                           make_batch(1, pid=4, epoch=0, seq=0),             # new, evicts 2
                           make_batch(1, pid=5, epoch=0, seq=0)], 1 << 20,   # new, evicts 3
                          [False, False, False])  # first sends
    assert len(part.producers) <= producers_mod.PRODUCERS_MAX, f"{len(part.producers)} producers in a table of 2"
    monkeypatch.undo()
    [(offset, code, message)], _ = part.append_as_leader([make_batch(1, pid=3, epoch=0, seq=0, tag="x")],
                                                         1 << 20, [True])
    assert (code, message) != (0, "duplicate"), (
        f"producer 3, never written, is answered a duplicate at offset {offset} (log end {part.log_end_offset})")
