"""The data-plane answers (fabric/replies.py) are typed on both sides: the broker's NamedTuples
go out as the same bytes the positional lists did, every reader decodes them into the same
types, and an answer of the wrong shape is a MalformedFrame that the reader survives -- a
client's I/O thread, a consumer and the coordinator's offsets loader treat it as a failed
answer instead of dying on an IndexError."""

from __future__ import annotations

from typing import Any, Callable

import msgpack
import pytest

from fabric import protocol as P
from fabric import wire
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.metadata_cache import MetadataCache
from fabric.client.sender import Sender, SenderSettings
from fabric.clock import ManualClock
from fabric.errors import MalformedFrame, RemoteError
from fabric.metadata import ClusterMetadata
from fabric.replies import (
    FetchEntry,
    ListOffsetsEntry,
    ProduceResult,
    decode_parts,
    decode_produce_results,
    encode_produce_results,
)
from nodes.coordinator.offsets_client import AppendOutcome
from tests.unit.fakes import FakeReactor, RecordingClient

LEADER = "tcp://127.0.0.1:1"


def test_answers_go_out_as_the_positional_lists_they_replace() -> None:
    results = [ProduceResult(40, 0, "", 3), ProduceResult(-1, P.NOT_LEADER, "leader is broker 2")]
    assert wire.pack({"results": encode_produce_results(results)}) == \
        msgpack.packb({"results": [[40, 0, "", 3], [-1, P.NOT_LEADER, "leader is broker 2"]]}, use_bin_type=True)
    entry = FetchEntry("t", 1, 0, 10, 12, 0, [2, 9])
    assert wire.pack({"parts": [entry]}) == msgpack.packb({"parts": [["t", 1, 0, 10, 12, 0, [2, 9]]]}, use_bin_type=True)
    assert wire.pack({"parts": [ListOffsetsEntry("t", 0, 0, 5)]}) == msgpack.packb({"parts": [["t", 0, 0, 5]]})


def test_every_answer_decodes_back_to_its_type() -> None:
    h = wire.unpack(wire.pack({"results": encode_produce_results([ProduceResult(40, 0, "", 3),
                                                                  ProduceResult(-1, P.NOT_LEADER, "moved")])}))
    assert decode_produce_results(h) == [ProduceResult(40, 0, "", 3), ProduceResult(-1, P.NOT_LEADER, "moved", None)]
    h = wire.unpack(wire.pack({"parts": [FetchEntry("t", 1, 0, 10, 12, 0, None)]}))
    assert decode_parts(h, FetchEntry) == [FetchEntry("t", 1, 0, 10, 12, 0, None)]
    h = wire.unpack(wire.pack({"parts": [ListOffsetsEntry("t", 0, 0, 5)]}))
    assert decode_parts(h, ListOffsetsEntry) == [ListOffsetsEntry("t", 0, 0, 5)]


@pytest.mark.parametrize("header, kind", [
    ({"results": [[40]]}, ProduceResult),
    ({"results": [["40", 0, ""]]}, ProduceResult),
    ({"results": "nope"}, ProduceResult),
    ({"parts": [["t", 1, 0, 10]]}, FetchEntry),
    ({"parts": [["t", 1, 0, 10, 12, 0, [1]]]}, FetchEntry),
    ({"parts": [[None, None, 2, -1, -1, -1, None]]}, FetchEntry),
    ({"parts": [["t", 0, 0]]}, ListOffsetsEntry),
    ({"parts": {"t": 0}}, ListOffsetsEntry),
])
def test_an_answer_of_the_wrong_shape_is_malformed(header: dict, kind: Any) -> None:
    with pytest.raises(MalformedFrame):
        decode_produce_results(header) if kind is ProduceResult else decode_parts(header, kind)


def test_a_malformed_produce_answer_fails_its_batches_and_the_sender_keeps_serving() -> None:
    clock = ManualClock(1000)
    accumulator = RecordAccumulator(AccumulatorSettings(linger_ms=0), clock, wake=lambda: None)
    metadata = MetadataCache(wake=lambda: None)
    metadata.update(ClusterMetadata.from_wire({
        "version": 1, "cluster": "c", "coordinator": "tcp://127.0.0.1:9",
        "brokers": [[1, "127.0.0.1", 1, 101, True]],
        "topics": {"t": {"configs": {}, "partitions": [[1, 3, [1], [1]]]}}}))
    clients: dict[str, RecordingClient] = {}
    client: Callable[[str], RecordingClient] = lambda endpoint: clients.setdefault(endpoint, RecordingClient())
    sender = Sender(SenderSettings(acks=1, idempotent=False, delivery_timeout_ms=1000, request_timeout_ms=1000),
                    accumulator, metadata, ["tcp://127.0.0.1:5"], clock=clock, client_factory=client)
    sender.attach(FakeReactor(clock))
    try:
        first = accumulator.append("t", 0, 1_700_000_000_000, None, b"a", None, 30)
        sender.run_pass()
        clients[LEADER].answer_last(P.PRODUCE, {"results": [["not", "a", "result"]]})
        assert isinstance(first.exception(0), RemoteError) and first.exception(0).code == P.UNKNOWN
        second = accumulator.append("t", 0, 1_700_000_000_000, None, b"b", None, 30)
        sender.run_pass()
        clients[LEADER].answer_last(P.PRODUCE, {"results": [[7, 0, ""]]})
        assert second.result(0).offset == 7
    finally:
        sender.stop()


def test_the_offsets_client_reads_a_malformed_append_answer_as_no_answer() -> None:
    out = AppendOutcome.from_reply({"results": [["x"]]}, None)
    assert not out.answered and out.retriable and out.maybe_written
    out = AppendOutcome.from_reply({"results": [[12, 0, ""]]}, None)
    assert out.ok and out.base_offset == 12
