"""the consumer service's fetch budget is checked only before the fetch starts. A
poll that itself runs past the caller's patience -- GroupConsumer._poll_views rejoins inside
poll, and a JOIN_GROUP waits up to rebalance_timeout_ms + 5 s whatever the poll's timeout --
still takes records and moves the position past them after the gateway gave up (503): the
records are skipped (and auto-committed). Also: assign() now moves partitions the instance
already held back to the committed offset (Kafka's assign() keeps their positions)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

import fabric.client.services as services_mod
import nodes.consumer as consumer_mod
from fabric import protocol as P
from fabric.client.services import ServiceConsumer
from fabric.config import load_config
from fabric.errors import RequestTimeout
from fabric.records import Record
from nodes.consumer import ConsumerService, Instance, InstanceHost
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.fakes import NoHeartbeat, ScriptedCoordinatorLink

DEADLINE_S = 10.0


class _RejoiningConsumer:
    """Ten records per poll from its position; a poll with ``rejoin`` set first waits for it
    (a JOIN_GROUP held by the coordinator until the rebalance completes)."""

    rejoin: threading.Event | None = None
    joining = threading.Event()

    def __init__(self, bootstrap: Any, group_id: str, **config: Any) -> None:
        self.position = 0
        self.subscription: list[str] = []

    def maintain(self) -> None:
        pass

    def poll(self, timeout_ms: int, max_records: int) -> list[Record]:
        rejoin, _RejoiningConsumer.rejoin = _RejoiningConsumer.rejoin, None
        if rejoin is not None:
            _RejoiningConsumer.joining.set()
            rejoin.wait(DEADLINE_S)
        out = [Record("t", 0, o, 0, None, b"v%d" % o, None) for o in range(self.position, self.position + 10)]
        self.position += 10
        return out

    def seek(self, tp: Any, offset: int) -> None:
        self.position = offset

    def close(self) -> None:
        pass


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsumerService]:
    monkeypatch.setattr(consumer_mod, "GroupConsumer", _RejoiningConsumer)
    svc = ConsumerService(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), "consumer-1")
    t = threading.Thread(target=svc.reactor.run, daemon=True)
    t.start()
    try:
        yield svc
    finally:
        svc.reactor.stop()
        t.join(5)
        svc.close()


def test_a_fetch_whose_poll_outlasts_the_caller_does_not_move_the_position_past_its_records(
        service: ConsumerService, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services_mod, "CALL_TIMEOUT_MS", 300)
    sc = ServiceConsumer(service.node_config.endpoint)
    release = threading.Event()
    try:
        inst = sc.create("g", "c1", {})
        _RejoiningConsumer.joining.clear()
        _RejoiningConsumer.rejoin = release
        with pytest.raises(RequestTimeout):
            inst.fetch(timeout_ms=0)  # its poll is in a rebalance: the gateway gives up, answers 503
        assert _RejoiningConsumer.joining.is_set()
        release.set()  # the rebalance completes: that poll takes records 0..9 for nobody
        got = inst.fetch(timeout_ms=0)
        assert got[0].offset == 0, f"records 0..{got[0].offset - 1} were fetched for nobody: skipped"
    finally:
        release.set()
        sc.close()


def test_assigning_one_more_partition_keeps_the_position_of_those_already_assigned() -> None:
    def coordinator(command: bytes, header: dict) -> dict:
        if command == P.OFFSET_FETCH:
            return {"offsets": [[t, p, 42, ""] for t, p in header["partitions"]]}
        return {}
    inst = Instance(InstanceHost("consumer-1", ["127.0.0.1:1"], 60_000, lambda e: None), "g", "m",
                    {"coordinator": ScriptedCoordinatorLink(coordinator), "heartbeat_factory": NoHeartbeat.make,
                     "enable_auto_commit": False}, 0)
    inst._do("create", {})
    try:
        inst._do("assign", {"partitions": [["t", 0]]})
        inst._do("seek", {"to": "offsets", "offsets": [["t", 0, 100]]})  # consumed up to 100, not committed yet
        inst._do("assign", {"partitions": [["t", 0], ["t", 1]]})        # one more partition
        positions = dict(((t, p), o) for t, p, o in inst._do("assignment", {})["positions"])
        assert positions[("t", 0)] == 100, f"t-0 moved back to the committed 42: records 42..99 again ({positions})"
    finally:
        inst._close()
