"""GatewayAgent._forget_expired_instances lists the services, then drops every entry
the list lacks -- including an instance made (or moved) by another request thread between the
list and the drop. That instance lives on its service, its client was answered 201, and its
next request is answered 404 (its partitions stay held until the service's idle expiry)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

import nodes.gateway.agent as agent_mod
from fabric import protocol as P
from fabric.config import load_config
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.fakes import metadata_of
from webui.errors import ClusterError


class _Admin:
    def metadata(self) -> Any:
        return metadata_of({"t": 1})


class _Services:
    def __init__(self) -> None:
        self.hosted: set[tuple[str, str]] = set()
        self.lists = 0
        self.between_list_and_drop: Any = None

    def create(self, group: str, name: str | None, config: dict) -> Any:
        self.hosted.add((group, name))
        return type("Inst", (), {"name": name, "endpoint": "tcp://consumer-1"})()

    def list_instances(self) -> dict:
        self.lists += 1
        listed = {"tcp://consumer-1": [{"group": g, "instance": n, "owner": ""} for g, n in sorted(self.hosted)]}
        if self.lists == 1 and self.between_list_and_drop is not None:
            self.between_list_and_drop()  # another request thread runs meanwhile
        return listed

    def instance(self, group: str, name: str, ep: str) -> Any:
        hosted = self.hosted

        class Handle:
            def fetch(self, **kw: Any) -> list:
                if (group, name) not in hosted:
                    raise AssertionError("not hosted")
                return []
        return Handle()

    def close(self) -> None:
        pass


def test_an_instance_made_while_another_thread_forgets_expired_ones_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(agent_mod, "INSTANCES_MAX", 2)
    services = _Services()
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), make_admin=_Admin)
    a._consumers = lambda: services  # type: ignore[method-assign]  # every request thread's ServiceConsumer
    a.create_instance("g", "old-1", {}, "binary")
    a.create_instance("g", "old-2", {}, "binary")
    services.hosted.clear()  # the service's idle expiry closed both

    def other_thread() -> None:  # client B's create: its own forget, then its instance
        t = threading.Thread(target=lambda: a.create_instance("g", "b", {}, "binary"))
        t.start()
        t.join(5)
    services.between_list_and_drop = other_thread
    a.create_instance("g", "a", {}, "binary")   # client A's create, which lists first
    assert ("g", "b") in services.hosted, "b was made on its service (its client got 201)"
    try:
        a.call_instance("g", "b", lambda h: h.fetch())
    except ClusterError as e:
        pytest.fail(f"client B's first fetch of the instance it was just given: {e.kind}: {e}")


class _SlowSecondChunk:
    """A producer service that writes every chunk it gets; the second one it writes too, but
    answers too late (the client's RequestTimeout)."""

    def __init__(self) -> None:
        self.log: list[int] = []
        self.calls = 0

    def produce_rows(self, topic: str, records: list, acks: Any, is_down: Any = None) -> tuple:
        from fabric.errors import RequestTimeout
        self.calls += 1
        first = len(self.log)
        self.log += [r[1][0] for r in records]
        if self.calls == 2:
            raise RequestTimeout("producer service did not answer in 30000 ms")
        return tuple((0, first + i, 0, "") for i in range(len(records)))


def test_chunks_after_one_that_timed_out_are_not_written_ahead_of_it(tmp_path: Path) -> None:
    """Chunk 2's fate is unknown (written or not); chunk 3 is still sent, waits its own timeout
    on a service that may be hung, and is written ahead of chunk 2's retry: the request's
    records land out of order (per key too), and a hung service holds the request for one
    timeout per chunk."""
    service = _SlowSecondChunk()
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                     make_admin=_Admin, make_producer=lambda: service)
    n = P.SERVICE_RECORDS_PER_REQUEST_MAX
    records = [(None, bytes([i // n]) * 64, None, None) for i in range(3 * n)]  # three chunks
    outcomes = a.produce("t", records, "all")
    assert service.calls == 2, f"{service.calls} chunks sent: chunk 3 went after chunk 2 timed out"
    assert all(o[2] is not None for o in outcomes[2 * n:])


class _RowFailureFirstChunk:
    """Answers the first chunk's records each with a retriable error (not an exception), writes the others."""

    def __init__(self) -> None:
        self.calls, self.written = 0, 0

    def produce_rows(self, topic: str, records: list, acks: Any, is_down: Any = None) -> tuple:
        self.calls += 1
        if self.calls == 1:
            return tuple((-1, -1, P.BUFFER_FULL, "buffer full") for _ in records)
        first, self.written = self.written, self.written + len(records)
        return tuple((0, first + i, 0, "") for i in range(len(records)))


def test_chunks_after_one_whose_records_failed_are_not_written_ahead_of_its_retry(tmp_path: Path) -> None:
    service = _RowFailureFirstChunk()
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                     make_admin=_Admin, make_producer=lambda: service)
    n = P.SERVICE_RECORDS_PER_REQUEST_MAX
    outcomes = a.produce("t", [(None, bytes([i // n]) * 64, None, None) for i in range(2 * n)], "all")
    assert all(o[2] is not None and o[3] for o in outcomes), "every record failed, retriable"
    assert service.calls == 1, f"chunk 2 was written ({service.written} records) ahead of chunk 1's retry"
