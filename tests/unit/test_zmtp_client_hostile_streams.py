"""ZmtpDealer's parser takes a message of short frames that is whole in its buffer in one loop;
a stream read a byte at a time never has a message of several frames whole, so it goes frame
by frame. A hostile stream -- commands (PINGs) between and inside messages, short frames sent
in the long encoding, frame flags with reserved bits, messages of ``P.FRAMES_MAX`` frames and
one more, empty frames, a handler that raises -- must be handed on the same however it is cut:
the same messages in the same order, refused (ProtocolViolation) at the same message, and the
PINGs answered the same."""

from __future__ import annotations

import random
import struct

import pytest

from fabric import protocol as P
from fabric.zmtp_codec import FLAG_COMMAND, FLAG_LONG, FLAG_MORE, ProtocolViolation, command
from tests.unit.zmtp_support import DealerClient, MakeClient, RawServer

UNITS = 40
PARSES_PER_FEED_MAX = 1_000  # a raising handler leaves the rest for a later parse: bounded


class _Refused(Exception):
    """What the handler raises for a message whose first frame starts with b"!"."""


def _message(rng: random.Random, frames_n: int) -> bytes:
    out = []
    for i in range(frames_n):
        body = rng.choice([b"", b"!", rng.randbytes(rng.choice([1, 7, 254, 255]))])
        flags = (FLAG_MORE if i < frames_n - 1 else 0) | rng.choice([0, 0, 0, 0x08, 0x40])  # reserved bits
        out.append(bytes([flags, len(body)]) + body)
    return b"".join(out)


def _unit(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.55:
        return _message(rng, rng.randint(1, 6))
    if kind < 0.7:  # a short frame in the long encoding (a message of one frame, or the first of two)
        body = rng.randbytes(rng.choice([0, 5, 255]))
        more = rng.random() < 0.5
        head = struct.pack(">BQ", FLAG_LONG | (FLAG_MORE if more else 0), len(body))
        return head + body + (_message(rng, 1) if more else b"")
    if kind < 0.85:  # a PING between messages, or inside one
        ping = command(b"\x04PING\x00\x00" + rng.randbytes(3))
        if rng.random() < 0.5:
            return ping
        return bytes([FLAG_MORE, 1]) + b"a" + ping + bytes([0, 1]) + b"z"
    if kind < 0.97:
        return _message(rng, rng.choice([P.FRAMES_MAX - 1, P.FRAMES_MAX]))
    return _message(rng, P.FRAMES_MAX + 1)  # refused: the connection is dropped


def _take(client: DealerClient, chunks: list[bytes]) -> tuple[list, str, list[bytes]]:
    """Feed ``chunks`` as reads; the messages handed on (a raising handler's too), the
    violation that ended the connection, if any, and what the dealer wrote (its PONGs)."""
    dealer = client.dealer
    written: list[bytes] = []
    write = dealer._write

    def noted(pieces: list, sizes: list[int], on_written: object = None) -> None:
        written.append(b"".join(bytes(p) for p in pieces))
        write(pieces, sizes, on_written)
    dealer._write = noted  # type: ignore[method-assign]

    def handle(frames: list) -> None:
        client.got.append([bytes(f) for f in frames])
        if frames[0][:1] == b"!":
            raise _Refused()
    dealer.on_message = handle
    for chunk in chunks:
        dealer._in += chunk
        for _ in range(PARSES_PER_FEED_MAX):
            if dealer._resume is not None:  # what a raising handler left: now, not on a timer
                dealer._resume.cancel()
                dealer._resume = None
            dealer._budget = 1_000_000  # this test is about framing, not the per-pass bound
            try:
                dealer._parse()
            except ProtocolViolation as e:
                return client.got, str(e), written
            except _Refused:
                continue
            if dealer._resume is None:
                break
        else:
            raise AssertionError("a feed did not end")
    return client.got, "", written


@pytest.mark.parametrize("seed", range(8))
def test_a_hostile_stream_is_handed_on_the_same_however_it_is_cut(
        seed: int, dealer_client: MakeClient) -> None:
    rng = random.Random(seed)
    stream = b"".join(_unit(rng) for _ in range(UNITS))
    chunks, at = [], 0
    while at < len(stream):
        n = rng.choice([1, 2, 3, 9, 50, 300, 4096, 100_000])
        chunks.append(stream[at:at + n])
        at += n
    outcomes = []
    for cut in (chunks, [stream[i:i + 1] for i in range(len(stream))]):
        server = RawServer()
        try:
            client = dealer_client(server.port, identity=None)
            server.connect(client)
            outcomes.append(_take(client, cut))
        finally:
            client.dealer.close()
            server.close()
    (got, violation, pongs), (got_by_byte, violation_by_byte, pongs_by_byte) = outcomes
    assert got == got_by_byte and violation == violation_by_byte and pongs == pongs_by_byte
    assert any(len(m) > 1 for m in got)  # messages of several frames went by the whole-message path
