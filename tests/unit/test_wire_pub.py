"""PUB/SUB messages in fabric.wire: typed encode/decode for heartbeats, replication-stream
positions and metadata pushes; whatever a subscriber cannot read is a MalformedFrame with a
code (counted and dropped by the subscriber), never a KeyError or TypeError."""

from __future__ import annotations

import msgpack
import pytest

from fabric import protocol as P
from fabric import wire
from fabric.errors import MalformedFrame
from fabric.metadata import ClusterMetadata


def test_a_broker_heartbeat_round_trips() -> None:
    hb = wire.Heartbeat("broker-1", "broker", 42, 1_700_000_000_000, broker_id=1, incarnation="abc", metadata_version=7)
    frames = wire.encode_heartbeat(hb)
    assert frames[0] == P.TOPIC_HEARTBEAT and frames[2] == P.PUB_HEARTBEAT
    assert wire.decode_heartbeat(frames) == hb


def test_a_heartbeat_without_the_broker_fields_decodes_with_none() -> None:
    header = {"node": "producer", "role": "producer", "pid": 1, "ts_ms": 5, "future_field": [1]}
    hb = wire.decode_heartbeat(wire.encode_heartbeat(header))
    assert hb.node == "producer" and hb.broker_id is None and hb.incarnation is None


def test_a_replication_message_round_trips_with_its_batches() -> None:
    pos = wire.ReplicaPosition("broker-2", "orders", 10, 3, 100, 120)
    frames = wire.encode_replica(pos, [b"batch-1", b"batch-2"])
    assert frames[0] == P.replica_topic("orders", 10)
    assert wire.decode_replica(frames) == (pos, [b"batch-1", b"batch-2"])
    assert wire.decode_replica(wire.encode_replica(pos)) == (pos, [])


def test_a_metadata_push_round_trips() -> None:
    md = ClusterMetadata.from_wire({"version": 4, "cluster": "c", "brokers": [[1, "h", 1, 2, True]],
                                    "topics": {"t": {"partitions": [[1, 0, [1], [1]]]}}})
    assert ClusterMetadata.from_wire(wire.decode_metadata_push(wire.encode_metadata_push(md.to_wire()))) == md


def _replica_frames(**header: object) -> list[bytes]:
    return [P.replica_topic("t", 0), P.VERSION, P.PUB_REPLICA, wire.pack(header)]


GOOD = dict(node="broker-1", topic="t", partition=0, epoch=1, hw=0, leo=0)


@pytest.mark.parametrize("frames, code", [
    ([P.replica_topic("t", 0), P.VERSION, P.PUB_REPLICA], P.MALFORMED_REQUEST),                    # no header
    ([P.replica_topic("t", 0), b"\x09", P.PUB_REPLICA, wire.pack(GOOD)], P.UNSUPPORTED_VERSION),
    ([P.replica_topic("t", 0), P.VERSION, P.PUB_HEARTBEAT, wire.pack(GOOD)], P.MALFORMED_REQUEST),  # wrong kind
    ([P.replica_topic("t", 0), P.VERSION, P.PUB_REPLICA, b"\xc1"], P.MALFORMED_REQUEST),           # not msgpack
    ([P.replica_topic("t", 0), P.VERSION, P.PUB_REPLICA, msgpack.packb([1, 2])], P.MALFORMED_REQUEST),
    (_replica_frames(**{k: v for k, v in GOOD.items() if k != "leo"}), P.MALFORMED_REQUEST),      # missing
    (_replica_frames(**dict(GOOD, partition="0")), P.MALFORMED_REQUEST),                          # mistyped
    (_replica_frames(**dict(GOOD, hw=True)), P.MALFORMED_REQUEST),                                # bool is no int
    (_replica_frames(**dict(GOOD, node=5)), P.MALFORMED_REQUEST),
])
def test_an_unreadable_replication_message_is_malformed(frames: list[bytes], code: int) -> None:
    with pytest.raises(MalformedFrame) as e:
        wire.decode_replica(frames)
    assert e.value.code == code


@pytest.mark.parametrize("header", [
    {"role": "broker", "pid": 1, "ts_ms": 1},                                   # no node
    {"node": "b", "role": "broker", "pid": 1, "ts_ms": 1, "broker_id": "1"},    # mistyped broker id
    {"node": "b", "role": "broker", "pid": 1, "ts_ms": 1, "incarnation": 7},
])
def test_an_unreadable_heartbeat_is_malformed(header: dict) -> None:
    with pytest.raises(MalformedFrame):
        wire.decode_heartbeat(wire.encode_heartbeat(header))


@pytest.mark.parametrize("header", [{}, {"version": "3"}, {"version": None}])
def test_a_metadata_push_without_an_int_version_is_malformed(header: dict) -> None:
    with pytest.raises(MalformedFrame):
        wire.decode_metadata_push(wire.encode_metadata_push(header))
