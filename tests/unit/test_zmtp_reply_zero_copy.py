"""A large reply on a request port (a consumer's fetch of a few MiB) is handed to libzmq
without a copy, a small one is copied (pyzmq's zero-copy costs a round trip through its
garbage-collector thread), and both arrive intact at a real DEALER."""

from __future__ import annotations

from typing import Any

import zmq

from fabric import protocol as P
from fabric import wire
from fabric.reactor import Reactor
from fabric.rpc import RpcServer
from tests.harness import free_ports

PASSES_MAX = 200
POLL_MS = 10


class _SendSpy:
    """The server's real STREAM socket, with the ``copy`` flag of each send noted."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.copies: list[tuple[int, bool]] = []

    def send_multipart(self, frames: list, flags: int = 0, copy: bool = True, **kw: Any) -> Any:
        self.copies.append((len(frames[-1]), copy))
        return self.sock.send_multipart(frames, flags, copy=copy, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_a_large_reply_goes_zero_copy_and_a_small_one_is_copied() -> None:
    reactor = Reactor()
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    server = RpcServer(zmq.Context.instance(), reactor, endpoint)
    big = bytes(range(256)) * (P.REPLY_ZERO_COPY_BYTES_MIN // 256 + 1)
    server.route(P.PING, lambda req: ({}, [big] if req.header.get("big") else [b"small" * 100]))
    real = server.port.sock
    spy = server.port.sock = _SendSpy(real)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    try:
        for rid, want_big in ((1, True), (2, False)):
            dealer.send_multipart(wire.encode_request(P.PING, {"id": rid, "big": want_big}))
            for _ in range(PASSES_MAX):  # bounded: a round trip on loopback takes a few passes
                reactor.run_once(POLL_MS)
                if dealer.poll(0):
                    break
            header, payloads = wire.decode_reply(dealer.recv_multipart())
            assert header["id"] == rid and payloads == ([big] if want_big else [b"small" * 100])
        replies = [(size, copy) for size, copy in spy.copies if size > 64]  # the handshake is tiny
        assert [copy for _, copy in replies] == [False, True]
        assert replies[0][0] > P.REPLY_ZERO_COPY_BYTES_MIN > replies[1][0]
    finally:
        server.port.sock = real
        dealer.close()
        server.close()
