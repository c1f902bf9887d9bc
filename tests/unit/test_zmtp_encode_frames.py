"""``fabric.zmtp_codec.encode_frames`` writes a message of short bytes frames (the requests, replies,
acks and heartbeats) without a call per frame: its pieces must be byte for byte those of the
general encoder, for every mix of frame sizes, types and join bounds."""

from __future__ import annotations

import random

import pytest

from fabric.zmtp_codec import _encode_frames, encode_frames


def _frames(rng: random.Random) -> list:
    out: list = []
    for _ in range(rng.randint(1, 20)):
        n = rng.choice([0, 1, 2, 100, 254, 255, 256, 300, 70_000])
        data = rng.randbytes(n)
        out.append(rng.choice([bytes, bytearray, memoryview])(data) if rng.random() < 0.2 else data)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_the_short_frame_path_writes_what_the_general_encoder_writes(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(50):
        frames = _frames(rng)
        bound = rng.choice([0, 100, 255, 256, 64 * 1024])
        pieces, sizes = encode_frames(frames, bound)
        expected_pieces, expected_sizes = _encode_frames(frames, bound)
        assert sizes == expected_sizes
        assert [bytes(p) for p in pieces] == [bytes(p) for p in expected_pieces]


def test_the_frames_of_an_ack_are_one_piece_with_their_headers() -> None:
    pieces, sizes = encode_frames([b"", b"L1", b"ACK", b"\x81\xa1a\x01"], 64 * 1024)
    assert pieces == [b"\x01\x00" + b"\x01\x02L1" + b"\x01\x03ACK" + b"\x00\x04\x81\xa1a\x01"] and sizes == [17]
