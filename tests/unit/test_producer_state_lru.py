"""The idempotent-producer table is bounded (PRODUCERS_MAX) and, when full, evicts the least
recently used producer -- not the oldest inserted -- so a busy producer keeps its dedup state."""

from __future__ import annotations

import pytest

from fabric.errors import UnknownProducerIdError
from nodes.broker import producers as producers_module
from nodes.broker.producers import ProducerStateTable


def test_a_full_table_evicts_the_least_recently_used_producer(monkeypatch) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 3)
    t = ProducerStateTable()
    for pid in (1, 2, 3):
        t.update(pid, 0, 0, 1, base_offset=pid)
    t.update(1, 0, 1, 1, base_offset=10)            # producer 1 (inserted first) keeps writing
    t.update(4, 0, 0, 1, base_offset=11)            # full: evicts 2, the least recently used
    assert len(t) == 3
    assert t.check(1, 0, 1, 1) == 10                # producer 1's retry is still recognised
    assert t.check(2, 0, 0, 1, possibly_written=False) is None  # 2 was evicted: its state is gone
    with pytest.raises(UnknownProducerIdError):     # (and a retry of it cannot be judged)
        t.check(2, 0, 0, 1)
    assert t.check(3, 0, 0, 1) == 3


def test_a_retry_check_also_counts_as_use(monkeypatch) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", 2)
    t = ProducerStateTable()
    t.update(1, 0, 0, 1, base_offset=0)
    t.update(2, 0, 0, 1, base_offset=1)
    assert t.check(1, 0, 0, 1) == 0                 # a retry from 1: recently used
    t.update(3, 0, 0, 1, base_offset=2)             # evicts 2
    assert t.check(1, 0, 0, 1) == 0
    assert t.check(2, 0, 0, 1, possibly_written=False) is None
