"""A reply the request port cuts after its start (the peer's send queue full) really
disconnects the peer, even when its queue is still full at the moment of the cut, and a request
pipelined behind it reserves no buffer budget."""

from __future__ import annotations

from typing import Any

import zmq

from fabric import protocol as P
from fabric import wire
from tests.unit.fakes import ask


class _FullFromSpy:
    """The server's real STREAM socket; from send number ``full_from`` (counted from 0) until
    ``drained()`` every send fails as it does while the peer's pipe is at its high-water mark
    -- the close (an empty frame) included, as libzmq checks the pipe for it too."""

    def __init__(self, sock: zmq.Socket) -> None:
        self.sock = sock
        self.sent = 0
        self.full_from: int | None = None

    def send_multipart(self, frames: list, flags: int = 0, copy: bool = True, **kw: Any) -> Any:
        n, self.sent = self.sent, self.sent + 1
        if self.full_from is not None and n >= self.full_from:
            raise zmq.Again()
        return self.sock.send_multipart(frames, flags, copy=copy, **kw)

    def drained(self) -> None:
        self.full_from = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


def test_a_cut_reply_disconnects_the_peer_even_when_its_queue_is_still_full(served) -> None:  # noqa: ANN001
    reactor, server, first_spy, dealer = served
    spy = server.port.sock = _FullFromSpy(first_spy.sock)  # the fixture puts the real socket back
    assert ask(reactor, dealer, 1, False) is not None  # connected and handshaken
    spy.full_from = spy.sent + 1  # the head of the next reply is queued, then the queue is full
    assert ask(reactor, dealer, 2, True) is None
    assert server.counters["reply_cut_disconnected"] == 1
    spy.drained()  # the peer reads again: its queue empties
    for rid in range(3, 3 + 5):  # bounded retries, as a client's request timeouts would make
        reply = ask(reactor, dealer, rid, False)
        if reply is not None:
            header, _ = wire.decode_reply(reply)
            assert header["id"] >= 3
            assert server.port.connections == 1
            return
    raise AssertionError("the peer holds half a reply on a connection the port forgot: it is never served again")


def test_a_request_behind_a_cut_reply_holds_no_buffer_budget(served) -> None:  # noqa: ANN001
    """A large request pipelined behind the one whose reply is cut (read in the same chunk)
    must not be parsed for a connection that is closed: its reserved bytes would count in
    ``buffered_bytes`` with nothing left to release them."""
    reactor, server, first_spy, dealer = served
    spy = server.port.sock = _FullFromSpy(first_spy.sock)
    assert ask(reactor, dealer, 1, False) is not None  # connected and handshaken
    spy.full_from = spy.sent + 1
    dealer.send_multipart(wire.encode_request(P.PING, {"id": 2, "big": True}))
    dealer.send_multipart(wire.encode_request(P.PING, {"id": 3}, [b"x" * (2 * P.OWNED_FRAME_BYTES_MIN + 100_000)]))
    for _ in range(50):  # bounded: a few passes read both requests
        reactor.run_once(10)
    assert server.counters["reply_cut_disconnected"] == 1
    assert server.port.buffered_bytes == 0
