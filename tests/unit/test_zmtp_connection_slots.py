"""The request port holds at most CONNECTIONS_MAX connections. Peers that connect, finish the
handshake (or not) and then send nothing must not lock every other client out: when the
table is full, a new connection takes the place of the least recently active one, which is
closed (a libzmq DEALER among them reconnects by itself). A peer that is sending is kept."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric import zmtp
from fabric.reactor import Reactor
from fabric.rpc import RpcServer
from fabric.zmtp_codec import GREETING
from tests.harness import free_ports

SLOTS = 16
PASSES_MAX = 400
POLL_MS = 5


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Reactor, RpcServer, int]]:
    monkeypatch.setattr(zmtp, "CONNECTIONS_MAX", SLOTS)
    reactor = Reactor()
    port = free_ports(1)[0]
    server = RpcServer(zmq.Context.instance(), reactor, f"tcp://127.0.0.1:{port}")
    server.route(P.PING, lambda req: {"ok": True})
    yield reactor, server, port
    server.close()


def _spin(reactor: Reactor, passes: int) -> None:
    for _ in range(passes):
        reactor.run_once(POLL_MS)


def _closed(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return True
    except BlockingIOError:
        return False


def test_idle_connections_cannot_lock_out_a_client(served) -> None:  # noqa: ANN001
    reactor, server, port = served
    idle = []
    try:
        for i in range(SLOTS):  # every slot: half greeted and silent, half with no greeting at all
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            if i % 2:
                s.sendall(GREETING[:20])
            idle.append(s)
            _spin(reactor, 5)
        _spin(reactor, 20)
        assert server.port.connections == SLOTS
        idle[1].sendall(GREETING[20:])  # the second peer is active again: it is not the one to go
        _spin(reactor, 20)
        dealer = zmq.Context.instance().socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(f"tcp://127.0.0.1:{port}")
        try:
            dealer.send_multipart(wire.encode_request(P.PING, {"id": 1}))
            for _ in range(PASSES_MAX):
                reactor.run_once(POLL_MS)
                if dealer.poll(0):
                    break
            assert dealer.poll(0), "a client was locked out by idle connections"
            assert wire.decode_reply(dealer.recv_multipart())[0] == {"id": 1, "ok": True}
        finally:
            dealer.close()
        assert server.port.connections <= SLOTS
        assert not _closed(idle[1]), "the most recently active peer was closed"
        assert _closed(idle[0]), "the least recently active peer should have made room"
    finally:
        for s in idle:
            s.close()
