"""A closed Consumer leaves nothing behind on a reactor that lives on (a consumer service hosts
many members on one reactor): its periodic stall check is cancelled with it."""

from __future__ import annotations

from fabric.client.consumer import Consumer
from fabric.reactor import Reactor
from tests.unit.fakes import RecordingClient


def test_a_closed_consumer_cancels_its_timers_on_a_shared_reactor() -> None:
    reactor = Reactor()
    before = reactor.timers_live
    consumer = Consumer("tcp://127.0.0.1:1", reactor=reactor, client_factory=lambda endpoint: RecordingClient())
    assert reactor.timers_live > before
    consumer.close()
    assert reactor.timers_live == before
