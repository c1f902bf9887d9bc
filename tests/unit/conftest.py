"""Pytest fixtures shared by several unit test modules, once each (plain fakes and builders are
in ``fakes.py`` and ``builders_*.py``). A module that defines a fixture of the same name uses
its own."""

from __future__ import annotations

import gc
import socket
import threading
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.config import load_config
from fabric.metadata import ClusterMetadata, PartitionInfo, TopicInfo
from fabric.reactor import Reactor
from fabric.rpc import RpcServer
from nodes.broker.node import Broker
from nodes.coordinator.node import Coordinator
from tests.harness import free_ports, make_config
from tests.unit.builders_broker import Loopback, coordinator
from tests.unit.builders_sender import sender_rigs
from tests.unit.fakes import BIG, SendSpy
from tests.unit.tcp_endpoints import tcp_router
from tests.unit.zmtp_support import DealerClient, MakeClient, RawServer


@pytest.fixture
def socket_pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """(the server's end, the client's end) of a connection: a socket pair, closed at the end."""
    server, client = socket.socketpair()
    yield server, client
    server.close()
    client.close()


@pytest.fixture
def make_sender_rig() -> Iterator:
    """A maker of producer-sender rigs (``builders_sender.Rig``, ``SenderSettings`` overrides as
    keywords); their senders are stopped at the end."""
    yield from sender_rigs()


@pytest.fixture
def make_rig(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """A maker of producer-service rigs (``builders_producer_service.Rig``), stopped at the end."""
    from tests.unit.builders_producer_service import Rig  # here: only these tests pay for the client producer

    made: list[Rig] = []

    def make(**settings: Any) -> Rig:
        made.append(Rig(monkeypatch, **settings))
        return made[-1]
    yield make
    for r in made:
        r.producer.sender.stop()


@pytest.fixture
def scripted() -> Iterator[Callable[[Callable[[wire.Request], tuple[dict, list]]], str]]:
    """A ROUTER on inproc answering each request with ``script(request)``; yields a starter."""
    ctx = zmq.Context.instance()
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(script: Callable[[wire.Request], tuple[dict, list]]) -> str:
        endpoint = f"inproc://scripted-{len(stops)}-{id(stops)}"
        sock = ctx.socket(zmq.ROUTER)
        sock.bind(endpoint)
        stop = threading.Event()

        def serve() -> None:
            while not stop.is_set():
                if sock.poll(50):
                    req = wire.decode_request(sock.recv_multipart())
                    header, payloads = script(req)
                    sock.send_multipart(wire.encode_reply(req.identity, {"id": req.id, **header}, payloads))
            sock.close(0)
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        stops.append((stop, t))
        return endpoint
    yield start
    for stop, t in stops:
        stop.set()
        t.join(5)


@pytest.fixture
def leader(tmp_path: Path) -> Iterator[tuple[Broker, ManualClock]]:
    """Broker 1 (segment engine, interval fsync) on a ManualClock, sole replica and leader of t-0."""
    config = load_config(make_config(tmp_path, 1, engine="segment", fsync="interval"))
    clock = ManualClock(start_ms=1_000_000)
    broker = Broker(config, "broker-1", clock=clock)
    broker.coordinator.request = lambda *a, **kw: None  # type: ignore[method-assign]
    info = PartitionInfo("t", 0, 1, 1, (1,), (1,), 1)
    broker.apply_metadata(ClusterMetadata(1, "test", {}, {"t": TopicInfo("t", (info,), {})}).to_wire())
    assert broker.partitions[("t", 0)].is_leader
    try:
        yield broker, clock
    finally:
        broker.close()


@pytest.fixture
def nodes(tmp_path: Path) -> Iterator[tuple[Broker, Coordinator, Loopback]]:
    """Broker 1 and a coordinator (memory engine) joined by a ``Loopback``, on one ManualClock
    (``broker.clock``: their timers run only when a test moves it, never because the machine
    was slow); both closed at the end. The coordinator has heard brokers 1-3, as from their
    heartbeats in a running cluster: each one may be elected (``builders_broker.coordinator``)."""
    clock = ManualClock(start_ms=1_000_000)
    coord = coordinator(tmp_path, clock)
    broker = Broker(coord.config, "broker-1", clock=clock)
    loop = Loopback(broker, coord)
    try:
        yield broker, coord, loop
    finally:
        broker.close()
        coord.close()


@pytest.fixture
def served() -> Iterator[tuple[Reactor, RpcServer, SendSpy, zmq.Socket]]:
    """An RpcServer answering PING (big or small reply) with its sends spied, and a DEALER to it."""
    reactor = Reactor()
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    server = RpcServer(zmq.Context.instance(), reactor, endpoint)
    server.route(P.PING, lambda req: ({"n": 1}, [b"a" * 10, BIG, b"z" * 10] if req.header.get("big") else [b"small" * 100]))
    real = server.port.tcp
    spy = server.port.tcp = SendSpy(real)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    try:
        yield reactor, server, spy, dealer
    finally:
        server.port.tcp = real
        dealer.close()
        server.close()


@pytest.fixture
def dealer_client() -> Iterator[MakeClient]:
    """A maker of ``DealerClient``s (arguments as its constructor's); their dealers are closed
    at the end (closing twice is harmless: a test may close one itself)."""
    made: list[DealerClient] = []

    def make(*args: Any, **kwargs: Any) -> DealerClient:
        made.append(DealerClient(*args, **kwargs))
        return made[-1]
    yield make
    for client in made:
        client.dealer.close()


@pytest.fixture
def raw_server() -> Iterator[RawServer]:
    """A ``RawServer`` on loopback, closed at the end."""
    server = RawServer()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def refused_endpoint() -> str:
    """A tcp:// endpoint on 127.0.0.1 with nothing listening: a connect to it is refused."""
    return f"tcp://127.0.0.1:{free_ports(1)[0]}"


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A tcp:// endpoint on 127.0.0.1 that takes connections and requests and answers none."""
    sock, endpoint = tcp_router()
    yield endpoint
    sock.close(0)


@pytest.fixture
def no_collector() -> Iterator[None]:
    """The cyclic collector off while the test runs (after a collection): what a test then
    finds still alive is kept by a reference cycle, not freed by reference counting."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
