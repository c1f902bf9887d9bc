"""The request port's fast path (fabric/zmtp_parser.py ``_deliver_whole``): requests of short frames
that arrive whole in one chunk are handed on straight from the chunk; anything else -- a
message cut by the chunk's end, a long frame, a command, too many frames -- goes through the
general parser from its first byte. Every cut of a mixed stream delivers every request once,
in order; a handler that raises, or a reply that closes the connection, loses and repeats
nothing. Driven through ``ZmtpServer._on_stream`` with the chunks a STREAM socket would give."""

from __future__ import annotations

import pytest

from fabric import protocol as P
from fabric.errors import FabricError
from fabric.zmtp import ZmtpServer
from tests.unit.test_zmtp_frame_reassembly import (CID, HANDSHAKE, IDENTITY, _check, _close, _frame, _message,
                                                   _payload, _request, _run, server)

__all__ = ["server"]  # the module-scoped fixture, shared


def _short(rid: int) -> list[bytes]:
    return _request(rid, [_payload(40, rid), b"k"])


def test_every_cut_of_a_mixed_stream_delivers_each_request_once_in_order(server: ZmtpServer) -> None:
    sent = [_short(1), _short(2), _request(3, [_payload(300, 3)]), _short(4), _request(5, []), _short(6)]
    body = b"".join(_message(m) for m in sent)
    for cut in range(1, len(body)):  # (an empty chunk is libzmq's notice of a disconnect)
        delivered = _run(server, [HANDSHAKE, body[:cut], body[cut:]], writable=True)
        _check(delivered, sent)
        assert server.buffered_bytes == 0
        _close(server)


def test_every_three_way_cut_of_short_requests_delivers_each_once(server: ZmtpServer) -> None:
    sent = [_short(10), _short(11), _short(12)]
    body = b"".join(_message(m) for m in sent)
    for a in range(1, len(body), 3):
        for b in range(a + 1, len(body), 5):
            delivered = _run(server, [HANDSHAKE, body[:a], body[a:b], body[b:]], writable=True)
            _check(delivered, sent)
            _close(server)


def test_whole_short_requests_in_one_chunk_skip_the_per_frame_parser(server: ZmtpServer,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    sent = [_short(20), _short(21), _short(22)]
    delivered: list[list] = []
    server.on_message = delivered.append
    server._on_stream([CID, b""])
    server._on_stream([CID, memoryview(HANDSHAKE)])
    parsed: list[int] = []
    general = ZmtpServer._parse_one
    monkeypatch.setattr(ZmtpServer, "_parse_one", lambda self, *a: parsed.append(1) or general(self, *a))
    server._on_stream([CID, memoryview(b"".join(_message(m) for m in sent))])
    _check(delivered, sent)
    assert parsed == []
    _close(server)


def test_a_handler_that_raises_on_a_whole_request_loses_and_repeats_nothing(server: ZmtpServer) -> None:
    """The first of three whole requests raises: it is not handed on again, and the two after it
    (kept for the next feed, as the general parser keeps what follows a failed message) are
    handed on when the connection's next bytes arrive, before those."""
    sent = [_short(30), _short(31), _short(32), _short(33)]
    delivered: list[list] = []

    def on_message(frames: list) -> None:
        delivered.append(frames)
        if len(delivered) == 1:
            raise FabricError("an operating error while handling it")
    server.on_message = on_message
    server._on_stream([CID, b""])
    server._on_stream([CID, memoryview(HANDSHAKE)])
    with pytest.raises(FabricError):
        server._on_stream([CID, memoryview(b"".join(_message(m) for m in sent[:3]))])
    assert len(delivered) == 1
    server._on_stream([CID, memoryview(_message(sent[3]))])
    _check(delivered, sent)
    _close(server)


def test_a_reply_that_closes_the_connection_stops_the_chunk(server: ZmtpServer) -> None:
    delivered: list[list] = []

    def on_message(frames: list) -> None:
        delivered.append(frames)
        server._close(server._by_identity[IDENTITY])  # as a reply that cannot be queued does
    server.on_message = on_message
    server._on_stream([CID, b""])
    server._on_stream([CID, memoryview(HANDSHAKE)])
    server._on_stream([CID, memoryview(b"".join(_message(_short(r)) for r in (40, 41)))])
    _check(delivered, [_short(40)])
    assert server.connections == 0 or server._connections[CID].closed
    server._connections.pop(CID, None)


def test_too_many_short_frames_are_discarded_and_answered_and_the_next_request_served(server: ZmtpServer) -> None:
    over = _request(50, [b"x"] * (P.FRAMES_MAX - 4))  # identity + the message's frames: one over
    sent = [_short(51)]
    before = server.counters["requests_over_limit"]
    delivered = _run(server, [HANDSHAKE, _message(over) + _message(sent[0])])
    assert server.counters["requests_over_limit"] == before + 1
    _check(delivered, sent)
    _close(server)


def test_a_command_between_requests_is_answered_by_the_general_parser(server: ZmtpServer) -> None:
    ping = _frame(b"\x04PING\x00\x00", more=False, command=True)
    sent = [_short(60), _short(61)]
    delivered = _run(server, [HANDSHAKE, _message(sent[0]) + ping + _message(sent[1])])
    _check(delivered, sent)
    _close(server)


def test_the_most_frames_the_limit_allows_are_handed_on_whole(server: ZmtpServer) -> None:
    """The general parser takes a message of P.FRAMES_MAX frames with the identity (the
    delimiter is the message's first frame): the fast path takes exactly the same."""
    sent = [_request(70, [b"y"] * (P.FRAMES_MAX - 5)), _short(71)]
    assert len(sent[0]) + 1 == P.FRAMES_MAX
    before = server.counters["requests_over_limit"]
    delivered = _run(server, [HANDSHAKE, b"".join(_message(m) for m in sent)])
    assert server.counters["requests_over_limit"] == before
    _check(delivered, sent)
    _close(server)
