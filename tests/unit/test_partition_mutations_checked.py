"""Every change of a partition goes through a ``Partition`` method that checks
``log_start_offset <= high_watermark <= log_end_offset`` afterwards -- retention, the follower's
ISR, the partition epoch and the leader's pending ISR proposals included (the broker core and
the ISR proposer used to change these fields from outside, unchecked). A retention that moved
the log start past the high watermark (an engine with a bug) used to go unnoticed."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric.clock import ManualClock
from nodes.broker.partition import Partition
from tests.unit.fakes import broker_core, make_batch

BATCH_MAX = 1024 * 1024
ME, OTHER = 1, 2


class RetentionPastTheHighWatermark(MemoryEngine):
    """An engine with a bug: retention ignores the upper bound it is given."""

    def apply_retention(self, now_ms: int, upper_bound_offset: int | None = None) -> int:
        return super().apply_retention(now_ms, None)


def _leader(engine: MemoryEngine) -> Partition:
    part = Partition("t", 0, ME, engine, None)
    part.become_leader(1, [ME, OTHER], [ME, OTHER], now_ms=0)
    for _ in range(3):
        part.append_as_leader([make_batch(2)], BATCH_MAX)
    return part


def test_retention_is_checked_against_the_high_watermark() -> None:
    engine = RetentionPastTheHighWatermark("", EngineConfig(batch_bytes_max=BATCH_MAX, retention_ms=0))
    part = _leader(engine)
    assert part.high_watermark == 0  # the follower has fetched nothing: nothing is deletable
    with pytest.raises(AssertionError, match="high watermark"):
        part.apply_retention(now_wall_ms=2_000_000_000_000)


def test_the_broker_core_applies_retention_through_the_partition(tmp_path: Path) -> None:
    core = broker_core(tmp_path, clock=ManualClock(wall_offset_ms=2_000_000_000_000))
    part = core.open_partition("t", 0, {})
    part.engine = RetentionPastTheHighWatermark("", EngineConfig(batch_bytes_max=BATCH_MAX, retention_ms=0))
    part.become_leader(1, [1, OTHER], [1, OTHER], now_ms=0)
    part.append_as_leader([make_batch(2)], BATCH_MAX)
    part.append_as_leader([make_batch(2)], BATCH_MAX)
    with pytest.raises(AssertionError):
        core.apply_retention()


@pytest.mark.parametrize("change", ["follow_isr", "set_partition_epoch", "propose_isr", "drop_proposed_isr"])
def test_every_isr_and_epoch_change_checks_the_offsets(change: str) -> None:
    part = _leader(MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)))
    part.high_watermark = part.log_end_offset + 1  # broken by a bug elsewhere
    args = {"follow_isr": ([ME],), "set_partition_epoch": (3,), "propose_isr": ({ME},), "drop_proposed_isr": ()}
    with pytest.raises(AssertionError):
        getattr(part, change)(*args[change])


def test_a_refused_proposal_is_dropped_through_the_partition() -> None:
    part = _leader(MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)))
    part.propose_isr({ME})
    assert part.pending_isr == {ME}
    part.drop_proposed_isr()
    assert part.pending_isr is None
