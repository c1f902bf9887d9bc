"""``fabric.wire.decode_request`` decodes the common request (one identity frame, the delimiter,
every limit kept) with a call per step; what it decodes must be what the general decoding
decodes, and every message that one refuses it refuses with the same error -- for random
messages with identities of 0-2 frames, missing delimiters, bad versions, headers that are not
maps or not msgpack, ids of every type, too many frames and too many bytes."""

from __future__ import annotations

import random

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.errors import MalformedFrame

ODD_IDS = [None, True, 1.5, "7", -1, 2**40, 0]


def _outcome(fn, frames: list) -> tuple:
    try:
        r = fn(frames, 5)
    except MalformedFrame as e:
        return ("refused", e.code, str(e), None if e.request is None else (e.request.identity, e.request.id))
    return ("ok", r.identity, r.command, r.header, r.payloads, r.id, r.received_ms)


def _message(rng: random.Random) -> list:
    identity = [rng.choice([b"client-1", b"", bytearray(b"c")]) for _ in range(rng.choice([0, 1, 1, 1, 2]))]
    delimiter = [b""] if rng.random() < 0.9 else []
    version = rng.choice([P.VERSION] * 8 + [b"\x09"])
    command = rng.choice([P.PRODUCE, P.REPLICA_ACK, bytearray(P.FETCH), b"NOPE"])
    header: object = {"id": rng.choice([rng.randint(0, 1000)] * 5 + ODD_IDS)}
    if rng.random() < 0.1:
        header = {"acks": -1}  # no id: 0
    elif rng.random() < 0.05:
        header = [1]  # not a map
    head = wire.pack(header) if rng.random() < 0.95 else b"\xc1"
    payloads = [rng.randbytes(rng.randint(0, 40)) for _ in range(rng.randint(0, 3))]
    frames = [*identity, *delimiter, version, command, head, *payloads]
    r = rng.random()
    if r < 0.03:
        frames += [b"x"] * P.FRAMES_MAX
    elif r < 0.06:
        frames.append(bytes(P.REQUEST_BYTES_MAX))
    elif r < 0.1:
        frames = frames[:rng.randint(0, len(frames))]
    return frames


@pytest.mark.parametrize("seed", range(8))
def test_the_common_request_decodes_as_the_general_decoding(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        frames = _message(rng)
        assert _outcome(wire.decode_request, frames) == _outcome(wire._decode_request_general, frames)
