"""What a new leader does with a retry from a producer whose dedup state it no longer holds
(evicted from the PRODUCERS_MAX table while the producer's request was in flight).

A producer's batch reaches the old leader and the follower; its reply is lost; meanwhile more
than PRODUCERS_MAX other producers write to the partition, so the follower's table evicts the
producer. The follower is elected, and the producer's retry of the same batch arrives. An
unknown producer is taken at any sequence, so the batch is appended a second time: a
duplicate that the idempotent producer promises never to create. (Kafka answers such a
retry with UNKNOWN_PRODUCER_ID / OUT_OF_ORDER_SEQUENCE rather than write it again.)"""

from __future__ import annotations

import pytest

from engines.api import EngineConfig
from engines.memory import MemoryEngine
from nodes.broker import producers as producers_module
from nodes.broker.partition import Partition
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024
TABLE_MAX = 8          # PRODUCERS_MAX, lowered so that the test evicts with a few producers
PID, EPOCH = 7, 0


def _replica(broker_id: int) -> Partition:
    return Partition("t", 0, broker_id, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), None)


@pytest.mark.xfail(strict=True, reason=(
    "a producer evicted from the new leader's PRODUCERS_MAX table is taken at any sequence: "
    "its retry of a batch already in the log is appended again (needs an unknown-producer "
    "answer the client can act on, as Kafka's UNKNOWN_PRODUCER_ID)"))
def test_a_retry_to_a_new_leader_that_evicted_the_producer_is_not_written_twice(monkeypatch) -> None:
    monkeypatch.setattr(producers_module, "PRODUCERS_MAX", TABLE_MAX)
    leader, follower = _replica(1), _replica(2)
    leader.become_leader(1, [1, 2], [1, 2], now_ms=0)
    follower.become_follower(1, 1, [1, 2], [1, 2])
    ours = make_batch(3, pid=PID, epoch=EPOCH, seq=0, tag="ours")
    (result,), _ = leader.append_as_leader([ours], BATCH_MAX)
    assert result[1] == 0
    for other in range(100, 100 + TABLE_MAX):  # other producers, one batch each
        leader.append_as_leader([make_batch(1, pid=other, epoch=0, seq=0)], BATCH_MAX)
    follower.append_as_follower(leader.read(0, BATCH_MAX, leader.log_end_offset))  # replicated
    assert follower.log_end_offset == leader.log_end_offset
    follower.become_leader(2, [1, 2], [2], now_ms=0)          # the old leader died
    end_before = follower.log_end_offset
    (retry,), _ = follower.append_as_leader([ours], BATCH_MAX)  # the producer's retry
    assert follower.log_end_offset == end_before, f"the retried batch was appended again at {retry[0]}"
