"""ZmtpDealer's parser (fabric/zmtp_client.py) takes a message of short frames that is whole in
its buffer in one loop and hands it on once; the frame-by-frame path takes the rest. However a
stream of mixed messages is cut into reads, the messages handed on are those sent, in order, and
a message of more than ``P.FRAMES_MAX`` frames is still refused."""

from __future__ import annotations

import random

import pytest

from fabric import protocol as P
from fabric.zmtp_codec import ProtocolViolation, frame_header
from tests.unit.zmtp_support import MakeClient, RawServer


def _message(frames: list[bytes]) -> bytes:
    return b"".join(frame_header(len(f), more=i < len(frames) - 1) + f for i, f in enumerate(frames))


def _frames(rng: random.Random) -> list[bytes]:
    sizes = [0, 1, 2, 100, 254, 255, 256, 300, 70_000]
    weights = [3, 3, 3, 6, 2, 2, 1, 1, 1] if rng.random() < 0.3 else [3, 3, 3, 6, 2, 2, 0, 0, 0]
    return [rng.randbytes(rng.choices(sizes, weights)[0]) for _ in range(rng.randint(1, 8))]


def _feed(client, data: bytes) -> None:
    dealer = client.dealer
    dealer._in += data
    dealer._budget = 1_000_000  # this test is about framing, not the per-pass bound
    dealer._parse()


@pytest.mark.parametrize("seed", range(12))
def test_messages_cut_anywhere_are_handed_on_whole_and_in_order(
        seed: int, raw_server: RawServer, dealer_client: MakeClient) -> None:
    rng = random.Random(seed)
    client = dealer_client(raw_server.port, identity=None)
    raw_server.connect(client)
    sent = [_frames(rng) for _ in range(60)]
    stream = b"".join(_message(m) for m in sent)
    at = 0
    while at < len(stream):
        n = rng.choice([1, 2, 3, 7, 50, 300, 4096, 100_000])
        _feed(client, stream[at:at + n])
        at += n
    assert client.got == sent


def test_a_message_of_too_many_short_frames_is_still_refused(
        raw_server: RawServer, dealer_client: MakeClient) -> None:
    client = dealer_client(raw_server.port, identity=None)
    raw_server.connect(client)
    _feed(client, _message([b"", b"ok"]))
    with pytest.raises(ProtocolViolation):
        _feed(client, _message([b"x"] * (P.FRAMES_MAX + 1)))
    assert client.got == [[b"", b"ok"]]
