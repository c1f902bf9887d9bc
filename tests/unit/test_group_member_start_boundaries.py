"""Where a group member starts a partition it is assigned, at the boundaries: a committed offset
of 0 is a committed offset (not "nothing committed": no reset, no LIST_OFFSETS), nothing
committed starts at ``auto_offset_reset``, and a committed offset that retention has since
moved the log start past is out of range -- reset by ``auto_offset_reset`` (earliest: the log
start, skipping only what retention deleted; latest: the end, as Kafka's consumer does).

A real GroupConsumer on a ManualClock, a fake broker leading t-0 whose log starts at
``log_start``, and a scripted coordinator holding the committed offsets
(tests/unit/builders_group_consumer.py)."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from fabric import protocol as P
from fabric.client.group import GroupConsumer
from tests.unit.builders_group_consumer import (LOG_END_OFFSET, T0, BrokerRepliesReactor, OffsetsCoordinator,
                                                OnePartitionBroker, consumer_config)
from tests.unit.fakes import ScriptedCoordinatorLink


class _RetainedBroker(OnePartitionBroker):
    """``OnePartitionBroker`` whose log starts at ``log_start`` (retention deleted the rest)."""

    def __init__(self, log_start: int) -> None:
        super().__init__()
        self.log_start = log_start
        self.list_offsets: list[int] = []  # the specs asked for

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        if command == P.FETCH and header["parts"][0][2] < self.log_start:
            [[topic, partition, *_]] = header["parts"]
            refused = [topic, partition, P.OFFSET_OUT_OF_RANGE, LOG_END_OFFSET, LOG_END_OFFSET, self.log_start, None]
            self.replies.append(lambda: callback({"parts": [refused]}, [b""], None))
            return len(self.replies)
        if command == P.LIST_OFFSETS:
            [[topic, partition, spec]] = header["parts"]
            self.list_offsets.append(spec)
            found = [topic, partition, 0, self.log_start if spec == -2 else LOG_END_OFFSET]
            self.replies.append(lambda: callback({"parts": [found]}, [], None))
            return len(self.replies)
        return super().request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)


def _first_records(committed: int | None, log_start: int, policy: str) -> tuple[list[int], _RetainedBroker]:
    broker = _RetainedBroker(log_start)
    reactor = BrokerRepliesReactor(broker)
    coordinator = OffsetsCoordinator()
    coordinator.uncommitted = -1
    if committed is not None:
        coordinator.committed[T0] = committed
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
        broker, reactor, ScriptedCoordinatorLink(coordinator), auto_offset_reset=policy, enable_auto_commit=False))
    try:
        c.subscribe(["t"])
        for _ in range(20):
            got = [r.offset for r in c.poll(100, max_records=3)]
            if got:
                return got, broker
        return [], broker
    finally:
        c.close()


@pytest.mark.parametrize("policy", ["earliest", "latest"])
def test_a_committed_offset_of_0_is_where_the_member_starts(policy: str) -> None:
    got, broker = _first_records(0, 0, policy)
    assert got == [0, 1, 2] and broker.list_offsets == []


def test_nothing_committed_starts_at_the_reset_policy() -> None:
    got, broker = _first_records(None, 0, "earliest")
    assert got == [0, 1, 2] and broker.list_offsets == [-2]


def test_a_committed_offset_below_the_log_start_starts_at_the_log_start_with_earliest() -> None:
    got, broker = _first_records(40, 100, "earliest")
    assert got == [100, 101, 102]  # 40..99: deleted by retention; nothing that exists is skipped


def test_a_committed_offset_below_the_log_start_starts_at_the_end_with_latest() -> None:
    got, broker = _first_records(40, 100, "latest")
    assert broker.list_offsets == [-1] and got == []  # Kafka's auto.offset.reset: the log end (1000, no records yet)
