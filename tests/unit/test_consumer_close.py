"""A closed Consumer leaves nothing behind on a reactor that lives on (a consumer service hosts
many members on one reactor): its periodic stall check is cancelled with it; and what it fetched
ahead is let go at once, not when the consumer object is collected."""

from __future__ import annotations

import sys
from typing import Any, Callable

from fabric import protocol as P
from fabric.client.consumer import Consumer
from fabric.client.group import GroupConsumer
from fabric.reactor import Reactor
from tests.unit.builders_group_consumer import T0, BrokerRepliesReactor, OffsetsCoordinator, OnePartitionBroker, consumer_config
from tests.unit.fakes import RecordingClient, ScriptedCoordinatorLink


def test_a_closed_consumer_cancels_its_timers_on_a_shared_reactor() -> None:
    reactor = Reactor()
    before = reactor.timers_live
    consumer = Consumer("tcp://127.0.0.1:1", reactor=reactor, client_factory=lambda endpoint: RecordingClient())
    assert reactor.timers_live > before
    consumer.close()
    assert reactor.timers_live == before


class _KeepingBroker(OnePartitionBroker):
    """``OnePartitionBroker`` that keeps every FETCH answer's payload frames it hands out."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: list[bytes] = []

    def request(self, command: bytes, header: dict, payloads: Any = (), *, callback: Callable,
                timeout_ms: int = 0) -> int:
        def keep(h: Any, frames: list, err: Any) -> None:
            self.frames += frames
            callback(h, frames, err)
        return super().request(command, header, payloads, callback=keep if command == P.FETCH else callback,
                               timeout_ms=timeout_ms)


def test_a_closed_consumer_lets_go_of_the_records_it_fetched_and_never_returned() -> None:
    """A closed consumer that something still refers to -- a reference cycle through its reactor,
    its clients or its heartbeat thread keeps it until a full collection, which a node runs
    seldom (nodes/run.py's thresholds) -- held every record it had fetched ahead: a consumer
    service whose REST instances came and went grew by the records each had buffered (to 350 MB
    on a 3 MB topic in ten minutes)."""
    broker = _KeepingBroker()
    reactor = BrokerRepliesReactor(broker)
    c = GroupConsumer("127.0.0.1:1", group_id="g", **consumer_config(
        broker, reactor, ScriptedCoordinatorLink(OffsetsCoordinator()), enable_auto_commit=False))
    c.assign([T0])
    for _ in range(20):
        if c.poll(100, max_records=10):
            break
    assert broker.frames, "nothing fetched"
    frame = broker.frames[0]
    base = sys.getrefcount(frame)
    held = base - 3  # besides broker.frames, the name and getrefcount's argument
    assert held > 0, "the records fetched ahead were not buffered: the test shows nothing"
    c.close()
    assert sys.getrefcount(frame) == 3, "a closed consumer still holds what it fetched"
