"""Metadata in a METADATA answer that cannot be read (a peer of another version, a bug, a hostile
node) is a failed answer for every reader of it, as an unreadable push already was: reading it
raised out of the reply callback -- in a consumer service's instance thread or a producer
service's sender that stopped the node (a bug, by the reactor's rule), in ``fetch_metadata``
it ended the bootstrap instead of asking the next endpoint, in the monitor it stopped the
node."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import zmq

from fabric import protocol as P
from fabric.client.bootstrap import fetch_metadata
from fabric.client.consumer import Consumer
from fabric.config import load_config
from nodes.local_cluster import make_config
from nodes.monitor import Monitor
from tests.unit.builders_sender import sender_metadata
from tests.unit.fakes import RecordingClient

UNREADABLE = {"metadata": {"version": 7, "brokers": 5, "topics": {}}}  # brokers: not a list


def test_a_consumer_takes_an_unreadable_answer_for_a_failed_one() -> None:
    clients: dict[str, RecordingClient] = {}
    consumer = Consumer(["tcp://127.0.0.1:1", "tcp://127.0.0.1:2"],
                        client_factory=lambda endpoint: clients.setdefault(endpoint, RecordingClient()))
    try:
        consumer._request_metadata()
        clients["tcp://127.0.0.1:1"].answer_last(P.METADATA, UNREADABLE)
        assert consumer.metadata.version == -1 and not consumer._md_in_flight
        consumer._request_metadata()  # the next endpoint is asked
        assert clients["tcp://127.0.0.1:2"].of(P.METADATA)
    finally:
        consumer.close()


def test_a_producers_sender_takes_an_unreadable_answer_for_a_failed_one(make_sender_rig: Any) -> None:
    rig = make_sender_rig()
    rig.sender._refresh_metadata()
    [client] = [c for c in rig.clients.values() if c.of(P.METADATA)]
    client.answer_last(P.METADATA, UNREADABLE)
    assert rig.metadata.current.version == 1 and not rig.sender._md_in_flight
    assert rig.metadata.wanted, "no new metadata asked for"


def test_fetch_metadata_asks_the_next_endpoint_after_an_unreadable_answer(scripted: Any) -> None:
    good = sender_metadata(version=3).to_wire()
    first = scripted(lambda req: (UNREADABLE, []))
    second = scripted(lambda req: ({"metadata": good}, []))
    md, endpoint = fetch_metadata(zmq.Context.instance(), [first, second], timeout_ms=2000)
    assert (md.version, endpoint) == (3, second)


def test_the_monitor_takes_an_unreadable_snapshot_for_a_failed_one(tmp_path: Path) -> None:
    monitor = Monitor(load_config(make_config(tmp_path, 1, extra_nodes=("monitor",)), environ={}), "monitor")
    sent: list = []
    monitor.coordinator.request = lambda cmd, header, payloads=(), *, callback, timeout_ms: sent.append(callback)  # type: ignore[method-assign]
    try:
        monitor._refresh_metadata()
        sent[-1](UNREADABLE, [], None)
        assert monitor.facts.metadata is None and not monitor._metadata_in_flight
        assert monitor.counters["metadata_malformed"] == 1
    finally:
        monitor.close()
