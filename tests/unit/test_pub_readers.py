"""Every subscriber reads PUB messages through ``fabric.wire.decode_pub`` (the broker's and the
monitor's metadata pushes, the gateway's monitor events): a message it cannot read is counted
and dropped, and only the reading is forgiven -- a bug while applying what was read stops the
node (the monitor used to log it as an unreadable message and carry on)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zmq

from fabric import protocol as P
from fabric import wire
from fabric.config import load_config
from fabric.errors import MalformedFrame
from fabric.metadata import ClusterMetadata
from fabric.reactor import Reactor
from nodes.gateway.monitor_link import MonitorRelay
from nodes.local_cluster import make_config
from nodes.monitor import Monitor


def test_decode_pub_takes_one_kind_of_several_and_says_which() -> None:
    frames = wire.encode_pub(P.TOPIC_STATUS, P.PUB_STATUS, {"type": "status"})
    msg = wire.decode_pub(frames, (P.PUB_EVENT, P.PUB_STATUS))
    assert msg.kind == P.PUB_STATUS and msg.header == {"type": "status"}
    with pytest.raises(MalformedFrame):
        wire.decode_pub(frames, (P.PUB_EVENT, P.PUB_HEARTBEAT))


@pytest.fixture
def monitor(tmp_path: Path) -> Any:
    m = Monitor(load_config(make_config(tmp_path, 1, extra_nodes=("monitor",)), environ={}), "monitor")
    yield m
    m.close()


def test_a_bug_while_the_monitor_applies_metadata_stops_it(monitor: Monitor) -> None:
    def broken(md: ClusterMetadata) -> None:
        raise TypeError("a bug in applying metadata")
    monitor.facts.apply_metadata = broken  # type: ignore[method-assign]
    push = wire.encode_metadata_push(ClusterMetadata.empty().to_wire())
    with pytest.raises(TypeError, match="a bug"):
        monitor._on_sub(push)
    assert monitor.counters["sub_malformed"] == 0


def test_the_monitor_counts_a_message_of_a_kind_it_does_not_read(monitor: Monitor) -> None:
    monitor._on_sub([P.TOPIC_METADATA, P.VERSION, b"??", wire.pack({"version": 1})])
    assert monitor.counters["sub_malformed"] == 1


class _Hub:
    def __init__(self) -> None:
        self.events: list[dict] = []

    def publish(self, event: dict) -> None:
        self.events.append(event)


def test_the_gateway_relays_monitor_events_and_counts_what_it_cannot_read(tmp_path: Path) -> None:
    config = load_config(make_config(tmp_path, 1, extra_nodes=("monitor",)), environ={})
    hub = _Hub()
    relay = MonitorRelay(zmq.Context.instance(), Reactor(), config, hub)
    try:
        relay._on_sub(wire.encode_pub(P.TOPIC_STATUS, P.PUB_STATUS, {"cluster": "healthy"}))
        relay._on_sub(wire.encode_pub(P.TOPIC_EVENT, P.PUB_EVENT, {"type": "alert"}))
        relay._on_sub([P.TOPIC_EVENT, P.VERSION, P.PUB_EVENT, b"\xc1"])
        relay._on_sub([P.TOPIC_EVENT, P.VERSION, P.PUB_HEARTBEAT, wire.pack({"type": "x"})])
        assert hub.events == [{"cluster": "healthy", "type": "status"}, {"type": "alert"}]
        assert relay.malformed == 2
    finally:
        relay.close()
