"""The coordinator reads brokers' heartbeats through the one PUB codec
(``fabric.wire.decode_heartbeat``): a real Coordinator, the frames handed to its SUB handler."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import pytest

from fabric import protocol as P
from fabric import wire
from fabric.clock import ManualClock
from fabric.config import load_config
from nodes.coordinator.node import Coordinator
from tests.harness import make_config


@pytest.fixture
def coord(tmp_path: Path) -> Iterator[Coordinator]:
    c = Coordinator(load_config(make_config(tmp_path, 3, engine="memory")), "coordinator", clock=ManualClock(1_000_000))
    try:
        yield c
    finally:
        c.close()


def _heartbeat(coord: Coordinator, broker_id: int, **fields: object) -> list:
    return wire.encode_heartbeat(wire.Heartbeat(f"broker-{broker_id}", "broker", 4242, coord.clock.wall_ms(),
                                                broker_id=broker_id, **fields))  # type: ignore[arg-type]


def test_a_heartbeat_renews_the_session_and_announces_the_incarnation(coord: Coordinator) -> None:
    coord.clock.advance(500)  # type: ignore[attr-defined]
    coord._on_heartbeat(_heartbeat(coord, 2, incarnation="p-1", cluster_id=coord.state.cluster_id))
    assert coord.heartbeats_from == {2} and coord.last_seen_ms[2] == coord.clock.now_ms()
    assert coord.state.incarnations[2] == "p-1"
    coord._on_heartbeat(_heartbeat(coord, 3))  # no incarnation, no cluster id: alive all the same
    assert coord.heartbeats_from == {2, 3}
    assert coord.counters["sub_malformed"] == 0


def test_a_heartbeat_of_another_cluster_or_an_unknown_broker_does_not_count(coord: Coordinator) -> None:
    coord._on_heartbeat(_heartbeat(coord, 2, cluster_id="another-cluster"))
    coord._on_heartbeat(_heartbeat(coord, 9))
    assert coord.heartbeats_from == set()


def test_a_heartbeat_the_coordinator_cannot_read_is_counted_and_dropped(coord: Coordinator) -> None:
    good = _heartbeat(coord, 1)
    bad = [
        good[:3],                                                               # too few frames
        [good[0], b"\x09", *good[2:]],                                          # another protocol version
        [good[0], good[1], P.PUB_METADATA_VERSION, *good[3:]],                  # another kind
        [*good[:3], b"\xc1"],                                                   # not msgpack
        [*good[:3], wire.pack([1, 2])],                                         # not a map
        [*good[:3], wire.pack({"node": "broker-1", "broker_id": "1"})],         # broker_id not an int
        [*good[:3], wire.pack(dict(wire.Heartbeat("broker-1", "broker", 1, 1, 1).to_header(), incarnation=7))],
    ]
    for frames in bad:
        coord._on_heartbeat(frames)
    assert coord.counters["sub_malformed"] == len(bad)
    assert coord.heartbeats_from == set() and coord.state.incarnations == {}
    coord._on_heartbeat(good)
    assert coord.heartbeats_from == {1}


def test_the_heartbeat_codec_carries_the_cluster_id() -> None:
    hb = wire.Heartbeat("broker-1", "broker", 42, 1, broker_id=1, incarnation="i", metadata_version=3, cluster_id="c-1")
    assert wire.decode_heartbeat(wire.encode_heartbeat(hb)) == hb
