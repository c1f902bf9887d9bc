"""Replies on a request port (fabric.zmtp) with a large frame (a consumer's fetch of a few
MiB): the large frame is handed to libzmq as it is -- no join, no copy -- after the rest of the
reply, small replies are joined and copied (pyzmq's zero-copy costs a round trip through its
garbage-collector thread), both arrive intact at a real DEALER, and a reply whose tail cannot
be queued disconnects the peer rather than leave half a reply on the wire."""

from __future__ import annotations

from fabric import wire
from tests.unit.fakes import BIG, PASSES_MAX, ask


def test_a_large_frame_goes_out_as_it_is_and_a_small_reply_is_joined_and_copied(served) -> None:  # noqa: ANN001
    reactor, _, spy, dealer = served
    header, payloads = wire.decode_reply(ask(reactor, dealer, 1, True))
    assert header["id"] == 1 and payloads == [b"a" * 10, BIG, b"z" * 10]
    big_sends = [copy for data, copy in spy.sends if data is BIG]
    assert big_sends == [False]  # the very object: neither joined nor copied
    del spy.sends[:]
    header, payloads = wire.decode_reply(ask(reactor, dealer, 2, False))
    assert header["id"] == 2 and payloads == [b"small" * 100]
    assert [copy for _, copy in spy.sends] == [True]  # one joined message, copied


def test_a_reply_cut_after_its_start_disconnects_the_peer_and_the_port_goes_on(served) -> None:  # noqa: ANN001
    reactor, server, spy, dealer = served
    assert ask(reactor, dealer, 1, False) is not None  # connected and handshaken
    spy.sends.clear()
    spy.refuse_at = 1  # the big frame, after the head of the reply went out
    assert ask(reactor, dealer, 2, True) is None  # nothing half-read: the peer was cut off
    assert server.counters["reply_cut_disconnected"] == 1
    spy.refuse_at = None
    for rid in range(3, 3 + PASSES_MAX):  # the DEALER reconnects by itself; bounded retries
        reply = ask(reactor, dealer, rid, True)
        if reply is not None:
            header, payloads = wire.decode_reply(reply)
            assert 3 <= header["id"] <= rid and payloads[1] == BIG  # a retry's reply may overtake
            return
    raise AssertionError("the port did not serve the peer again")
