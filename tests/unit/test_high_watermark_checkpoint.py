"""The high watermark survives a restart (Kafka's replication-offset-checkpoint).

Before, a leader restarted with the whole cluster served HW 0 until its followers fetched:
"latest" LIST_OFFSETS answered 0 (consumers resetting to latest re-read the whole log) and
offset commits were refused as out of range. Now each replica writes its HW to a small file in
the partition directory (on the broker's timer, only when it moved, and at close) and starts
from it, capped by what its log holds."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from engines.api import EngineConfig
from engines.segment import SegmentEngine
from fabric.records import build_batch
from nodes.broker.node import Broker
from nodes.broker.partition import HW_CHECKPOINT_FILE, Partition

BATCH_MAX = 1024 * 1024
LEADER, FOLLOWER = 1, 2


def _open(directory: Path) -> Partition:
    engine = SegmentEngine(str(directory / "log"), EngineConfig(fsync="never", batch_bytes_max=BATCH_MAX))
    return Partition("t", 0, LEADER, engine, str(directory))


def _committed_leader(directory: Path, records: int = 10) -> Partition:
    part = _open(directory)
    part.become_leader(1, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    recs = [(1_700_000_000_000, None, b"v%d" % i, None) for i in range(records)]
    assert part.append_as_leader([build_batch(recs)], BATCH_MAX)[0][0][1] == 0
    assert part.record_follower_fetch(FOLLOWER, records, now_ms=10)
    assert part.high_watermark == records
    return part


def test_leader_serves_its_high_watermark_after_a_clean_restart(tmp_path: Path) -> None:
    _committed_leader(tmp_path).close()
    again = _open(tmp_path)
    try:
        again.become_leader(2, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
        assert again.offset_for_spec(-1) == 10, "latest must not answer 0 before the followers fetch"
    finally:
        again.close()


def test_the_broker_timer_checkpoints_before_a_kill(tmp_path: Path) -> None:
    part = _committed_leader(tmp_path)
    part.engine.flush()
    Broker._checkpoint_high_watermarks(SimpleNamespace(partitions={("t", 0): part}))
    assert (tmp_path / HW_CHECKPOINT_FILE).read_text().split() == ["10"]
    again = _open(tmp_path)  # as after kill -9: the first process never closed
    try:
        again.become_leader(2, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
        assert again.high_watermark == 10
    finally:
        again.close()


def test_restored_high_watermark_is_capped_by_the_log(tmp_path: Path) -> None:
    _committed_leader(tmp_path).close()
    (tmp_path / HW_CHECKPOINT_FILE).write_text("5000\n")  # more than the log holds
    again = _open(tmp_path)
    try:
        assert again.high_watermark == 10
    finally:
        again.close()
    (tmp_path / HW_CHECKPOINT_FILE).write_text("garbage")  # unreadable: start from 0, as before
    again = _open(tmp_path)
    try:
        assert again.high_watermark == 0
    finally:
        again.close()
