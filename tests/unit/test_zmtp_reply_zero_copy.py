"""Replies on a request port (fabric.zmtp) with a large frame (a consumer's fetch of a few
MiB): the large frame is handed to libzmq as it is -- no join, no copy -- after the rest of the
reply, small replies are joined and copied (pyzmq's zero-copy costs a round trip through its
garbage-collector thread), both arrive intact at a real DEALER, and a reply whose tail cannot
be queued disconnects the peer rather than leave half a reply on the wire."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.reactor import Reactor
from fabric.rpc import RpcServer
from tests.harness import free_ports

PASSES_MAX = 200
POLL_MS = 10
BIG = bytes(range(256)) * (P.REPLY_ZERO_COPY_BYTES_MIN // 256 + 1)


class _SendSpy:
    """The server's real STREAM socket, with each send noted; ``refuse_at`` makes that send
    (counted from 0) fail as a full queue would."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.sends: list[tuple[Any, bool]] = []
        self.refuse_at: int | None = None

    def send_multipart(self, frames: list, flags: int = 0, copy: bool = True, **kw: Any) -> Any:
        self.sends.append((frames[-1], copy))
        if len(self.sends) - 1 == self.refuse_at:
            raise zmq.Again()
        return self.sock.send_multipart(frames, flags, copy=copy, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


@pytest.fixture
def served() -> Iterator[tuple[Reactor, RpcServer, _SendSpy, zmq.Socket]]:
    reactor = Reactor()
    endpoint = f"tcp://127.0.0.1:{free_ports(1)[0]}"
    server = RpcServer(zmq.Context.instance(), reactor, endpoint)
    server.route(P.PING, lambda req: ({"n": 1}, [b"a" * 10, BIG, b"z" * 10] if req.header.get("big") else [b"small" * 100]))
    real = server.port.sock
    spy = server.port.sock = _SendSpy(real)
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(endpoint)
    try:
        yield reactor, server, spy, dealer
    finally:
        server.port.sock = real
        dealer.close()
        server.close()


def _ask(reactor: Reactor, dealer: zmq.Socket, rid: int, big: bool) -> list[bytes] | None:
    dealer.send_multipart(wire.encode_request(P.PING, {"id": rid, "big": big}))
    for _ in range(PASSES_MAX):  # bounded: a round trip on loopback takes a few passes
        reactor.run_once(POLL_MS)
        if dealer.poll(0):
            return dealer.recv_multipart()
    return None


def test_a_large_frame_goes_out_as_it_is_and_a_small_reply_is_joined_and_copied(served) -> None:  # noqa: ANN001
    reactor, _, spy, dealer = served
    header, payloads = wire.decode_reply(_ask(reactor, dealer, 1, True))
    assert header["id"] == 1 and payloads == [b"a" * 10, BIG, b"z" * 10]
    big_sends = [copy for data, copy in spy.sends if data is BIG]
    assert big_sends == [False]  # the very object: neither joined nor copied
    del spy.sends[:]
    header, payloads = wire.decode_reply(_ask(reactor, dealer, 2, False))
    assert header["id"] == 2 and payloads == [b"small" * 100]
    assert [copy for _, copy in spy.sends] == [True]  # one joined message, copied


def test_a_reply_cut_after_its_start_disconnects_the_peer_and_the_port_goes_on(served) -> None:  # noqa: ANN001
    reactor, server, spy, dealer = served
    assert _ask(reactor, dealer, 1, False) is not None  # connected and handshaken
    spy.sends.clear()
    spy.refuse_at = 1  # the big frame, after the head of the reply went out
    assert _ask(reactor, dealer, 2, True) is None  # nothing half-read: the peer was cut off
    assert server.counters["reply_cut_disconnected"] == 1
    spy.refuse_at = None
    for rid in range(3, 3 + PASSES_MAX):  # the DEALER reconnects by itself; bounded retries
        reply = _ask(reactor, dealer, rid, True)
        if reply is not None:
            header, payloads = wire.decode_reply(reply)
            assert 3 <= header["id"] <= rid and payloads[1] == BIG  # a retry's reply may overtake
            return
    raise AssertionError("the port did not serve the peer again")
