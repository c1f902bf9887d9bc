"""A REST consumer instance whose consumer service restarted (the supervisor brings a killed
service back on its endpoint within a second or two): the gateway saw the service up, asked it,
was told the instance is unknown there -- and forgot the instance (404). The gateway now tells
a restart (another process answers PING than the one that made the instance) from an instance
that expired or was deleted on the same process, and makes a lost one again -- once, whichever
of the instance's request threads notices first, and never one a DELETE took.

The real GatewayAgent with scripted consumer services (no cluster)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from fabric import protocol as P
from fabric.config import load_config
from fabric.errors import ConnectionLost, GaveUp, RemoteError, RequestTimeout
import nodes.gateway.agent as agent_mod
import nodes.gateway.agent_instances as instances_mod
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from webui.errors import ClusterError


class Services:
    """Consumer services by endpoint, each one process (``pid``) hosting instances:
    (group, name) -> (owner, subscribed topics). ``restart(ep)`` is a kill -9 and a start on the
    same endpoint. ``on_fetch`` runs inside a fetch (another request thread, a DELETE)."""

    def __init__(self, endpoints: list[str]) -> None:
        self.pid = {ep: 100 + i for i, ep in enumerate(endpoints)}
        self.hosted: dict[str, dict[tuple[str, str], list]] = {ep: {} for ep in endpoints}
        self.creates: list[tuple[str, str]] = []
        self.fetches = 0
        self.ledgers: list = []               # the fetch ledger each fetch's handle carried
        self.on_fetch: Any = None
        self.hang_next_fetch = False
        self.lose_next_fetch = False          # its connection ends: the process died with it
        # the health watcher sees the service down for a moment while it waits (a health PING
        # lost with a process killed just before): it gives up waiting, and the service (the
        # same process) is seen up again before the gateway decides what to do
        self.give_up_next_fetch: Any = None
        self.pings_unanswered: dict[str, int] = {ep: 0 for ep in endpoints}  # starting again meanwhile
        self.pings = 0

    def restart(self, ep: str) -> None:
        self.pid[ep] += 1000
        self.hosted[ep] = {}

    def client(self, endpoints: list[str] | None = None, is_down: Any = None) -> "Client":
        return Client(self, endpoints or list(self.pid))


class Client:
    """What ServiceConsumer does, against ``Services``."""

    def __init__(self, services: Services, endpoints: list[str]) -> None:
        self.s, self.endpoints = services, endpoints

    def create(self, group: str, name: str, config: dict) -> Any:
        ep = self.endpoints[0]
        if (group, name) in self.s.hosted[ep]:
            raise RemoteError(P.CONSUMER_INSTANCE_EXISTS, f"instance {name!r} of group {group!r} already exists")
        self.s.hosted[ep][(group, name)] = [config.get("owner", ""), []]
        self.s.creates.append((ep, name))
        return Handle(self.s, group, name, ep, self.s.pid[ep])

    def instance(self, group: str, name: str, ep: str) -> "Handle":
        return Handle(self.s, group, name, ep, None)

    def call(self, ep: str, command: bytes, header: dict, timeout_ms: int = 0) -> dict:
        assert command == P.PING
        self.s.pings += 1
        if self.s.pings_unanswered[ep]:
            self.s.pings_unanswered[ep] -= 1
            raise RequestTimeout(f"no reply from {ep} within {timeout_ms} ms")
        return {"node": ep, "pid": self.s.pid[ep]}

    def close(self) -> None:
        pass


class Handle:
    def __init__(self, services: Services, group: str, name: str, endpoint: str, pid: int | None) -> None:
        self.s, self.group, self.name, self.endpoint, self.pid = services, group, name, endpoint, pid

    def _hosted(self) -> list:
        got = self.s.hosted[self.endpoint].get((self.group, self.name))
        if got is None:
            raise RemoteError(P.UNKNOWN_CONSUMER_INSTANCE, f"no consumer instance {self.name!r} on {self.endpoint}")
        return got

    def subscribe(self, topics: list[str]) -> None:
        self._hosted()[1] = list(topics)

    def fetch(self, **_kw: Any) -> list:
        self.s.fetches += 1
        self.s.ledgers.append(getattr(self, "fetches", None))
        if self.s.on_fetch is not None:
            hook, self.s.on_fetch = self.s.on_fetch, None
            hook()
        if self.s.hang_next_fetch:  # the request went to the process that died: never answered
            self.s.hang_next_fetch = False
            raise RequestTimeout(P.REQUEST_TIMED_OUT, "no answer in 10500 ms")
        if self.s.lose_next_fetch:
            self.s.lose_next_fetch = False
            raise ConnectionLost(f"connection to {self.endpoint} lost before the reply")
        if self.s.give_up_next_fetch is not None:
            seen_up_again, self.s.give_up_next_fetch = self.s.give_up_next_fetch, None
            seen_up_again()
            raise GaveUp(f"gave up waiting for {self.endpoint}: it is down")  # as BlockingClient's give_up
        return list(self._hosted()[1])

    def delete(self, owner: str | None = None) -> None:
        self._hosted()
        del self.s.hosted[self.endpoint][(self.group, self.name)]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[GatewayAgent, Services]:
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), owner="gateway:gateway")
    services = Services(a.consumer_endpoints)
    for module in (agent_mod, instances_mod):  # the agent's own client and the instances'
        monkeypatch.setattr(module, "ServiceConsumer", services.client)
    a._consumers = services.client  # type: ignore[method-assign]  # every request thread's ServiceConsumer
    a.create_instance("g", "s1", {}, "json")
    a.call_instance("g", "s1", lambda h: h.subscribe(["t"]))
    a.instance("g", "s1").topics = ["t"]
    return a, services


def _host(services: Services) -> str:
    (ep,) = [ep for ep, hosted in services.hosted.items() if ("g", "s1") in hosted]
    return ep


def test_an_instance_its_restarted_service_lost_is_made_again_and_subscribed(setup: Any) -> None:
    a, services = setup
    ep = _host(services)
    for _ in range(2):  # restarted twice: made again twice
        services.restart(ep)
        assert a.call_instance("g", "s1", lambda h: h.fetch()) == ["t"], "made again and subscribed to t"
        ep = _host(services)
        assert services.hosted[ep][("g", "s1")][0] == a.owner, "made again under this gateway's owner"
    assert len(services.creates) == 3


def test_an_instance_that_expired_on_a_live_service_is_404_and_forgotten(setup: Any) -> None:
    a, services = setup
    services.hosted[_host(services)].clear()  # the idle expiry, the same process
    with pytest.raises(ClusterError) as e:
        a.call_instance("g", "s1", lambda h: h.fetch())
    assert e.value.kind == "instance_not_found"
    assert len(services.creates) == 1, "an expired instance was made again"
    with pytest.raises(ClusterError):
        a.instance("g", "s1")


def test_a_fetch_in_flight_when_its_service_restarted_is_asked_again_of_the_instance_made_again(setup: Any) -> None:
    """The request went to the killed process and is never answered: it times out (the
    service is up again by then). A /ws/consume stream was closed with 1011 that way."""
    a, services = setup
    ep = _host(services)
    services.hang_next_fetch = True
    services.on_fetch = lambda: services.restart(ep)
    assert a.call_instance("g", "s1", lambda h: h.fetch()) == ["t"]


def test_every_fetch_of_an_instance_keeps_its_entrys_ledger_also_when_asked_again(setup: Any) -> None:
    """The instance's fetches are numbered in its entry (fabric.client.services.FetchLedger),
    whichever handle and request thread makes them -- the gateway's own second attempt on the
    instance made again too, so that one lost answer is said once and never undone twice."""
    a, services = setup
    ep = _host(services)
    services.hang_next_fetch = True
    services.on_fetch = lambda: services.restart(ep)
    a.call_instance("g", "s1", lambda h: h.fetch())
    a.call_instance("g", "s1", lambda h: h.fetch())
    ledger = a.instance("g", "s1").fetches
    assert len(services.ledgers) == 3 and all(got is ledger for got in services.ledgers), services.ledgers


def test_a_fetch_whose_connection_ended_waits_for_the_restarted_service_and_is_asked_again(setup: Any) -> None:
    """SIGKILLed with a long poll in flight: the connection's end is seen at once (no 10.5 s
    wait), while the supervisor is still starting the service again -- PING goes unanswered for
    a while, then another process answers it: made again there and asked again."""
    a, services = setup
    ep = _host(services)
    services.lose_next_fetch = True

    def killed() -> None:
        services.restart(ep)
        services.pings_unanswered[ep] = 3
    services.on_fetch = killed
    assert a.call_instance("g", "s1", lambda h: h.fetch()) == ["t"]
    assert services.pings == 4 and len(services.creates) == 2


def test_a_lost_fetch_whose_service_is_seen_down_meanwhile_moves_the_instance(setup: Any) -> None:
    """The health watcher sees the killed service down before it is back: the wait for its
    restart ends there and the instance is made again on a live service."""
    a, services = setup
    ep = _host(services)
    services.lose_next_fetch = True

    def killed_and_seen_down_after_a_ping() -> None:
        services.hosted[ep].clear()
        services.pings_unanswered[ep] = 1_000_000  # not back
        a.is_up = lambda endpoint: endpoint != ep or services.pings < 2
    services.on_fetch = killed_and_seen_down_after_a_ping
    assert a.call_instance("g", "s1", lambda h: h.fetch()) == ["t"]
    assert _host(services) != ep and services.pings == 2


def test_a_fetch_given_up_while_its_live_service_was_seen_down_for_a_moment_is_asked_again(setup: Any) -> None:
    """The health watcher saw the instance's service down for a moment (its PING was lost with
    a process killed and restarted on that endpoint just before -- the instance was made again
    there) while a /ws/consume stream's fetch waited: the fetch gave up, and by the time the
    gateway looked the same process answered again. That was taken as a live service's timeout
    -- final: the stream was closed with 1011 -- where nothing was wrong with the instance."""
    a, services = setup
    ep = _host(services)
    down: set[str] = set()
    a.is_up = lambda endpoint: endpoint not in down
    # seen down (the fetch gives up on it), then up again before the gateway looks
    services.give_up_next_fetch = lambda: (down.add(ep), down.discard(ep))
    assert a.call_instance("g", "s1", lambda h: h.fetch()) == ["t"]
    assert _host(services) == ep and len(services.creates) == 1, "the live instance was not asked again"
    assert services.fetches == 2


def test_a_lost_fetch_whose_wait_ended_on_a_moments_down_is_asked_again_of_the_live_instance(setup: Any) -> None:
    """The connection a fetch went out on ended while the process lived on, and the health
    watcher saw the service down for a moment while PING went unanswered: the wait ended
    there, and by the time the gateway decided the watcher saw it up again -- taken for a live
    service's failure (final), where the instance was there all along."""
    a, services = setup
    ep = _host(services)
    services.lose_next_fetch = True

    def down_for_a_moment() -> None:
        views = iter([False])  # the watcher's next look at ep, then up again
        a.is_up = lambda endpoint: endpoint != ep or next(views, True)
        services.pings_unanswered[ep] = 1
    services.on_fetch = down_for_a_moment
    assert a.call_instance("g", "s1", lambda h: h.fetch()) == ["t"]
    assert _host(services) == ep and len(services.creates) == 1 and services.fetches == 2


