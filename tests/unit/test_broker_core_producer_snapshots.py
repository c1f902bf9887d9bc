"""The broker's periodic producer-state snapshots are spread over reactor passes.

Partitions opened together start their snapshot clocks at the same HW-checkpoint tick, so a
minute later every one written to meanwhile is due at the same tick. Each snapshot encodes its
table on the reactor (about 50 ms for 10,000 producers, 5 ms for 1,000: a topic of 1,000
partitions that 1,000 idempotent producers all write to held the reactor 5 s in one tick, every
minute). The tick only finds what is due; each pass of the snapshot timer writes at most
PRODUCER_SNAPSHOT_PRODUCERS_PER_PASS_MAX producers' worth (at least one partition), until every
due partition has its snapshot. The real BrokerCore on the segment engine; the clock is manual.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fabric.clock import ManualClock
from nodes.broker import producer_snapshots
from nodes.broker.core import BrokerCore
from tests.unit.fakes import broker_core, make_batch

PARTITIONS = 12
PRODUCERS = 5  # per partition
BATCH_MAX = 1024 * 1024


def _snapshotted(core: BrokerCore) -> int:
    """How many partitions have a snapshot file."""
    return sum(any(n.endswith(producer_snapshots.SNAPSHOT_SUFFIX) for n in os.listdir(core.dirs.path(key) / "segment"))
               for key in core.partitions)


def _written_to(core: BrokerCore) -> None:
    for p in range(PARTITIONS):
        part = core.open_partition("t", p, {})
        part.become_leader(1, [1], [1], now_ms=0)
        for pid in range(PRODUCERS):
            (result,), _ = part.append_as_leader([make_batch(1, pid=pid, epoch=0, seq=0)], BATCH_MAX, [False])
            assert result[1] == 0, result


def test_partitions_due_at_one_tick_are_snapshotted_a_budget_per_pass(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # a pass takes three of these partitions (PRODUCERS producers and one file each)
    per_partition = PRODUCERS + producer_snapshots.PRODUCER_SNAPSHOT_FILE_PRODUCERS
    monkeypatch.setattr(producer_snapshots, "PRODUCER_SNAPSHOT_PRODUCERS_PER_PASS_MAX", 3 * per_partition)
    clock = ManualClock()
    core = broker_core(tmp_path, engine="segment", clock=clock)
    try:
        _written_to(core)
        core.checkpoint_high_watermarks()  # starts every partition's snapshot clock
        assert _snapshotted(core) == 0
        clock.advance(producer_snapshots.PRODUCER_SNAPSHOT_INTERVAL_MS)
        core.checkpoint_high_watermarks()
        assert _snapshotted(core) <= 3, "every partition due was snapshotted in one tick"
        passes = 0
        while _snapshotted(core) < PARTITIONS:
            core.snapshot_producers_due()
            passes += 1
            assert passes <= PARTITIONS, "the due partitions are not all snapshotted"
        assert passes == PARTITIONS // 3 - 1
        core.snapshot_producers_due()  # nothing is due any more: nothing to do
    finally:
        core.close()
