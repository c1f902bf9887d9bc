"""``RequestHandlers.on_produce`` reads a PRODUCE request's usual fields (``parts``, ``acks``,
``timeout_ms``) without a typed get each. Whatever the header, it must decide as the typed gets
in their documented order decide: ``parts``, then ``acks``, then whether ``acks`` is one of the
three, then ``timeout_ms``, then one part per payload frame -- the same refusal (error type, code and message, which names the
field the client got wrong first) or the same request queued for the group commit."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from fabric import protocol as P
from fabric.errors import MalformedFrame, RemoteError
from fabric.rpc import DEFER
from nodes.broker.handlers import RequestHandlers
from tests.unit.fakes import broker_core, loom_handlers, make_batch, request

FIELDS = ("parts", "acks", "timeout_ms")
VALUES: list[Any] = [[["t", 0, -1, 0]], [], 0, 1, -1, 2, -2, 1000, 2**63, True, False, 1.5, "1", None, b"x", {}]


def _refusal(e: MalformedFrame | RemoteError) -> tuple[str, int, str]:
    return type(e).__name__, e.code, str(e)


def _typed_gets(header: dict) -> Any:
    """What the typed gets decide for ``header`` (the general path): the acks queued, or the
    refusal as (type, code, message)."""
    req = request(P.PRODUCE, [make_batch(1)], **header)
    try:
        parts = req.get("parts", list)
        acks = req.get("acks", int, 1)
        if acks not in (0, 1, -1):
            raise RemoteError(P.MALFORMED_REQUEST, "acks must be 0, 1 or -1 (all)")
        req.get("timeout_ms", int, 0)
        if len(parts) != len(req.payloads):
            raise RemoteError(P.MALFORMED_REQUEST, f"{len(parts)} parts but {len(req.payloads)} payload frames")
    except (MalformedFrame, RemoteError) as e:
        return _refusal(e)
    return acks


def _decided(handlers: RequestHandlers, header: dict) -> Any:
    handlers._produce_queue.clear()
    try:
        answer = handlers.on_produce(request(P.PRODUCE, [make_batch(1)], **header))
    except (MalformedFrame, RemoteError) as e:
        assert handlers._produce_queue == []  # a refused request queues nothing
        return _refusal(e)
    assert answer is DEFER
    [(_, append, _)] = handlers._produce_queue
    return append.acks


def _header(rng: random.Random) -> dict:
    header = {"parts": [["t", 0, -1, 0]], "acks": -1, "timeout_ms": 1000}
    for name in rng.sample(FIELDS, rng.randint(0, 3)):
        value = rng.choice(VALUES + ["absent"])
        if value == "absent":
            del header[name]
        else:
            header[name] = value
    return header


def test_acks_outside_the_three_is_named_before_a_mistyped_timeout(tmp_path: Path) -> None:
    handlers, _ = loom_handlers(broker_core(tmp_path))
    decided = _decided(handlers, {"parts": [["t", 0, -1, 0]], "acks": 2, "timeout_ms": "soon"})
    assert decided[1] == P.MALFORMED_REQUEST and "acks must be 0, 1 or -1" in decided[2]


@pytest.mark.parametrize("seed", range(3))
def test_every_header_is_decided_as_the_typed_gets_decide_it(tmp_path: Path, seed: int) -> None:
    handlers, _ = loom_handlers(broker_core(tmp_path))
    rng = random.Random(seed)
    for _ in range(400):
        header = _header(rng)
        assert _decided(handlers, header) == _typed_gets(header), header
