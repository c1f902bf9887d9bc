"""A checkpointed high watermark never makes a replica serve outside its log: a follower that
reset its log to the leader's log start (epochs retained away) and was killed before the HW
timer rewrote the file restarts with a checkpoint below its new log start; elected, it serves
its log start, never an offset it does not hold."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from nodes.broker.node import Broker
from nodes.broker.partition import HW_CHECKPOINT_FILE
from tests.unit.test_high_watermark_checkpoint import FOLLOWER, LEADER, _committed_leader, _open

RESET_TO = 50


def test_a_stale_checkpoint_below_a_reset_log_start_is_capped_into_the_log(tmp_path: Path) -> None:
    part = _committed_leader(tmp_path)  # HW 10
    Broker._checkpoint_high_watermarks(SimpleNamespace(partitions={("t", 0): part}))
    part.become_follower(FOLLOWER, 2, [LEADER, FOLLOWER], [FOLLOWER])
    part.reset_to(RESET_TO)
    assert (tmp_path / HW_CHECKPOINT_FILE).read_text().split() == ["10"]  # killed before the timer
    again = _open(tmp_path)
    try:
        assert again.log_start_offset == RESET_TO and again.log_end_offset == RESET_TO
        assert again.high_watermark <= again.log_end_offset
        again.become_leader(3, [LEADER, FOLLOWER], [LEADER], now_ms=0)
        assert again.offset_for_spec(-1) == RESET_TO
    finally:
        again.close()
