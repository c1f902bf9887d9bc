"""A leader's ISR proposals (nodes/broker/isr.py) on real partitions: an ALTER_ISR with no
answer may have been applied by the coordinator, so the leader keeps counting the maximal ISR
and asks again; a refused proposal is dropped. The coordinator's side of ALTER_ISR is tested in
test_coordinator_alter_isr.py."""

from __future__ import annotations

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric.errors import RequestTimeout
from nodes.broker.isr import IsrProposer
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024


def _part(broker_id: int = 1) -> Partition:
    return Partition("t", 0, broker_id, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)


def _isr_proposer() -> tuple[IsrProposer, list]:
    sent: list = []
    proposer = IsrProposer(1, lambda header, callback: sent.append((header, callback)),
                           refresh_metadata=lambda: sent.append("refresh"), on_fenced=lambda: sent.append("fenced"),
                           mark_dirty=lambda: None)
    return proposer, sent


def test_isr_expansion_without_an_answer_keeps_counting_the_new_member() -> None:
    p = _part()
    p.become_leader(1, [1, 2, 3], [1, 2], now_ms=0)
    p.append_as_leader([make_batch(3)], BATCH_MAX)
    p.record_follower_fetch(2, 3, now_ms=10)
    p.record_follower_fetch(3, 3, now_ms=10)
    assert p.isr_changes(10, 1000) == {1, 2, 3}
    proposer, sent = _isr_proposer()
    assert proposer.check([p], 10, 1000) == 1
    header, callback = sent[-1]
    assert header["parts"][0]["isr"] == [1, 2, 3] and header["parts"][0]["partition_epoch"] == p.partition_epoch
    callback(None, [], RequestTimeout())  # the coordinator may well have applied it
    # broker 3 can be in the committed ISR (and be elected): the HW must keep waiting for it
    p.append_as_leader([make_batch(2)], BATCH_MAX)
    p.record_follower_fetch(2, 5, now_ms=20)
    assert p.high_watermark == 3
    # the proposal is asked again with the next check, and its answer settles it
    assert proposer.check([p], 20, 1000) == 1
    header, callback = sent[-1]
    assert header["parts"][0]["isr"] == [1, 2, 3]
    callback({"parts": [{"error": 0, "leader_epoch": 1, "partition_epoch": 7, "isr": [1, 2, 3]}]}, [], None)
    # the partition epoch comes with the metadata of that commit (tests/unit/test_stale_follower_reports.py)
    assert p.isr == {1, 2, 3} and p.pending_isr is None and p.partition_epoch < 7


def test_isr_proposal_rejected_by_the_coordinator_is_dropped() -> None:
    p = _part()
    p.become_leader(1, [1, 2, 3], [1, 2, 3], now_ms=0)
    p.followers[3].last_caught_up_ms = -5000
    proposer, sent = _isr_proposer()
    assert proposer.check([p], 0, 1000) == 1
    sent[-1][1]({"parts": [{"error": P.INVALID_ISR, "message": "no"}]}, [], None)
    assert p.pending_isr is None and len(sent) == 1
