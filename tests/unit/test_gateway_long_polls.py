"""At most ``gateway.long_polls_max`` request threads wait in a long poll at once: a long poll
over that budget is answered at once with what is there now (an empty answer is a long poll's
answer too: the client polls again), never an error, and never with records lost. Enough
clients long-polling used to hold every request thread, and REST, /health/live and the
dashboard stopped answering.

Through the gateway's real Flask app with a stub agent whose reads and fetches, given a
timeout, wait as a long poll at the log end does (until the test releases them), and given
none answer at once with the records available."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable

import pytest

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from fabric.records import Record
from nodes.local_cluster import wait_until
from tests.unit.fakes import KEYS, StubAgent, metadata_of
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub

SETTINGS = GatewayConfig(worker_threads=8, websockets_max=4)  # 4 REST threads: 2 may long-poll
AVAILABLE = [Record("t", 0, 7, 1000, None, b"now", None)]
BROWSE = "/topics/t/partitions/0/records?offset=7&timeout=5000"
CONSUME = "/consumers/g/instances/c1/records?timeout=30000"


@dataclass
class _Entry:
    fmt: str = "binary"


class LongPollingAgent(StubAgent):
    """Topic t (one partition) and consumer instance g/c1. A read or fetch with a timeout waits
    until ``released`` (counted in ``waiting``); with timeout 0 it answers at once. Either way
    the answer is ``AVAILABLE``."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.timeouts_ms: list[int] = []
        self.waiting = 0
        self._lock = threading.Lock()

    def topic(self, name: str) -> Any:
        return metadata_of({"t": 1}).topics["t"]

    def _long_poll(self, timeout_ms: int) -> list[Record]:
        with self._lock:
            self.timeouts_ms.append(timeout_ms)
            self.waiting += timeout_ms > 0
        if timeout_ms > 0:
            assert self.released.wait(10), "never released"
            with self._lock:
                self.waiting -= 1
        return list(AVAILABLE)

    def read(self, topic: str, partition: int, offset: int | None, count: int, max_bytes: int,
             timeout_ms: int) -> list[Record]:
        return self._long_poll(timeout_ms)

    def instance(self, group: str, name: str) -> _Entry:
        return _Entry()

    def call_instance(self, group: str, name: str, op: Callable[[Any], Any]) -> Any:
        return op(self)

    def fetch(self, timeout_ms: int, max_bytes: int, max_records: int) -> list[Record]:  # the instance's handle
        return self._long_poll(timeout_ms)


@pytest.fixture
def gateway() -> Iterator[tuple[Callable[[str], Future], LongPollingAgent]]:
    """``get(path)``: a GET with the admin key on a thread of its own, as a request thread; its Future."""
    agent = LongPollingAgent()
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(1000.0, 1000, 100), settings=SETTINGS,
                 security=SecurityConfig(), cluster_id="test", on_bug=lambda: pytest.fail("a bug in the gateway"))
    app = create_app(gw)
    pool = ThreadPoolExecutor(SETTINGS.worker_threads)

    def get(path: str) -> Future:
        return pool.submit(lambda: app.test_client().get(path, headers={"Authorization": f"Bearer {KEYS['admin']}"}))
    try:
        yield get, agent
    finally:
        agent.released.set()
        pool.shutdown(wait=True)


@pytest.mark.parametrize("first, over", [(BROWSE, BROWSE), (CONSUME, CONSUME), (BROWSE, CONSUME), (CONSUME, BROWSE)])
def test_a_long_poll_over_the_budget_is_answered_at_once_with_what_is_there(
        gateway: tuple[Callable[[str], Future], LongPollingAgent], first: str, over: str) -> None:
    get, agent = gateway
    assert SETTINGS.long_polls_max == 2
    waiting = [get(first) for _ in range(SETTINGS.long_polls_max)]
    wait_until(lambda: agent.waiting == SETTINGS.long_polls_max, 10, what="the budget's long polls waiting")
    answer = get(over).result(timeout=10)  # the others still wait: this one must not
    assert answer.status_code == 200, answer.get_json()
    assert [r["offset"] for r in answer.get_json()] == [7], "what was there, not an error nor nothing"
    assert agent.timeouts_ms[-1] == 0 and not any(f.done() for f in waiting)
    agent.released.set()
    assert all(f.result(timeout=10).status_code == 200 for f in waiting)
    agent.released.clear()
    again = get(over)  # the budget is free again: a long poll waits as asked
    wait_until(lambda: agent.waiting == 1, 10, what="a long poll waiting once the budget is free")
    assert agent.timeouts_ms[-1] > 0
    agent.released.set()
    assert again.result(timeout=10).status_code == 200

