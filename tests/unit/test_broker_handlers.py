"""The Loom ROUTER handlers (nodes/broker/handlers.py) over a real BrokerCore: requests decoded
into the core's typed inputs, answers encoded back with the bytes they always had; a malformed
part is answered in its place while the others are served."""

from __future__ import annotations

from pathlib import Path

import msgpack

from fabric import protocol as P
from fabric import wire
from fabric.metadata import PartitionInfo
from fabric.rpc import DEFER
from nodes.broker.core import BrokerCore
from nodes.broker.handlers import RequestHandlers
from tests.unit.fakes import RecordingServer, broker_core, loom_handlers, make_batch, request

LEADER, FOLLOWER = 1, 2


def _leader_of_t0(tmp_path: Path) -> tuple[BrokerCore, RequestHandlers, RecordingServer]:
    """Broker 1 leading t-0 alone (epoch 4); it holds t-1 as a follower of broker 2."""
    core = broker_core(tmp_path, LEADER)
    for p, leader in ((0, LEADER), (1, FOLLOWER)):
        part = core.open_partition("t", p, {})
        core.apply_partition_state(part, PartitionInfo("t", p, leader, 4, (LEADER,), (LEADER,), 1), now_ms=0)
    core.partitions_changed()
    handlers, server = loom_handlers(core)
    return core, handlers, server


def test_produce_answers_a_malformed_part_in_its_place(tmp_path: Path) -> None:
    _, handlers, server = _leader_of_t0(tmp_path)
    req = request(P.PRODUCE, [make_batch(2), make_batch(1), make_batch(3), make_batch(1)],
                  parts=[["t", 0], ["t"], ["t", 0, 4], ["t", 1]], acks=1)
    assert handlers.on_produce(req) is DEFER
    handlers.after_pass()
    results = server.answer(req)["results"]
    assert wire.pack(results) == msgpack.packb([
        [0, 0, "", 4],
        [-1, P.MALFORMED_REQUEST, "each part is [topic, partition], [topic, partition, leader_epoch] or [topic, partition, "
                                  "leader_epoch, flags] (flags 0..3)"],
        [2, 0, "", 4],
        [-1, P.NOT_LEADER, "leader is broker 2"]])


def test_produce_from_a_client_that_knows_a_newer_epoch_is_fenced(tmp_path: Path) -> None:
    core, handlers, server = _leader_of_t0(tmp_path)
    req = request(P.PRODUCE, [make_batch(1)], parts=[["t", 0, 5]], acks=1)
    handlers.on_produce(req)
    handlers.after_pass()
    assert server.answer(req)["results"][0][1] == P.FENCED_LEADER_EPOCH
    assert core.partitions[("t", 0)].log_end_offset == 0


def test_list_offsets_answers_each_part(tmp_path: Path) -> None:
    core, handlers, _ = _leader_of_t0(tmp_path)
    core.partitions[("t", 0)].append_as_leader([make_batch(5)], 1 << 20)
    reply = handlers.on_list_offsets(request(P.LIST_OFFSETS, parts=[
        ["t", 0, -1], ["t", 0, -2], ["t", 1, -1], ["u", 0, -1], ["t", True, -1], ["t", 0]]))
    assert wire.pack(reply) == msgpack.packb({"parts": [
        ["t", 0, 0, 5], ["t", 0, 0, 0], ["t", 1, P.NOT_LEADER, -1], ["u", 0, P.UNKNOWN_TOPIC_OR_PARTITION, -1],
        [None, None, P.MALFORMED_REQUEST, -1], [None, None, P.MALFORMED_REQUEST, -1]]})


def test_a_consumer_fetch_reads_up_to_the_high_watermark(tmp_path: Path) -> None:
    core, handlers, _ = _leader_of_t0(tmp_path)
    part = core.partitions[("t", 0)]
    part.append_as_leader([make_batch(5)], 1 << 20)
    header, payloads = handlers.on_fetch(request(P.FETCH, parts=[["t", 0, 0], "junk"], max_bytes=1 << 16))
    assert wire.unpack(wire.pack(header)) == {"parts": [["t", 0, 0, 5, 5, 0, None],
                                                        [None, None, P.MALFORMED_REQUEST, -1, -1, -1, None]]}
    assert payloads[0] == part.read(0, 1 << 16, 5) and payloads[1] == b""
