"""The producer and consumer services, as a review attacked them: a fetch the gateway had given
up on still ran when the instance thread was free and moved the position past records nobody
received; a failed create touched the reactor from the instance's thread; a manually assigned
instance (and one the gateway moved to another service) ignored the group's committed offsets;
a produce that may have been written was sent again to another producer service, whose producer
id the brokers cannot deduplicate against.

A real ConsumerService in-process (its reactor on a thread) with a fake consumer, a real
Instance with a scripted coordinator, and scripted producer services."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

import fabric.client.services as services_mod
import nodes.consumer_instance as consumer_mod
from fabric import protocol as P
from fabric import wire
from fabric.client.services import ServiceConsumer, ServiceProducer, ServiceRecord, pack_rows, unpack_rows
from fabric.config import load_config
from fabric.errors import FabricError, RequestTimeout
from fabric.records import Record
from nodes.consumer import ConsumerService
from nodes.consumer_instance import Instance, InstanceHost
from nodes.local_cluster import GATEWAY_NODES, make_config, wait_until
from tests.unit.fakes import NoHeartbeat, ScriptedCoordinatorLink

DEADLINE_S = 10.0


class _FakeGroupConsumer:
    """Ten records per poll from its position on t-0; ``maintain`` (or a ``poll``, with
    ``rejoin``) blocks, when ``hold`` is set, until it is released (a rejoin waiting for a
    rebalance, as GroupConsumer's did, up to rebalance_timeout_ms + 5 s whatever the poll's
    timeout, before its join went on across polls)."""

    hold: threading.Event | None = None
    holding = threading.Event()
    joining = False  # GroupConsumer.joining: a join due or under way
    in_poll = False  # the hold is in the next poll, not in maintain

    def __init__(self, bootstrap: Any, group_id: str, **config: Any) -> None:
        if config.get("session_timeout_ms") == 1:
            raise FabricError("session_timeout_ms out of range")  # as GroupConsumer's own check
        self.next_offset = 0
        self.subscription: list[str] = []
        self.enable_auto_commit = config.get("enable_auto_commit", True)
        self.auto_commit_bounds: dict = {}

    @staticmethod
    def _held() -> None:
        hold, _FakeGroupConsumer.hold = _FakeGroupConsumer.hold, None
        if hold is not None:
            _FakeGroupConsumer.holding.set()
            hold.wait(DEADLINE_S)

    def maintain(self) -> None:
        if not _FakeGroupConsumer.in_poll:
            self._held()

    def poll(self, timeout_ms: int, max_records: int, max_bytes: int | None = None) -> list[Record]:
        if _FakeGroupConsumer.in_poll:
            self._held()
        out = [Record("t", 0, o, 0, None, b"v%d" % o, None) for o in range(self.next_offset, self.next_offset + 10)]
        self.next_offset += 10
        return out

    def seek(self, tp: Any, offset: int) -> None:
        self.next_offset = offset

    def give_back(self, offsets: Any) -> None:  # GroupConsumer's: only back
        for tp, offset in offsets:
            if tp == ("t", 0) and offset < self.next_offset:
                self.next_offset = offset

    def position(self, tp: Any) -> int | None:
        return self.next_offset if tp == ("t", 0) else None

    def wakeup(self) -> None:  # the instance's stop: nothing to cut short here
        pass

    def close(self) -> None:
        pass


@pytest.fixture
def service(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ConsumerService]:
    monkeypatch.setattr(consumer_mod, "GroupConsumer", _FakeGroupConsumer)
    svc = ConsumerService(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), "consumer-1")
    t = threading.Thread(target=svc.reactor.run, daemon=True)
    t.start()
    try:
        yield svc
    finally:
        svc.reactor.stop()
        t.join(5)
        svc.close()


@pytest.mark.parametrize("in_poll", [False, True], ids=["behind-maintain", "inside-its-poll"])
def test_a_fetch_the_client_gave_up_on_does_not_move_the_instance_past_its_records(
        service: ConsumerService, monkeypatch: pytest.MonkeyPatch, in_poll: bool) -> None:
    """Queued behind a rejoin in maintain(), or held by a rejoin inside its own poll (a review
    of the first fix found the second): either way the gateway gives up (503), and the records
    that fetch then takes must not be skipped."""
    monkeypatch.setattr(services_mod, "CALL_TIMEOUT_MS", 300)
    monkeypatch.setattr(_FakeGroupConsumer, "in_poll", in_poll)
    sc = ServiceConsumer(service.node_config.endpoint)
    release = threading.Event()
    try:
        inst = sc.create("g", "c1", {})
        _FakeGroupConsumer.holding.clear()
        _FakeGroupConsumer.hold = release
        if not in_poll:
            assert _FakeGroupConsumer.holding.wait(DEADLINE_S), "the instance thread is in maintain()"
        with pytest.raises(RequestTimeout):
            inst.fetch(timeout_ms=0)  # the gateway answers 503: the client got nothing
        assert _FakeGroupConsumer.holding.is_set()
        release.set()  # the rebalance completes: that fetch takes records, for nobody
        got = inst.fetch(timeout_ms=0)
        assert got[0].offset == 0, f"records 0..{got[0].offset - 1} were fetched for nobody: skipped"
    finally:
        release.set()
        sc.close()


def test_a_failed_create_touches_the_reactor_only_on_its_thread(service: ConsumerService) -> None:
    threads: list[str] = []
    real = service.reactor.call_later

    def spy(delay_ms: int, fn: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(delay_ms, fn)
    service.reactor.call_later = spy  # type: ignore[method-assign]
    sc = ServiceConsumer(service.node_config.endpoint)
    try:
        with pytest.raises(Exception):
            sc.create("g", "bad", {"session_timeout_ms": 1})
        wait_until(lambda: ("g", "bad") not in service.instances, DEADLINE_S, what="the failed instance forgotten")
    finally:
        sc.close()
    assert all(not name.startswith("loom-instance") for name in threads), threads


def test_an_assigned_instance_starts_at_its_groups_committed_offsets() -> None:
    def coordinator(command: bytes, header: dict) -> dict:
        if command == P.OFFSET_FETCH:
            return {"offsets": [[t, p, 42, ""] for t, p in header["partitions"]]}
        return {}
    link = ScriptedCoordinatorLink(coordinator)
    inst = Instance(InstanceHost("consumer-1", ["127.0.0.1:1"], 60_000, lambda e: None), "g", "m",
                    {"coordinator": link, "heartbeat_factory": NoHeartbeat.make}, 0)
    inst._do("create", {})
    try:
        inst._do("assign", {"partitions": [["t", 0]]})
        positions = inst._do("assignment", {})["positions"]
        assert positions == [["t", 0, 42]], f"positions {positions}: it would start at auto_offset_reset, not at 42"
    finally:
        inst._close()


def test_a_produce_that_may_have_been_written_is_not_sent_again_to_another_service(scripted: Any) -> None:
    """The first of two producer services takes the request (its producer hands the records to
    the brokers) and answers late; the client must not send them to the second."""
    written: list[tuple[str, bytes]] = []
    answered = threading.Event()

    def service(name: str, late: bool) -> Any:
        def answer(req: wire.Request) -> tuple[dict, list]:
            rows = unpack_rows(req.payloads[0], 10, None)
            written.extend((name, bytes(v)) for v in rows)  # handed to the brokers
            if late:
                answered.wait(DEADLINE_S)  # answers after the client gave up
            return {"topic": "t", "count": len(rows)}, [pack_rows([[0, i, 0, ""] for i in range(len(rows))])]
        return answer
    first, second = scripted(service("producer-1", True)), scripted(service("producer-2", False))
    sp = ServiceProducer([first, second], timeout_ms=300)
    try:
        with pytest.raises(RequestTimeout):  # refused: the client retries knowing it may be written
            sp.produce("t", [ServiceRecord(b"order-17")], acks="all")
    finally:
        answered.set()
        sp.close()
    assert written == [("producer-1", b"order-17")], written


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
