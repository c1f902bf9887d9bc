"""``fabric.wire.decode_replication`` reads the stream's common message (``PUB_REPLICA``, every
field present and of its type) with one call per step; whatever it reads must be what the
general decoding (``decode_replica``: ``decode_pub``, then ``ReplicaPosition.from_header``)
reads, and whatever that refuses it refuses with the same error -- for every mix of fields
missing, mistyped, extra, and of bad versions and kinds."""

from __future__ import annotations

import random

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.errors import MalformedFrame

GOOD = {"node": "broker-2", "topic": "t", "partition": 0, "epoch": 3, "hw": 10, "leo": 12, "topic_id": "id-1"}
ODD_VALUES = [None, True, False, 1, -1, 2**40, 1.5, "x", "", b"x", [], {}, [1]]


def _outcome(fn, frames: list) -> tuple:
    try:
        return ("ok", fn(frames))
    except MalformedFrame as e:
        return ("refused", e.code, str(e))


def _general(frames: list) -> tuple:
    position, batches = wire.decode_replica(frames)
    return position.node, [position], batches


def _header(rng: random.Random) -> object:
    if rng.random() < 0.05:
        return rng.choice(ODD_VALUES)
    h = dict(GOOD)
    for key in list(h):
        r = rng.random()
        if r < 0.1:
            del h[key]
        elif r < 0.2:
            h[key] = rng.choice(ODD_VALUES)
    if rng.random() < 0.1:
        h["extra"] = 1
    return h


@pytest.mark.parametrize("seed", range(10))
def test_the_common_message_reads_as_the_general_decoding_reads_it(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(300):
        frames = [P.replica_topic("t", 0), rng.choice([P.VERSION] * 9 + [b"\x09"]),
                  rng.choice([P.PUB_REPLICA] * 9 + [b"X"]), wire.pack(_header(rng)),
                  *[rng.randbytes(rng.randint(0, 50)) for _ in range(rng.randint(0, 2))]]
        if frames[2] != P.PUB_REPLICA:
            continue  # another kind: not this decoding's to compare
        got = _outcome(wire.decode_replication, frames)
        assert got == _outcome(_general, frames), frames
        if got[0] == "ok":
            assert type(got[1][1][0]) is wire.ReplicaPosition


def test_a_header_that_is_not_msgpack_is_refused_by_both() -> None:
    frames = [P.replica_topic("t", 0), P.VERSION, P.PUB_REPLICA, b"\xc1"]
    assert _outcome(wire.decode_replication, frames)[0] == "refused"
    assert _outcome(wire.decode_replication, frames) == _outcome(_general, frames)
