"""Replies on a request port (fabric.zmtp) with a large frame (a consumer's fetch of a few
MiB): the large frame is handed to the kernel as it is -- no join, no copy -- between the
joined pieces of the rest of the reply, small replies are joined into one piece, both arrive
intact at a real DEALER, and a reply the port refuses (the peer's output full) is dropped
whole: the peer is served again with nothing half-read."""

from __future__ import annotations

from fabric import wire
from tests.unit.fakes import BIG, PASSES_MAX, ask


def test_a_large_frame_goes_out_as_it_is_and_a_small_reply_is_joined(served) -> None:  # noqa: ANN001
    reactor, _, spy, dealer = served
    header, payloads = wire.decode_reply(ask(reactor, dealer, 1, True))
    assert header["id"] == 1 and payloads == [b"a" * 10, BIG, b"z" * 10]
    big_writes = [pieces for pieces in spy.writes if any(p is BIG for p in pieces)]
    assert len(big_writes) == 1 and len(big_writes[0]) == 3  # head, the very object, tail
    spy.writes.clear()
    header, payloads = wire.decode_reply(ask(reactor, dealer, 2, False))
    assert header["id"] == 2 and payloads == [b"small" * 100]
    assert [len(pieces) for pieces in spy.writes] == [1]  # one joined piece


def test_a_refused_reply_is_dropped_whole_and_the_peer_is_served_again(served) -> None:  # noqa: ANN001
    reactor, server, spy, dealer = served
    assert ask(reactor, dealer, 1, False) is not None  # connected and handshaken
    spy.refuse_at = len(spy.writes)  # the next reply: refused, as when the peer's output is full
    assert ask(reactor, dealer, 2, True) is None
    assert server.counters["reply_dropped_hwm"] == 1
    spy.refuse_at = None
    for rid in range(3, 3 + PASSES_MAX):  # bounded retries, as a client's request timeouts would make
        reply = ask(reactor, dealer, rid, True)
        if reply is not None:
            header, payloads = wire.decode_reply(reply)
            assert header["id"] == rid and payloads[1] == BIG  # the next reply, whole: no tail of the dropped one
            assert server.port.connections == 1  # the same connection
            return
    raise AssertionError("the port did not serve the peer again")
