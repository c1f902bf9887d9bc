"""``ProduceInput.decode`` reads the part every client of today sends (``[topic, partition,
leader_epoch, possibly_written]``, exact types) without the general checks; what it reads
must be what they read, and what they refuse it refuses, for random parts of every shape."""

from __future__ import annotations

import random

import pytest

from nodes.broker.messages import ProduceInput

VALUES = ["t", "", 0, 1, 2, -1, 7, True, False, 1.0, None, b"t", [0], 2**40]


@pytest.mark.parametrize("seed", range(5))
def test_the_common_part_decodes_as_the_full_check_decodes_it(seed: int) -> None:
    rng = random.Random(seed)
    for _ in range(2000):
        n = rng.choice([0, 1, 2, 3, 4, 4, 4, 5])
        tp = [rng.choice(["t"] * 5 + VALUES)] + [rng.choice([0, 1, 3] * 3 + VALUES) for _ in range(n - 1)]
        tp = tp[:n]
        shape = rng.choice([list] * 8 + [tuple])
        got = ProduceInput.decode(shape(tp), b"data")
        expected = ProduceInput._decode_checked(shape(tp), b"data")
        assert got == expected and type(got) is type(expected), tp
        if got is not None:
            assert type(got.possibly_written) is bool
