"""fabric.zmtp.ZmtpServer on loopback TCP, driven by a reactor in this thread: pyzmq DEALERs
and REQs talk to it as to a ROUTER; a request at the frame limit passes and one frame more is
answered request_too_large on the same connection; peers that do not speak ZMTP 3 as a DEALER
are disconnected while the server goes on serving."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.reactor import Reactor
from fabric.rpc import RpcServer
from fabric.zmtp_codec import GREETING
from tests.harness import free_ports

PASSES_MAX = 200
POLL_MS = 10


@pytest.fixture
def served() -> Iterator[tuple[Reactor, RpcServer, str]]:
    reactor = Reactor()
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    server = RpcServer(zmq.Context.instance(), reactor, endpoint)
    server.route(P.PING, lambda req: ({"payloads": len(req.payloads), "identity": req.identity[0]}, req.payloads[:1]))
    yield reactor, server, endpoint
    server.close()


def _exchange(reactor: Reactor, sock: zmq.Socket, frames: list[bytes]) -> list[bytes]:
    sock.send_multipart(frames)
    for _ in range(PASSES_MAX):  # bounded: a round trip on loopback takes a few passes
        reactor.run_once(POLL_MS)
        if sock.poll(0):
            return sock.recv_multipart()
    raise AssertionError("no reply")


def _dealer(endpoint: str, kind: int = zmq.DEALER, identity: bytes | None = None) -> zmq.Socket:
    sock = zmq.Context.instance().socket(kind)
    sock.setsockopt(zmq.LINGER, 0)
    if identity is not None:
        sock.setsockopt(zmq.IDENTITY, identity)
    sock.connect(endpoint)
    return sock


def test_dealer_and_req_round_trips_with_the_announced_identity(served) -> None:  # noqa: ANN001
    reactor, _, endpoint = served
    dealer, req = _dealer(endpoint, identity=b"me/1"), _dealer(endpoint, zmq.REQ)
    try:
        reply = _exchange(reactor, dealer, wire.encode_request(P.PING, {"id": 1}, [b"x" * 300_000, b"y"]))
        header, payloads = wire.decode_reply(reply)
        assert header["payloads"] == 2 and header["identity"] == b"me/1" and payloads == [b"x" * 300_000]
        header, _ = wire.decode_reply([b""] + _exchange(reactor, req, wire.encode_request(P.PING, {"id": 2})[1:]))
        assert header["id"] == 2 and header["identity"].startswith(b"\0")
    finally:
        dealer.close()
        req.close()


def test_the_frame_limit_holds_as_frames_arrive(served) -> None:  # noqa: ANN001
    reactor, _, endpoint = served
    dealer = _dealer(endpoint)
    try:
        head = wire.encode_request(P.PING, {"id": 3})  # 4 frames; the identity makes 5
        at_limit = head + [b"p"] * (P.FRAMES_MAX - len(head) - 1)
        header, _ = wire.decode_reply(_exchange(reactor, dealer, at_limit))
        assert header["payloads"] == P.FRAMES_MAX - 5
        header, _ = wire.decode_reply(_exchange(reactor, dealer, at_limit + [b"p"]))
        assert header["error"] == P.REQUEST_TOO_LARGE and header["id"] == 3
        header, _ = wire.decode_reply(_exchange(reactor, dealer, wire.encode_request(P.PING, {"id": 4})))
        assert header["id"] == 4  # the same connection goes on
    finally:
        dealer.close()


@pytest.mark.parametrize("opening", [
    b"GET / HTTP/1.1\r\n\r\n" + bytes(64),                                  # not ZMTP
    GREETING[:10] + bytes([2, 0]) + GREETING[12:],                         # ZMTP 2
    GREETING[:12] + b"PLAIN".ljust(20, b"\0") + GREETING[32:],             # another mechanism
    GREETING + bytes([0x00, 3]) + b"abc",                                  # a message before READY
    GREETING + bytes([0x04, 25]) + b"\x05READY\x0bSocket-Type\x00\x00\x00\x03PUB",  # a PUB
], ids=["http", "zmtp2", "plain", "no-ready", "pub"])
def test_a_peer_that_is_not_a_zmtp3_dealer_is_disconnected(served, opening: bytes) -> None:  # noqa: ANN001
    reactor, server, endpoint = served
    host, port = endpoint[len("tcp://"):].rsplit(":", 1)
    raw = socket.create_connection((host, int(port)), timeout=5)
    try:
        raw.sendall(opening)
        raw.setblocking(False)
        received, closed = b"", False
        for _ in range(PASSES_MAX):
            reactor.run_once(POLL_MS)
            try:
                chunk = raw.recv(65536)
            except BlockingIOError:
                continue
            if not chunk:
                closed = True
                break
            received += chunk
        assert closed, f"still connected after {received[:80]!r}"
        assert server.counters["protocol_violations"] >= 1
    finally:
        raw.close()
    dealer = _dealer(endpoint)
    try:
        assert wire.decode_reply(_exchange(reactor, dealer, wire.encode_request(P.PING, {"id": 5})))[0]["id"] == 5
    finally:
        dealer.close()
