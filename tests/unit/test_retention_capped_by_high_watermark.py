"""Retention never deletes records above the high watermark (Kafka deletes only segments below
it): records a follower has not fetched yet are not acknowledged, and deleting them on the
leader would make the follower jump to the new log start (reset_to), its fetch would count as
having them, the HW would pass them, and parked acks=all writes would be acknowledged for
records that no replica holds and no consumer can read.

Real ``Partition`` on the memory engine, retention applied by the broker's timer function.
"""

from __future__ import annotations

from types import SimpleNamespace


from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric.clock import ManualClock
from nodes.broker.node import Broker
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024
BATCHES = 8


def test_retention_on_a_leader_keeps_everything_above_the_high_watermark() -> None:
    engine = MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX))
    part = Partition("t", 0, 1, engine, None)
    part.become_leader(1, [1, 2], [1, 2], now_ms=0)
    for i in range(BATCHES):
        part.append_as_leader([make_batch(10, tag=f"b{i}-")], BATCH_MAX)
    part.record_follower_fetch(2, 10, now_ms=1)  # the ISR follower has the first batch only
    assert part.high_watermark == 10
    engine.config.retention_bytes = 1  # e.g. retention.bytes far below one burst
    Broker._apply_retention(SimpleNamespace(partitions={("t", 0): part}, clock=ManualClock()))
    assert part.log_start_offset <= part.high_watermark, (
        f"retention deleted up to {part.log_start_offset}, above the HW {part.high_watermark}: "
        "records not yet on the ISR are gone")
