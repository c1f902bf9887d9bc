"""BrokerCore.fetch for a follower replica: its fetch offset is recorded as its log end offset
only when it can be ours -- at or below the leader's log end. The REPLICA_ACK path already
capped it; the fetch path did not when the follower sent no last epoch (-1), so a follower
with a divergent tail past our log end counted as having everything, and the high watermark
passed records it does not hold. Real BrokerCore on the memory engine."""

from __future__ import annotations

from pathlib import Path

from fabric import protocol as P
from fabric.records import build_batch
from nodes.broker.core import BrokerCore
from nodes.broker.messages import FetchEntry, FetchInput
from nodes.broker.partition import Partition
from tests.unit.fakes import broker_core

LEADER, FOLLOWER = 1, 2


def _leader(tmp_path: Path) -> tuple[BrokerCore, Partition]:
    core = broker_core(tmp_path, LEADER)
    part = core.open_partition("t", 0, {})
    part.become_leader(3, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    recs = [(1_700_000_000_000, None, b"v%d" % i, None) for i in range(10)]
    assert part.append_as_leader([build_batch(recs)], 1 << 20)[0][0][1] == 0
    return core, part


def _fetch(core: BrokerCore, offset: int, last_epoch: int) -> FetchEntry:
    inp = FetchInput("t", 0, offset, 64 * 1024, core.partitions[("t", 0)].leader_epoch, last_epoch)
    entry, _ = core.fetch(inp, FOLLOWER, now_ms=1000, budget_bytes=64 * 1024)
    return entry


def test_fetch_past_our_log_end_without_an_epoch_is_not_progress(tmp_path: Path) -> None:
    core, leader = _leader(tmp_path)
    entry = _fetch(core, 1000, last_epoch=-1)
    assert entry.error == P.OFFSET_OUT_OF_RANGE
    assert leader.followers[FOLLOWER].log_end_offset != 1000
    assert leader.high_watermark == 0, "the HW passed records the follower does not have"


def test_fetch_at_our_log_end_is_progress(tmp_path: Path) -> None:
    core, leader = _leader(tmp_path)
    entry = _fetch(core, 10, last_epoch=3)
    assert entry.error == 0 and entry.diverging is None
    assert leader.followers[FOLLOWER].log_end_offset == 10
    assert leader.high_watermark == 10
