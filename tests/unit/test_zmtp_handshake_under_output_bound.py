"""A connection that arrives while the port's output to all connections together is at its
bound (fabric.tcp_port.OUTPUT_BYTES_TOTAL_MAX: other peers not reading their replies) still
gets the handshake: a refused greeting or READY cannot be sent again, and the DEALER would sit
in its handshake until libzmq gives up on it (ZMQ_HANDSHAKE_IVL, 30 s), long after the bound
was released. Replies on it are refused while the bound holds, as on every connection."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric import tcp_port, wire
from fabric.reactor import Reactor
from fabric.rpc import RpcServer
from tests.harness import free_ports

DEADLINE_S = 10.0  # well under libzmq's 30 s handshake timeout
POLL_MS = 10
BIG = b"b" * (2 << 20)


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Reactor, RpcServer, str]]:
    monkeypatch.setattr(tcp_port, "OUTPUT_BYTES_TOTAL_MAX", 1 << 20)
    reactor = Reactor()
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    server = RpcServer(zmq.Context.instance(), reactor, endpoint)
    server.route(P.PING, lambda req: ({}, [BIG] if req.header.get("big") else []))
    yield reactor, server, endpoint
    server.close()


def _dealer(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.connect(endpoint)
    return sock


def _fill_the_bound(reactor: Reactor, tcp: tcp_port.TcpPort, hog: zmq.Socket) -> None:
    """Large replies to ``hog`` (which reads none) until the port's waiting output stays at
    the bound: the kernel's buffers and libzmq's take what they can first."""
    deadline = time.monotonic() + DEADLINE_S
    for rid in itertools.count(1):
        assert time.monotonic() < deadline, "the bound was not reached"
        hog.send_multipart(wire.encode_request(P.PING, {"id": rid, "big": True}))
        before = -1
        while tcp.output_bytes != before:  # until nothing more drains
            assert time.monotonic() < deadline, "the output did not settle"
            before = tcp.output_bytes
            for _ in range(5):
                reactor.run_once(POLL_MS)
        if tcp.output_bytes >= tcp_port.OUTPUT_BYTES_TOTAL_MAX:
            return


def _run_until(reactor: Reactor, condition) -> None:  # noqa: ANN001
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        reactor.run_once(POLL_MS)


def test_a_peer_connecting_while_the_output_bound_is_full_is_served_once_it_is_released(served) -> None:  # noqa: ANN001
    reactor, server, endpoint = served
    tcp = server.port.tcp
    hog = _dealer(endpoint)  # asks for large replies and reads none
    try:
        _fill_the_bound(reactor, tcp, hog)
        late = _dealer(endpoint)
        try:
            # the late peer's handshake, done while the bound is full (the peer's greeting and
            # READY answered by the server's)
            _run_until(reactor, lambda: sum(c.ready for c in server.port._connections.values()) == 2)
            assert tcp.output_bytes >= tcp_port.OUTPUT_BYTES_TOTAL_MAX
            hog.close()  # the bound is released: its output goes with it
            hog = None
            _run_until(reactor, lambda: tcp.output_bytes == 0)
            late.send_multipart(wire.encode_request(P.PING, {"id": 1}))
            _run_until(reactor, lambda: late.poll(0))  # answered on the connection made under the bound
            header, _ = wire.decode_reply(late.recv_multipart())
            assert header["id"] == 1
        finally:
            late.close()
    finally:
        if hog is not None:
            hog.close()
