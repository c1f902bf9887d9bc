"""The request port's frame reassembly on the zero-copy receive path (fabric/zmtp_parser.py,
fabric/buffers.py): every cut of a stream at every chunk boundary, a peer that closes mid-frame
or declares more than it sends, and no chunk view kept past the handler.

The request port is driven through ``ZmtpServer._on_stream`` with the exact chunks a STREAM
socket would hand it (``[connection id, view]``), so every cut is tried, not a random sample.
"""

from __future__ import annotations

import struct

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.buffers import OwnedFrame
from fabric.reactor import Reactor
from fabric.zmtp import ZmtpServer
from tests.harness import free_ports
from tests.zmtp_peer import GREETING, _property

CID = b"\x00conn-1"
IDENTITY = b"peer"
OWNED = P.OWNED_FRAME_BYTES_MIN


def _frame(body: bytes, *, more: bool, command: bool = False) -> bytes:
    flags = (0x01 if more else 0) | (0x04 if command else 0)
    if len(body) > 255:
        return struct.pack(">BQ", flags | 0x02, len(body)) + body
    return bytes([flags, len(body)]) + body


def _message(frames: list[bytes]) -> bytes:
    return b"".join(_frame(f, more=i < len(frames) - 1) for i, f in enumerate(frames))


HANDSHAKE = GREETING + _frame(b"\x05READY" + _property(b"Socket-Type", b"DEALER") + _property(b"Identity", IDENTITY),
                              more=False, command=True)


def _request(rid: int, payloads: list[bytes]) -> list[bytes]:
    return [b"", P.VERSION, P.PRODUCE, wire.pack({"id": rid}), *payloads]


def _payload(n: int, tag: int) -> bytes:
    return bytes((tag + i) % 251 for i in range(n))


@pytest.fixture(scope="module")
def server() -> ZmtpServer:
    s = ZmtpServer(zmq.Context.instance(), Reactor(), f"tcp://127.0.0.1:{free_ports(1)[0]}", lambda frames: None)
    yield s
    s.close()


def _run(server: ZmtpServer, chunks: list[bytes], *, writable: bool = False) -> list[list]:
    """Feed a fresh connection these chunks (after libzmq's connect notice) as STREAM views;
    returns what was delivered. With ``writable`` each chunk is a view onto a bytearray that is
    overwritten and released right after the call, as libzmq may reuse a chunk's memory once
    the handler returned: resizing it raises BufferError if any view onto it was kept."""
    delivered: list[list] = []
    server.on_message = delivered.append
    server._on_stream([CID, b""])
    for chunk in chunks:
        if writable:
            backing = bytearray(chunk)
            view = memoryview(backing)
            server._on_stream([CID, view])
            backing[:] = b"\xee" * len(backing)
            view.release()
            backing.clear()  # BufferError: a view onto the chunk outlived the handler
        else:
            server._on_stream([CID, memoryview(chunk)])
    return delivered


def _close(server: ZmtpServer) -> None:
    server._on_stream([CID, b""])  # libzmq's disconnect notice
    assert server.connections == 0 and server.buffered_bytes == 0


def _check(delivered: list[list], sent: list[list[bytes]]) -> None:
    assert len(delivered) == len(sent)
    for message, frames in zip(delivered, sent):
        assert message[0] == IDENTITY and message[1:] == frames
        for f in message[1:]:
            assert type(f) is (OwnedFrame if len(f) >= OWNED else bytes)


# Frames at and around every size the parser treats differently: short/long header (255/256),
# bytes/OwnedFrame (OWNED - 1 / OWNED), and one longer than libzmq's 8 KiB chunk.
EDGE_SIZES = [0, 1, 255, 256, OWNED - 1, OWNED, OWNED + 1, 9000]


def test_every_two_way_cut_of_a_stream_of_two_requests_delivers_both_intact(server: ZmtpServer) -> None:
    sent = [_request(1, [_payload(n, k) for k, n in enumerate(EDGE_SIZES)]),
            _request(2, [_payload(OWNED, 77), b"tail"])]
    stream = HANDSHAKE + b"".join(_message(m) for m in sent)
    for cut in range(1, len(stream)):
        delivered = _run(server, [stream[:cut], stream[cut:]], writable=True)
        _check(delivered, sent)
        assert server.buffered_bytes == 0
        _close(server)


