"""The gateway's agent and the services behind it, as a review attacked them, through the real
GatewayAgent with scripted services (no cluster): a request split into chunks whose later chunk
was refused was answered "nothing written" although earlier chunks were in the log (a retry
wrote them twice); instances their service expired filled the gateway's table for good; two
requests of an instance whose service died both moved it (one was answered 409); reclaiming an
earlier worker's instances could delete a live one of the same name. Then, reviewing those
fixes: forgetting expired instances dropped one made meanwhile, and chunks after a failed one
were still sent, ahead of its retry."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fabric import protocol as P
from fabric.config import load_config
from fabric.errors import RemoteError, RequestTimeout
import nodes.gateway.agent as agent_mod
import nodes.gateway.agent_instances as instances_mod
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.fakes import metadata_of
from webui.errors import ClusterError


class _Admin:
    def metadata(self) -> Any:
        return metadata_of({"t": 1})


class _ChunkedService:
    """A producer service that writes every chunk it is given (the log) and refuses the
    second SERVICE_PRODUCE of a request with buffer_full (its buffer filled meanwhile)."""

    def __init__(self) -> None:
        self.log: list[bytes] = []
        self.calls = 0

    def produce_rows(self, topic: str, records: list, acks: Any, is_down: Any = None) -> tuple:
        self.calls += 1
        if self.calls % 2 == 0:
            raise RemoteError(P.BUFFER_FULL, "the producer service buffer is full: retry later")
        first = len(self.log)
        self.log += [r[1] for r in records]
        return tuple((0, first + i, 0, "") for i in range(len(records)))


def test_a_request_whose_later_chunk_is_refused_does_not_leave_earlier_chunks_written_unreported(tmp_path: Path) -> None:
    """A REST produce bigger than one SERVICE_PRODUCE goes in chunks. When chunk 1 is written
    and chunk 2 refused, the request is answered 503 as a whole: the client, told nothing was
    produced, retries -- and chunk 1 is in the log twice."""
    service = _ChunkedService()
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                     make_admin=_Admin, make_producer=lambda: service)
    records = [(None, bytes([i % 256]) * 1024, None, None) for i in range(P.SERVICE_RECORDS_PER_REQUEST_MAX + 10)]
    try:
        outcomes = a.produce("t", records, "all")
    except ClusterError as e:  # the whole request refused...
        assert len(service.log) == 0, (
            f"the request was refused ({e.kind}: {e}) but {len(service.log)} of its records are in the log: "
            "a client retry writes them twice")
        return
    # ...or answered per record: the refused chunk's records carry a retriable error
    assert [o[2] is None for o in outcomes].count(True) == len(service.log)


class _Services:
    """Stands in for ServiceConsumer: a consumer service that forgets instances (idle expiry);
    ``between_list_and_drop`` runs after the first list is taken (another request thread)."""

    def __init__(self) -> None:
        self.hosted: set[tuple[str, str]] = set()
        self.n = 0
        self.lists = 0
        self.between_list_and_drop: Any = None

    def create(self, group: str, name: str | None, config: dict) -> Any:
        self.n += 1
        name = name or f"i{self.n}"
        self.hosted.add((group, name))
        return type("Inst", (), {"name": name, "endpoint": "tcp://consumer-1", "pid": None})()

    def list_instances(self) -> dict:
        self.lists += 1
        listed = {"tcp://consumer-1": [{"group": g, "instance": n, "owner": ""} for g, n in sorted(self.hosted)]}
        if self.lists == 1 and self.between_list_and_drop is not None:
            self.between_list_and_drop()
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


def test_instances_expired_by_their_service_do_not_fill_the_gateway_table_for_good(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Clients that make an instance and go away without DELETE (a crash, a WebSocket-less
    script): the consumer service closes the instance after its idle timeout, but the gateway
    keeps its entry. After INSTANCES_MAX of those, every create is refused 503 for the rest of
    the worker's life, though no service hosts a single instance."""
    monkeypatch.setattr(instances_mod, "INSTANCES_MAX", 5)
    services = _Services()
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), make_admin=_Admin)
    a._local.consumers = services  # the request thread's ServiceConsumer
    for i in range(5):
        a.create_instance("g", f"abandoned-{i}", {}, "binary")
    services.hosted.clear()  # the service's idle expiry closed them all
    a.create_instance("g", "new-client", {}, "binary")  # ClusterError(unavailable) here


