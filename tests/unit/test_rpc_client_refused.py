"""``RpcClient(fail_on_refused=(P.METADATA,))``: a request of those commands (the producer's and
the consumer's metadata asks) waiting for a connection that the peer's port refuses (its process dead, its
host up) fails at once with ``ConnectionRefused``, a retriable ``RequestTimeout``: the client's
own ZMTP connection retried the connect in silence, and the ask waited out its timeout (1 s for
the coordinator: the gateway's window after the coordinator's SIGKILL, through the producer
service's sender). A request made while the last connect was refused fails at once too, and is
not sent. Other commands' requests (produce) still wait for the next connection or their timeout, and a
peer that takes the connection and does not answer is waited for as before.

Real sockets on 127.0.0.1, ports picked free at run time."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any, Callable, Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric.client.consumer import Consumer
from fabric.clock import ManualClock
from fabric.errors import ConnectionRefused, RequestTimeout
from fabric.reactor import Reactor
from fabric.rpc import RpcClient
from fabric.zmtp_client_connection import _CONNECTING
from tests.unit.builders_sender import sender_metadata
from tests.unit.tcp_endpoints import serve_until, tcp_router

TIMEOUT_MS = 3000
DEADLINE_S = 10.0
SOON_S = 0.5  # a refusal on loopback comes in well under a millisecond; the timeouts are 1 s and more
LATE_S = 0.01  # a timer in whole ms fires up to a ms early


@pytest.fixture
def reactor() -> Reactor:
    return Reactor()


def _client(reactor: Reactor, endpoint: str, fail_on_refused: bool = True) -> RpcClient:
    return RpcClient(zmq.Context.instance(), reactor, endpoint, identity="t",
                     fail_on_refused=(P.METADATA,) if fail_on_refused else ())


def _ask(reactor: Reactor, client: RpcClient, timeout_ms: int) -> tuple[Any, float]:
    """The error a METADATA request ended with, and how long it took."""
    out: list[Any] = []
    start = time.monotonic()
    client.request(P.METADATA, {}, callback=lambda h, _p, err: out.append(err), timeout_ms=timeout_ms)
    _run_until(reactor, lambda: out)
    return out[0], time.monotonic() - start


def _run_until(reactor: Reactor, condition: Callable[[], Any]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        reactor.run_once(5)


def test_a_request_waiting_for_a_refused_connection_fails_at_once_and_so_do_the_next(
        reactor: Reactor, refused_endpoint: str) -> None:
    client = _client(reactor, refused_endpoint)
    try:
        error, elapsed_s = _ask(reactor, client, TIMEOUT_MS)
        assert isinstance(error, ConnectionRefused), error
        assert elapsed_s < SOON_S, f"waited {elapsed_s:.2f} s for a node that refused the connection"
        # made while the last connect failed: not sent, it fails at once too (and has the next
        # connect made now, for the caller's retry: test_a_retry_after_a_refusal_makes_the_next_connect_now)
        error, elapsed_s = _ask(reactor, client, TIMEOUT_MS)
        assert isinstance(error, ConnectionRefused), error
        assert elapsed_s < SOON_S
        assert client.in_flight == 0
    finally:
        client.close()


@pytest.mark.parametrize("where, fail_on_refused", [("silent_endpoint", True), ("refused_endpoint", False)])
def test_a_request_waits_its_timeout_for_a_silent_peer_or_without_the_flag(
        reactor: Reactor, where: str, fail_on_refused: bool, request: pytest.FixtureRequest) -> None:
    client = _client(reactor, request.getfixturevalue(where), fail_on_refused)
    try:
        error, elapsed_s = _ask(reactor, client, 300)
        assert type(error) is RequestTimeout, error
        assert elapsed_s >= 0.3 - LATE_S
    finally:
        client.close()


def test_only_the_named_commands_fail_at_a_refusal(reactor: Reactor, refused_endpoint: str) -> None:
    client = _client(reactor, refused_endpoint)
    ended: dict[str, Any] = {}
    try:
        client.request(P.PRODUCE, {}, callback=lambda h, _p, err: ended.setdefault("produce", err), timeout_ms=400)
        client.request(P.METADATA, {}, callback=lambda h, _p, err: ended.setdefault("metadata", err),
                       timeout_ms=TIMEOUT_MS)
        _run_until(reactor, lambda: "metadata" in ended)
        assert isinstance(ended["metadata"], ConnectionRefused) and "produce" not in ended, ended
        _run_until(reactor, lambda: "produce" in ended)
        assert type(ended["produce"]) is RequestTimeout, ended  # its own timeout, as before
    finally:
        client.close()


@pytest.fixture
def live_tcp() -> Iterator[str]:
    """A tcp:// endpoint answering every METADATA with ``sender_metadata()`` (topic ``t``)."""
    sock, endpoint = tcp_router()
    stop = threading.Event()
    metadata = {"metadata": sender_metadata().to_wire()}
    serving = threading.Thread(target=serve_until, args=(sock, stop, lambda req: metadata), daemon=True)
    serving.start()
    yield endpoint
    stop.set()
    serving.join(5)
    sock.close(0)


def test_a_consumer_asks_the_next_endpoint_at_once_after_a_refusal(refused_endpoint: str, live_tcp: str) -> None:
    """Its own RpcClients: without metadata yet, the first ask (of the refused endpoint) waited
    its whole timeout (3 s) before the next endpoint was asked."""
    consumer = Consumer([refused_endpoint, live_tcp])
    try:
        start = time.monotonic()
        assert consumer.partitions_for("t", timeout_ms=TIMEOUT_MS) == [0]
        elapsed_s = time.monotonic() - start
    finally:
        consumer.close()
    assert elapsed_s < SOON_S, f"the refused endpoint held the consumer's first metadata {elapsed_s:.2f} s"


def test_a_request_made_while_a_connect_is_under_way_waits_for_it(reactor: Reactor, refused_endpoint: str) -> None:
    """The last connect was refused, and the next one is under way (the node listens again; its
    accept queue is full here, so the connect stays in progress): the request is not failed as
    refused -- the node may take this connection -- but waits for it, or its timeout."""
    client = _client(reactor, refused_endpoint)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    filler = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        error, _ = _ask(reactor, client, TIMEOUT_MS)
        assert isinstance(error, ConnectionRefused), error
        host, port = refused_endpoint[len("tcp://"):].rsplit(":", 1)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, int(port)))
        listener.listen(0)
        filler.connect((host, int(port)))  # fills the accept queue: the next SYNs are dropped
        _run_until(reactor, lambda: client.transport._state == _CONNECTING)
        error, elapsed_s = _ask(reactor, client, 300)
        assert type(error) is RequestTimeout, error
        assert elapsed_s >= 0.3 - LATE_S
    finally:
        client.close()
        filler.close()
        listener.close()


def test_a_retry_after_a_refusal_makes_the_next_connect_now(refused_endpoint: str) -> None:
    """A request of a fail-fast command made while the last connect failed has the next
    connect made at once, not at the transport's reconnect timer (whose backoff grows to
    seconds): the clock stands still here, so no timer can make it."""
    reactor = Reactor(ManualClock(0))
    client = _client(reactor, refused_endpoint)
    try:
        _ask(reactor, client, TIMEOUT_MS)
        failed = client.transport.counters["disconnects"]  # type: ignore[union-attr]
        error, _ = _ask(reactor, client, TIMEOUT_MS)
        assert isinstance(error, ConnectionRefused), error
        _run_until(reactor, lambda: client.transport.counters["disconnects"] > failed)  # type: ignore[union-attr]
    finally:
        client.close()
