"""An idempotent producer's INIT_PRODUCER_ID to a coordinator whose port refuses the connection
(its process dead, its host up) ends at the refusal (``ConnectionRefused``), as a metadata ask
does, and is asked again at the sender's retry interval (METADATA_RETRY_MS) -- a retry that
finds the connection refused makes the next connect at once -- instead of waiting in the
connection for the dealer's reconnect (its backoff grows to ``P.RECONNECT_IVL_MAX_MS``) or for
the request's timeout (METADATA_TIMEOUT_MS): a coordinator back on its port gives the producer
its id at the next retry.

A second INIT_PRODUCER_ID is harmless: every one hands out a fresh id at epoch 0 (nothing is
bumped), and an id nobody uses holds no state anywhere (a broker learns of a producer only
from its batches).

The sender's real ``RpcClient`` on a real reactor and real sockets on 127.0.0.1 (ports picked
free at run time); the reactor's clock is a ``ManualClock``, advanced by the test, so that no
timer (the request's timeout, the dealer's reconnect) fires unless the test says so."""

from __future__ import annotations

import threading
import time
from typing import Any, Callable, Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.metadata_cache import MetadataCache
from fabric.client.sender import METADATA_RETRY_MS, METADATA_TIMEOUT_MS, Sender, SenderSettings
from fabric.clock import ManualClock
from fabric.errors import ConnectionRefused
from fabric.metadata import ClusterMetadata
from fabric.reactor import Reactor
from fabric.rpc import RpcClient
from tests.unit.tcp_endpoints import serve_until

DEADLINE_S = 10.0
STEP_REAL_S = 0.02  # real time between steps of the manual clock: a peer on loopback answers in well under it


class _Producer:
    """A Sender whose RPC clients are its own (``_rpc_client``), on a reactor with a manual
    clock; the outcomes of its INIT_PRODUCER_ID requests are recorded."""

    def __init__(self, coordinator: str) -> None:
        self.clock = ManualClock(1000)
        self.reactor = Reactor(self.clock)
        md = ClusterMetadata.from_wire({
            "version": 1, "cluster": "c", "coordinator": coordinator,
            "brokers": [[1, "127.0.0.1", 1, 101, True]],
            "topics": {"t": {"configs": {}, "id": "", "partitions": [[1, 3, [1], [1]]]}}})
        cache = MetadataCache(wake=lambda: None)
        cache.update(md)
        self.accumulator = RecordAccumulator(AccumulatorSettings(linger_ms=0), self.clock, wake=lambda: None)
        self.sender = Sender(SenderSettings(delivery_timeout_ms=60_000), self.accumulator, cache, [coordinator],
                             clock=self.clock, client_factory=self._client)
        self.sender.attach(self.reactor)
        self.reactor.after_pass(self.sender.run_pass)
        self.init_errors: list[Any] = []  # each INIT_PRODUCER_ID's error (None: answered)

    def _client(self, endpoint: str) -> RpcClient:
        client = self.sender._rpc_client(endpoint)  # the sender's own, with its fail_on_refused
        request = client.request

        def recorded(command: bytes, header: dict, payloads: Any = (), *, callback: Callable, timeout_ms: int) -> int:
            if command == P.INIT_PRODUCER_ID:
                def seen(h: dict | None, p: list, err: Any) -> None:
                    self.init_errors.append(err)
                    callback(h, p, err)
                return request(command, header, payloads, callback=seen, timeout_ms=timeout_ms)
            return request(command, header, payloads, callback=callback, timeout_ms=timeout_ms)
        client.request = recorded  # type: ignore[method-assign]
        return client

    def run_until(self, condition: Callable[[], Any], step_ms: int = 0) -> None:
        """Reactor passes until ``condition()``, the clock advanced ``step_ms`` every
        ``STEP_REAL_S`` of real time (a peer on a thread answers in real time)."""
        deadline = time.monotonic() + DEADLINE_S
        step_at = time.monotonic()
        while not condition():
            now = time.monotonic()
            assert now < deadline, "condition not reached"
            if now >= step_at:
                self.clock.advance(step_ms)
                step_at = now + STEP_REAL_S
            self.reactor.run_once(5)


@pytest.fixture
def producer(refused_endpoint: str) -> Iterator[_Producer]:
    p = _Producer(refused_endpoint)
    yield p
    p.sender.stop()


def test_a_refused_init_producer_id_ends_at_once_and_is_asked_again_at_the_retry_interval(producer: _Producer) -> None:
    producer.accumulator.append("t", 0, 1_700_000_000_000, None, b"v", None, 30)
    producer.run_until(lambda: producer.init_errors)  # the clock stands still: no timeout can fire
    assert isinstance(producer.init_errors[0], ConnectionRefused), producer.init_errors
    # every retry, METADATA_RETRY_MS later, ends so too, long before the request's timeout
    steps = 5
    producer.run_until(lambda: len(producer.init_errors) > steps, step_ms=METADATA_RETRY_MS // 2)
    assert producer.clock.now_ms() - 1000 < METADATA_TIMEOUT_MS, "the retries waited for the timeout"
    assert all(isinstance(e, ConnectionRefused) for e in producer.init_errors), producer.init_errors
    assert producer.sender.producer_id < 0


def test_a_coordinator_back_on_its_port_gives_the_id_at_the_next_retry(
        producer: _Producer, refused_endpoint: str) -> None:
    producer.accumulator.append("t", 0, 1_700_000_000_000, None, b"v", None, 30)
    producer.run_until(lambda: len(producer.init_errors) > 8, step_ms=METADATA_RETRY_MS // 2)
    dealer = producer.sender._clients[refused_endpoint].transport  # type: ignore[attr-defined]
    backoff_ms = dealer._reconnect_ms
    assert backoff_ms > 5 * METADATA_RETRY_MS, "the dealer's own reconnect has backed off"
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(refused_endpoint)  # the coordinator restarted on its port
    stop = threading.Event()
    granted = {"producer_id": 77, "producer_epoch": 0}
    server = threading.Thread(target=serve_until, args=(sock, stop, lambda _req: granted))
    server.start()
    try:
        started_ms = producer.clock.now_ms()
        producer.run_until(lambda: producer.sender.producer_id >= 0, step_ms=METADATA_RETRY_MS // 2)
        # at the retry after the next (whose connect it made): not at the dealer's next
        # reconnect, seconds away (its backoff); a margin for a loaded machine
        waited_ms = producer.clock.now_ms() - started_ms
        assert waited_ms <= 5 * METADATA_RETRY_MS < backoff_ms, waited_ms
        assert producer.sender.producer_id == 77
    finally:
        stop.set()
        server.join()
        sock.close(0)
