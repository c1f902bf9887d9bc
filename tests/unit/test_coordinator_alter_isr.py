"""The coordinator's judgement of ALTER_ISR proposals (nodes/coordinator/alter_isr.py) and the
dedicated error codes of the coordinator's refusals: pure functions over the cluster state,
and a real Coordinator for the registration of a broker it does not know."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.config import load_config
from fabric.errors import RemoteError
from nodes.coordinator.alter_isr import IsrChange, judge
from nodes.coordinator.node import Coordinator
from nodes.coordinator.store import PartitionState, TopicState
from tests.harness import make_config
from tests.unit.fakes import request


def _topics(isr: list[int]) -> dict[str, TopicState]:
    return {"t": TopicState([PartitionState(1, 4, [1, 2, 3], list(isr), partition_epoch=9)])}


def _change(isr: list[int], partition_epoch: int) -> IsrChange:
    return IsrChange("t", 0, 4, partition_epoch, isr)


def test_coordinator_refuses_an_isr_change_computed_from_a_stale_isr() -> None:
    # the coordinator dropped dead broker 3 from the ISR (partition epoch 8 -> 9); the leader has
    # not heard yet and asks to add broker 2 on top of its old view, which still names 3
    topics = _topics(isr=[1])
    assert judge(_change([1, 2, 3], 8), 1, topics, {1, 2, 3})[0] == P.STALE_ISR
    assert topics["t"].partitions[0].isr == [1]
    # a retry of a proposal that was already applied is answered, not refused
    topics = _topics(isr=[1, 2])
    assert judge(_change([1, 2], 8), 1, topics, {1, 2, 3}) == (0, "")
    # the current view is applied
    assert judge(_change([1, 2, 3], 9), 1, topics, {1, 2, 3}) == (0, "")
    assert topics["t"].partitions[0].isr == [1, 2, 3]
    # a proposal from a broker that no longer leads is fenced
    assert judge(_change([2, 3], 9), 2, topics, {1, 2, 3})[0] == P.FENCED_LEADER_EPOCH


def test_an_isr_without_the_leader_or_with_a_dead_broker_is_invalid_isr_not_invalid_config() -> None:
    topics = _topics(isr=[1, 2])
    assert judge(_change([2, 3], 9), 1, topics, {1, 2, 3})[0] == P.INVALID_ISR  # leaves out the leader
    assert judge(_change([1, 2, 3], 9), 1, topics, {1, 2})[0] == P.INVALID_ISR  # adds dead broker 3
    assert topics["t"].partitions[0].isr == [1, 2]
    assert P.error_name(P.INVALID_ISR) == "invalid_isr" and P.INVALID_ISR not in P.RETRIABLE


def test_registering_a_broker_that_is_not_in_the_config_is_unknown_broker(tmp_path: Path) -> None:
    coord = Coordinator(load_config(make_config(tmp_path, 3, engine="memory")), "coordinator")
    try:
        with pytest.raises(RemoteError) as e:
            coord._on_register(request(P.BROKER_REGISTER, broker_id=99, incarnation="x"))
        assert e.value.code == P.UNKNOWN_BROKER and P.error_name(e.value.code) == "unknown_broker"
        assert coord._on_register(request(P.BROKER_REGISTER, broker_id=1, incarnation="x"))["metadata"]
    finally:
        coord.close()