class _Hosts:
    """Consumer services by endpoint: (group, name) -> owner; creates take a while."""

    hosted: dict[str, dict[tuple[str, str], str]] = {}

    def __init__(self, endpoints: list[str], is_down: Any = None) -> None:
        self.endpoints = list(endpoints)

    def create(self, group: str, name: str | None, config: dict) -> Any:
        ep = self.endpoints[0]
        time.sleep(0.3)  # a slow create: the other request's thread runs meanwhile (not a wait for a condition)
        if (group, name) in self.hosted.setdefault(ep, {}):
            raise RemoteError(P.CONSUMER_INSTANCE_EXISTS, f"instance {name!r} of group {group!r} already exists")
        self.hosted[ep][(group, name)] = config.get("owner", "")
        return type("Inst", (), {"name": name, "endpoint": ep, "pid": None, "subscribe": lambda self, t: None})()

    def list_instances(self) -> dict:
        return {ep: [{"group": g, "instance": n, "owner": o} for (g, n), o in sorted(inst.items())]
                for ep, inst in self.hosted.items()}

    def instance(self, group: str, name: str, ep: str) -> Any:
        hosts = self

        class Handle:
            def delete(self, owner: str | None = None) -> None:  # as CONSUMER_DELETE: only that owner's
                if owner is None or hosts.hosted[ep].get((group, name)) == owner:
                    hosts.hosted[ep].pop((group, name), None)

            def fetch(self, **kw: Any) -> list:
                return []
        return Handle()

    def close(self) -> None:
        pass


def test_two_requests_of_one_instance_whose_service_died_both_get_an_answer(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client fetching and committing in parallel (two HTTP threads) when its instance's
    service dies: both threads see the service down and both move the instance; the second
    create on the new service is refused 'exists' and that request is answered 409 (40901)
    -- a fetch or commit answered 'instance exists'."""
    for module in (agent_mod, instances_mod):  # the agent's own client and the instances'
        monkeypatch.setattr(module, "ServiceConsumer", _Hosts)
    _Hosts.hosted = {}
    up = {"dead": False}
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), make_admin=_Admin,
                     is_up=lambda ep: up.get(ep, True))
    dead = a.consumer_endpoints[0]
    up[dead] = False
    a._instances[("g", "c1")] = agent_mod.InstanceEntry("g", "c1", dead, {}, "binary", topics=["t"])
    a._consumers = lambda: _Hosts(a.consumer_endpoints)  # type: ignore[method-assign]
    errors: list[Exception] = []

    def request() -> None:
        try:
            a.call_instance("g", "c1", lambda h: h.fetch())
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=request) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(5)
    assert errors == [], errors


def test_reclaim_deletes_only_what_the_previous_process_made(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """reclaim_instances lists, then deletes by (group, name) on that service. When the old
    instance went away meanwhile (idle expiry, the service restarted) and this worker's client
    made its instance again under the same name on the same service, the delete hits the new,
    live instance: nothing checks the owner at delete time."""
    for module in (agent_mod, instances_mod):  # the agent's own client and the instances'
        monkeypatch.setattr(module, "ServiceConsumer", _Hosts)
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), make_admin=_Admin,
                     owner="gateway:gateway")
    ep = a.consumer_endpoints[0]
    _Hosts.hosted = {ep: {("g", "c1"): "gateway:gateway:oldprocess"}}
    real_list = _Hosts.list_instances

    def list_then_race(self: _Hosts) -> dict:
        listed = real_list(self)
        # between the list and the delete: the old c1 expires, and the client makes c1 again here
        _Hosts.hosted[ep] = {("g", "c1"): a.owner}
        return listed
    monkeypatch.setattr(_Hosts, "list_instances", list_then_race)
    a.reclaim_instances()
    assert _Hosts.hosted[ep] == {("g", "c1"): a.owner}, "this worker's live instance was deleted"


def test_an_instance_made_while_another_thread_forgets_expired_ones_is_kept(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(instances_mod, "INSTANCES_MAX", 2)
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
