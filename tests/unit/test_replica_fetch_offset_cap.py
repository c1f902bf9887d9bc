"""A replica FETCH records the follower's log end offset only when it can be ours: at or below
the leader's log end. The REPLICA_ACK path already capped it; the fetch path did not when the
follower sent no last epoch (-1), so a follower with a divergent tail past our log end counted
as having everything, and the high watermark passed records it does not hold."""

from __future__ import annotations

from types import SimpleNamespace

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric.records import build_batch
from nodes.broker.node import Broker
from nodes.broker.parking import ParkingLot
from nodes.broker.partition import Partition

BATCH_MAX = 1024 * 1024
LEADER, FOLLOWER = 1, 2


def _leader() -> Partition:
    part = Partition("t", 0, LEADER, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)
    part.become_leader(3, [LEADER, FOLLOWER], [LEADER, FOLLOWER], now_ms=0)
    recs = [(1_700_000_000_000, None, b"v%d" % i, None) for i in range(10)]
    assert part.append_as_leader([build_batch(recs)], BATCH_MAX)[0][0][1] == 0
    return part


def _fetch(leader: Partition, offset: int, last_epoch: int) -> list:
    broker = SimpleNamespace(broker_id=LEADER, partitions={("t", 0): leader}, parking=ParkingLot())
    tp = ["t", 0, offset, 64 * 1024, leader.leader_epoch, last_epoch]
    head, _ = Broker._fetch_one(broker, tp, FOLLOWER, now_ms=1000, budget=64 * 1024)
    return head


def test_fetch_past_our_log_end_without_an_epoch_is_not_progress() -> None:
    leader = _leader()
    head = _fetch(leader, 1000, last_epoch=-1)
    assert head[2] == P.OFFSET_OUT_OF_RANGE
    assert leader.followers[FOLLOWER].log_end_offset != 1000
    assert leader.high_watermark == 0, "the HW passed records the follower does not have"


def test_fetch_at_our_log_end_is_progress() -> None:
    leader = _leader()
    head = _fetch(leader, 10, last_epoch=3)
    assert head[2] == 0 and head[6] is None
    assert leader.followers[FOLLOWER].log_end_offset == 10
    assert leader.high_watermark == 10
