"""The high watermark survives a restart (Kafka's replication-offset-checkpoint), through the
real BrokerCore on the segment engine: a "restart" is a new core on the same directory.

Before, a leader restarted with the whole cluster served HW 0 until its followers fetched:
"latest" LIST_OFFSETS answered 0 (consumers resetting to latest re-read the whole log) and
offset commits were refused as out of range. Now each replica writes its HW to a small file in
the partition directory (on the broker's timer, only when it moved, and at close) and starts
from it, capped by what its log holds -- and never outside its log: a follower that reset its
log to the leader's log start (epochs retained away) and was killed before the HW timer
rewrote the file restarts with a checkpoint below its new log start; elected, it serves its
log start, never an offset it does not hold."""

from __future__ import annotations

from pathlib import Path

from fabric.records import build_batch
from nodes.broker.core import BrokerCore
from nodes.broker.hw_checkpoint import HW_CHECKPOINT_FILE
from nodes.broker.partition import Partition
from tests.unit.fakes import broker_core

LEADER, FOLLOWER = 1, 2
KEY = ("t", 0)
RESET_TO = 50


def _start(directory: Path) -> BrokerCore:
    """A broker core (re)started on ``directory``: it opens the partitions it finds there."""
    core = broker_core(directory, LEADER, engine="segment")
    core.open_existing()
    return core


def _checkpoint(core: BrokerCore) -> Path:
    return core.dirs.path(KEY) / "segment" / HW_CHECKPOINT_FILE


def _committed_leader(directory: Path, records: int = 10) -> tuple[BrokerCore, Partition]:
    core = _start(directory)
    part = core.open_partition(*KEY, {})
    part.become_leader(1, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    recs = [(1_700_000_000_000, None, b"v%d" % i, None) for i in range(records)]
    assert part.append_as_leader([build_batch(recs)], 1 << 20)[0][0][1] == 0
    assert part.record_follower_fetch(FOLLOWER, records, now_ms=10)
    assert part.high_watermark == records
    return core, part


def test_leader_serves_its_high_watermark_after_a_clean_restart(tmp_path: Path) -> None:
    _committed_leader(tmp_path)[0].close()
    again = _start(tmp_path)
    try:
        again.partitions[KEY].become_leader(2, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
        assert again.list_offset(KEY, -1) == (0, 10), "latest must not answer 0 before the followers fetch"
    finally:
        again.close()


def test_the_broker_timer_checkpoints_before_a_kill(tmp_path: Path) -> None:
    core, part = _committed_leader(tmp_path)
    part.engine.flush()
    core.checkpoint_high_watermarks()
    assert _checkpoint(core).read_text().split() == ["10"]
    again = _start(tmp_path)  # as after kill -9: the first process never closed
    try:
        again.partitions[KEY].become_leader(2, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
        assert again.partitions[KEY].high_watermark == 10
    finally:
        again.close()


def test_restored_high_watermark_is_capped_by_the_log(tmp_path: Path) -> None:
    core, _ = _committed_leader(tmp_path)
    core.close()
    _checkpoint(core).write_text("5000\n")  # more than the log holds
    again = _start(tmp_path)
    try:
        assert again.partitions[KEY].high_watermark == 10
    finally:
        again.close()
    _checkpoint(core).write_text("garbage")  # unreadable: start from 0, as before
    again = _start(tmp_path)
    try:
        assert again.partitions[KEY].high_watermark == 0
    finally:
        again.close()


def test_a_stale_checkpoint_below_a_reset_log_start_is_capped_into_the_log(tmp_path: Path) -> None:
    core, part = _committed_leader(tmp_path)  # HW 10
    core.checkpoint_high_watermarks()
    part.become_follower(FOLLOWER, 2, [LEADER, FOLLOWER], [FOLLOWER])
    part.reset_to(RESET_TO)
    assert _checkpoint(core).read_text().split() == ["10"]  # killed before the timer
    again = _start(tmp_path)
    try:
        p = again.partitions[KEY]
        assert p.log_start_offset == RESET_TO and p.log_end_offset == RESET_TO
        assert p.high_watermark <= p.log_end_offset
        p.become_leader(3, [LEADER, FOLLOWER], [LEADER], now_ms=0)
        assert again.list_offset(KEY, -1) == (0, RESET_TO)
    finally:
        again.close()