def test_every_three_way_cut_around_owned_frames_delivers_them_intact(server: ZmtpServer) -> None:
    """Both cuts anywhere near each boundary of two OWNED-size frames (one ending a message,
    one starting the next, with small frames around them): headers, body starts and ends."""
    sent = [_request(3, [b"s" * 10, _payload(OWNED, 1)]), _request(4, [_payload(OWNED + 3, 2), b"x"])]
    stream = HANDSHAKE + b"".join(_message(m) for m in sent)
    first_end = len(HANDSHAKE) + len(_message(sent[0]))
    second_body = first_end + len(_message(sent[1][:4])) + 9
    marks = (first_end - OWNED - 9, first_end - OWNED, first_end, second_body, second_body + OWNED + 3)
    cuts = sorted({c for m in marks for c in range(m - 12, m + 13) if 0 < c < len(stream)})
    for i, a in enumerate(cuts):
        for b in cuts[i + 1:]:
            delivered = _run(server, [stream[:a], stream[a:b], stream[b:]], writable=True)
            _check(delivered, sent)
            _close(server)


def test_byte_at_a_time_delivers_every_edge_size_intact(server: ZmtpServer) -> None:
    sent = [_request(5, [_payload(n, n) for n in EDGE_SIZES])]
    stream = HANDSHAKE + _message(sent[0])
    delivered = _run(server, [stream[i:i + 1] for i in range(len(stream))], writable=True)
    _check(delivered, sent)
    _close(server)


def test_every_cut_of_an_over_limit_message_of_owned_frames_discards_it_and_serves_the_next(
        server: ZmtpServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """An owned frame within the request limit, then one that takes the message over it: the
    first frame's buffer is dropped, the rest skipped unbuffered, the peer answered, and the
    next message (an owned frame again) delivered intact, wherever the chunks are cut."""
    monkeypatch.setattr(P, "REQUEST_BYTES_MAX", 6000)
    over = _request(9, [_payload(2000, 4), _payload(4000, 5), b"end"])
    after = _request(10, [_payload(3000, 6)])
    stream = HANDSHAKE + _message(over) + _message(after)
    for cut in range(len(HANDSHAKE), len(stream)):
        delivered = _run(server, [stream[:cut], stream[cut:]], writable=True)
        _check(delivered, [after])
        assert server.counters["requests_over_limit"] > 0 and server.buffered_bytes == 0
        _close(server)


def test_a_connection_closing_at_any_point_of_an_owned_frame_frees_its_budget(server: ZmtpServer) -> None:
    """Cut the connection after every byte of a request with an OWNED-size frame: nothing is
    delivered, the shared budget is back to 0, and the next connection is served."""
    sent = _request(6, [_payload(OWNED + 10, 3)])
    stream = HANDSHAKE + _message(sent)
    for cut in range(len(HANDSHAKE), len(stream)):
        assert _run(server, [stream[:cut]], writable=True) == []
        _close(server)
    _check(_run(server, [stream]), [sent])
    _close(server)


def test_a_declared_length_allocates_nothing_before_its_bytes_arrive(server: ZmtpServer) -> None:
    """A frame header declaring the largest size within the limit, then silence: the frame's
    buffer holds only the bytes that came, while the declared size is reserved in the shared
    budget (so many such peers are refused buffer_full, test_zmtp_request_budget.py)."""
    declared = P.REQUEST_BYTES_MAX - 4096
    head = _message([b"", P.VERSION, P.PRODUCE, wire.pack({"id": 7})])
    head = head[:-(2 + len(wire.pack({"id": 7})))] + _frame(wire.pack({"id": 7}), more=True)
    start = HANDSHAKE + head + struct.pack(">BQ", 0x02, declared) + b"abc"
    assert _run(server, [start]) == []
    conn = server._connections[CID]
    assert conn.body is not None and bytes(conn.body) == b"abc" and conn.body_missing == declared - 3
    assert conn.body.__sizeof__() < 64 * 1024  # not a buffer of the declared size
    assert server.buffered_bytes >= declared
    _close(server)


def test_a_declared_length_over_the_limit_is_skipped_and_answered(server: ZmtpServer) -> None:
    start = HANDSHAKE + _frame(b"", more=True) + _frame(P.VERSION, more=True) + _frame(P.PRODUCE, more=True) \
        + _frame(wire.pack({"id": 8}), more=True) + struct.pack(">BQ", 0x02, (1 << 63) - 1) + b"x" * 5000
    assert _run(server, [start]) == []
    conn = server._connections[CID]
    assert conn.body is None and not conn.frames and server.buffered_bytes == 0 and len(conn.buf) == 0
    _close(server)