def test_a_lost_fetch_whose_service_never_answers_again_is_unavailable(setup: Any,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    a, services = setup
    monkeypatch.setattr(instances_mod, "SERVICE_RESTART_WAIT_MS", 300)
    services.lose_next_fetch = True
    services.pings_unanswered[_host(services)] = 1_000_000
    with pytest.raises(ClusterError) as e:
        a.call_instance("g", "s1", lambda h: h.fetch())
    assert e.value.kind == "unavailable" and len(services.creates) == 1 and services.pings >= 2


def test_a_timeout_of_a_service_that_did_not_restart_is_not_retried(setup: Any) -> None:
    a, services = setup
    services.hang_next_fetch = True
    with pytest.raises(ClusterError) as e:
        a.call_instance("g", "s1", lambda h: h.fetch())
    assert e.value.kind == "unavailable" and len(services.creates) == 1 and services.fetches == 1


def test_two_request_threads_noticing_make_it_again_once(setup: Any) -> None:
    a, services = setup
    services.restart(_host(services))
    answers: list[Any] = []

    def other_thread() -> None:  # the second request, failing on the lost instance meanwhile
        t = threading.Thread(target=lambda: answers.append(a.call_instance("g", "s1", lambda h: h.fetch())))
        t.start()
        t.join(5)
    services.on_fetch = other_thread
    answers.append(a.call_instance("g", "s1", lambda h: h.fetch()))
    assert answers == [["t"], ["t"]] and len(services.creates) == 2


def test_an_instance_deleted_while_a_fetch_finds_it_unknown_is_not_made_again(setup: Any) -> None:
    a, services = setup

    def delete_meanwhile() -> None:
        t = threading.Thread(target=a.delete_instance, args=("g", "s1"))
        t.start()
        t.join(5)
    services.on_fetch = delete_meanwhile
    with pytest.raises(ClusterError) as e:
        a.call_instance("g", "s1", lambda h: h.fetch())
    assert e.value.kind == "instance_not_found"
    assert len(services.creates) == 1 and not any(services.hosted.values()), "the deleted instance was made again"


def test_deleting_an_instance_its_restarted_service_lost_does_not_make_it_again(setup: Any) -> None:
    a, services = setup
    services.restart(_host(services))
    a.delete_instance("g", "s1")
    assert len(services.creates) == 1
    with pytest.raises(ClusterError):
        a.instance("g", "s1")


def test_a_name_taken_meanwhile_by_another_gateway_process_is_404(setup: Any) -> None:
    """Its service died; where it would be made again, another gateway process's client has made
    an instance of that name: not this gateway's to use (it was answered 409 on a fetch)."""
    a, services = setup
    dead = _host(services)
    (other,) = [ep for ep in services.hosted if ep != dead]
    services.hosted[other][("g", "s1")] = ["gateway:gateway:another", []]
    a.is_up = lambda ep: ep != dead
    with pytest.raises(ClusterError) as e:
        a.call_instance("g", "s1", lambda h: h.fetch())
    assert e.value.kind == "instance_not_found"
    assert services.hosted[other][("g", "s1")][0] == "gateway:gateway:another"
    with pytest.raises(ClusterError):
        a.instance("g", "s1")
