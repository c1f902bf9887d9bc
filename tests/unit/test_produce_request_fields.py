"""A PRODUCE request's own fields (``RequestHandlers.on_produce``, which reads the usual ones
without a typed get each): a field missing or of another type is refused with an error that
names it, an ``acks`` outside 0, 1, -1 is refused, and nothing is queued for the group commit;
a request of the usual fields is queued."""

from __future__ import annotations

from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.errors import MalformedFrame, RemoteError
from fabric.rpc import DEFER
from tests.unit.fakes import broker_core, loom_handlers, make_batch, request

GOOD = {"parts": [["t", 0, -1, 0]], "acks": -1, "timeout_ms": 1000}


@pytest.mark.parametrize("change, names", [
    ({"parts": None}, "parts"), ({"parts": "x"}, "parts"), ({"parts": {"t": 0}}, "parts"),
    ({"acks": True}, "acks"), ({"acks": "all"}, "acks"), ({"acks": 1.0}, "acks"),
    ({"timeout_ms": 1.5}, "timeout_ms"), ({"timeout_ms": True}, "timeout_ms"), ({"timeout_ms": "1"}, "timeout_ms"),
])
def test_a_field_of_another_type_is_refused_naming_it(tmp_path: Path, change: dict, names: str) -> None:
    handlers, _ = loom_handlers(broker_core(tmp_path))
    header = {k: v for k, v in dict(GOOD, **change).items() if v is not None}
    with pytest.raises(MalformedFrame, match=names):
        handlers.on_produce(request(P.PRODUCE, [make_batch(1)], **header))
    assert handlers._produce_queue == []


def test_acks_outside_the_three_is_refused(tmp_path: Path) -> None:
    handlers, _ = loom_handlers(broker_core(tmp_path))
    with pytest.raises(RemoteError, match="acks"):
        handlers.on_produce(request(P.PRODUCE, [make_batch(1)], **dict(GOOD, acks=2)))
    assert handlers._produce_queue == []


@pytest.mark.parametrize("header", [GOOD, {"parts": [["t", 0]]}, {"parts": [["t", 0, -1, 0]], "acks": 0}])
def test_the_usual_fields_and_their_defaults_are_queued(tmp_path: Path, header: dict) -> None:
    handlers, _ = loom_handlers(broker_core(tmp_path))
    assert handlers.on_produce(request(P.PRODUCE, [make_batch(1)], **header)) is DEFER
    [(_, append, malformed)] = handlers._produce_queue
    assert append.acks == header.get("acks", 1) and len(append.inputs) == 1 and malformed == {}


def test_a_request_wrong_in_two_fields_is_refused_for_the_first_checked(tmp_path: Path) -> None:
    handlers, _ = loom_handlers(broker_core(tmp_path))
    with pytest.raises(RemoteError, match="acks must be"):  # acks before timeout_ms, as always
        handlers.on_produce(request(P.PRODUCE, [make_batch(1)], **dict(GOOD, acks=2, timeout_ms="x")))
    with pytest.raises(MalformedFrame, match="parts"):  # parts before acks
        handlers.on_produce(request(P.PRODUCE, [make_batch(1)], **dict(GOOD, parts="x", acks="all")))
