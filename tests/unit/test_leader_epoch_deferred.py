"""A new leader checkpoints its epoch with its first batch, not when it takes over.

Writing (epoch, log end) at every ``become_leader`` cost two fsyncs per partition on the
reactor: 666 for a broker that took 333 leaderships at a topic's creation or a failover. The
entry is now written before the epoch's first batch (nodes/broker/partition.py). What must not
change: every answer the leader gives a follower's fetch (``Partition.divergence``: the latest
epoch's end is the log end whether or not an empty entry for it is there, and the leader's own
epoch counts before its entry is written), and the ISR rule that a follower joins only from the
log end the leader had when its epoch began (Kafka's leader-epoch start offset), which used to
be read from that entry."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024
LAG_MS = 10_000


def leader_with_history(epochs_and_batches: list[tuple[int, int]], new_epoch: int) -> Partition:
    """Broker 1 led each (epoch, batches of 2 records) in turn, then took ``new_epoch``."""
    p = Partition("t", 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    for epoch, batches in epochs_and_batches:
        p.become_leader(epoch, [1, 2, 3], [1], now_ms=0)
        for _ in range(batches):
            assert p.append_as_leader([make_batch(2)], BATCH_MAX)[0][0][1] == 0
    p.become_leader(new_epoch, [1, 2, 3], [1], now_ms=0)
    return p


@pytest.mark.parametrize("history", [[], [(0, 3)], [(0, 3), (2, 2)], [(1, 0), (3, 1)], [(0, 2), (4, 0)]])
def test_a_new_leader_answers_followers_as_if_its_epoch_were_written(history: list[tuple[int, int]]) -> None:
    new_epoch = 6
    deferred = leader_with_history(history, new_epoch)
    written = leader_with_history(history, new_epoch)
    written.epochs.assign(new_epoch, written.log_end_offset)  # what become_leader used to write
    assert deferred.epochs.latest_epoch < new_epoch
    for last_epoch in range(-1, new_epoch + 1):
        for fetch_offset in range(0, deferred.log_end_offset + 2):
            assert deferred.divergence(fetch_offset, last_epoch) == written.divergence(fetch_offset, last_epoch), \
                (last_epoch, fetch_offset)


def test_a_follower_joins_the_isr_only_from_the_log_end_the_leaders_epoch_began_at() -> None:
    p = Partition("t", 0, 1, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    p.become_leader(0, [1, 2, 3], [1, 3], now_ms=0)
    for _ in range(5):
        p.append_as_leader([make_batch(1)], BATCH_MAX)
    p.record_follower_fetch(3, 2, now_ms=0)
    assert p.high_watermark == 2
    p.become_leader(1, [1, 2, 3], [1, 3], now_ms=1)  # its epoch begins at 5, nothing written in it
    p.record_follower_fetch(3, 2, now_ms=2)
    p.record_follower_fetch(2, 3, now_ms=2)  # at or above the HW, below where epoch 1 began
    assert p.high_watermark == 2 and p.epochs.entries == [(0, 0)]
    assert p.isr_changes(now_ms=3, lag_time_max_ms=LAG_MS) is None, "joined without epoch 0's last records"
    p.record_follower_fetch(2, 5, now_ms=4)
    assert p.isr_changes(now_ms=5, lag_time_max_ms=LAG_MS) == {1, 2, 3}


def test_a_leader_led_again_in_its_epoch_after_a_crash_admits_no_follower_below_its_log_end(tmp_path: Path) -> None:
    """The HW checkpoint (every 5 s, no fsync) may be behind the HW that producers were
    answered at: counting the epoch from its older entry let a follower that lacks committed
    records join the ISR, and be elected next (KAFKA-7128's case)."""
    def replica() -> Partition:
        return Partition("t", 0, 1, SegmentEngine(str(tmp_path / "log"), EngineConfig(fsync="never")), str(tmp_path))
    p = replica()
    p.become_leader(0, [1, 2, 3], [1, 3], now_ms=0)
    p.append_as_leader([make_batch(2)], BATCH_MAX)  # epoch 0: [0, 2)
    p.become_leader(1, [1, 2, 3], [1, 3], now_ms=0)
    p.append_as_leader([make_batch(2)], BATCH_MAX)  # epoch 1 from 2
    p.record_follower_fetch(3, 2, now_ms=1)
    p.checkpoint_high_watermark()  # the periodic write: HW 2
    for _ in range(2):
        p.append_as_leader([make_batch(2)], BATCH_MAX)  # epoch 1 up to 8
    p.record_follower_fetch(3, 8, now_ms=2)
    assert p.high_watermark == 8  # [0, 8) committed
    p.engine.close()  # a crash before the next HW checkpoint
    again = replica()
    assert again.high_watermark == 2 and again.log_end_offset == 8
    again.become_leader(1, [1, 2, 3], [1, 3], now_ms=3)  # led again at epoch 1
    again.record_follower_fetch(2, 4, now_ms=4)  # broker 2 holds only [0, 4)
    new_isr = again.isr_changes(now_ms=5, lag_time_max_ms=LAG_MS)
    assert new_isr is None or 2 not in new_isr, f"joined the ISR without committed records: {new_isr}"
