"""Retention never deletes records above the high watermark (Kafka deletes only segments below
it): records a follower has not fetched yet are not acknowledged, and deleting them on the
leader would make the follower jump to the new log start (reset_to), its fetch would count as
having them, the HW would pass them, and parked acks=all writes would be acknowledged for
records that no replica holds and no consumer can read.

Real BrokerCore on the memory engine, retention applied by its timer function.
"""

from __future__ import annotations

from pathlib import Path

from tests.unit.fakes import broker_core, make_batch

BATCHES = 8


def test_retention_on_a_leader_keeps_everything_above_the_high_watermark(tmp_path: Path) -> None:
    core = broker_core(tmp_path, 1)
    part = core.open_partition("t", 0, {"retention.bytes": 1})  # far below one burst
    part.become_leader(1, [1, 2], [1, 2], now_ms=0)
    for i in range(BATCHES):
        part.append_as_leader([make_batch(10, tag=f"b{i}-")], 1 << 20)
    part.record_follower_fetch(2, 10, now_ms=1)  # the ISR follower has the first batch only
    assert part.high_watermark == 10
    core.apply_retention()
    assert part.log_start_offset <= part.high_watermark, (
        f"retention deleted up to {part.log_start_offset}, above the HW {part.high_watermark}: "
        "records not yet on the ISR are gone")
    assert part.log_start_offset == 10, "retention did not run at all"
