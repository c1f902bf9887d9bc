"""A REST consumer instance is subscribed or assigned, never both (Kafka's consumer raises
IllegalStateException): subscribing an assigned instance, or assigning a subscribed one, is
answered 409 (40904) in the gateway's JSON error shape, and the instance keeps what it had.
``DELETE …/subscription`` ends either, after which the other is allowed.

Through the gateway's Flask app and its real GatewayAgent, down to a real consumer-service
Instance hosting a real GroupConsumer on a ManualClock (tests/unit/builders_group_consumer.py):
the agent's handle serves each request on the test thread, as the instance's thread would."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig, load_config
from fabric.errors import RemoteError, RequestTimeout
import nodes.gateway.agent as agent_mod
from nodes.consumer_instance import Instance, InstanceHost
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.builders_group_consumer import (T0, BrokerRepliesReactor, OffsetsCoordinator, OnePartitionBroker,
                                                consumer_config, serve)
from tests.unit.fakes import ScriptedCoordinatorLink, metadata_of
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub

KEY = "loom_admin_key_0123456789"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/vnd.kafka.v2+json"}
BASE = "/consumers/g/instances/c1"


class _Admin:
    def metadata(self) -> Any:
        return metadata_of({"t": 2})


class _ServedHandle:
    """The agent's handle of instance c1: each call is one request the instance serves."""

    def __init__(self, instance: Instance) -> None:
        self.instance = instance

    def _request(self, op: str, **header: Any) -> dict:
        return serve(self.instance, op, **header)

    def subscribe(self, topics: list[str]) -> None:
        self._request("subscribe", topics=list(topics))

    def unsubscribe(self) -> None:
        self._request("subscribe", topics=[])

    def assign(self, partitions: list[tuple[str, int]]) -> None:
        self._request("assign", partitions=[list(tp) for tp in partitions])

    def assignment(self) -> list[tuple[str, int]]:
        return [tuple(tp) for tp in self._request("assignment")["partitions"]]


class _Services:
    """The request thread's ServiceConsumer: one service hosting c1."""

    def __init__(self, handle: _ServedHandle) -> None:
        self.handle = handle

    def instance(self, group: str, name: str, endpoint: str) -> _ServedHandle:
        return self.handle

    def close(self) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Any, GatewayAgent, Instance]]:
    broker = OnePartitionBroker()
    reactor = BrokerRepliesReactor(broker)
    instance = Instance(InstanceHost("consumer-1", ["127.0.0.1:1"], 60_000, lambda e: None), "g", "c1",
                        consumer_config(broker, reactor, ScriptedCoordinatorLink(OffsetsCoordinator())), 0)
    _ServedHandle(instance)._request("create")
    agent = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))), make_admin=_Admin)
    agent._local.consumers = _Services(_ServedHandle(instance))
    agent._instances[("g", "c1")] = agent_mod.InstanceEntry("g", "c1", agent.consumer_endpoints[0], {}, "binary")
    gw = Gateway(agent=agent, hub=EventHub(), keys=KeyStore([("admin", hash_key(KEY), ["admin"])]),
                 limiter=RateLimiter(1000.0, 1000, 100), settings=GatewayConfig(), security=SecurityConfig(),
                 cluster_id="test", on_bug=lambda: pytest.fail("a bug in the gateway"))
    yield create_app(gw).test_client(), agent, instance
    instance._close()


def _post(client: Any, path: str, body: dict) -> Any:
    return client.post(BASE + path, headers=AUTH, json=body)


def test_subscribing_an_assigned_instance_is_answered_409(served: tuple[Any, GatewayAgent, Instance]) -> None:
    client, agent, instance = served
    assert _post(client, "/assignments", {"partitions": [{"topic": "t", "partition": 0}]}).status_code == 204
    r = _post(client, "/subscription", {"topics": ["t"]})
    assert r.status_code == 409, r.get_json()
    assert r.get_json()["error_code"] == 40904 and "unsubscribe" in r.get_json()["message"]
    assert set(r.get_json()) == {"error_code", "message"}
    assert instance.consumer.assignment() == [T0] and instance.consumer.subscription == []
    assert agent.instance("g", "c1").topics == [], "the gateway remembers a subscription that was refused"


def test_assigning_a_subscribed_instance_is_answered_409(served: tuple[Any, GatewayAgent, Instance]) -> None:
    client, agent, instance = served
    assert _post(client, "/subscription", {"topics": ["t"]}).status_code == 204
    r = _post(client, "/assignments", {"partitions": [{"topic": "t", "partition": 1}]})
    assert r.status_code == 409 and r.get_json()["error_code"] == 40904, r.get_json()
    assert instance.consumer.subscription == ["t"]
    assert agent.instance("g", "c1").assigned == []


def test_after_unsubscribe_the_other_mode_is_allowed_and_remembered(served: tuple[Any, GatewayAgent, Instance]) -> None:
    """The gateway makes a moved instance again from what it remembers: an instance that
    unsubscribed must not come back assigned."""
    client, agent, instance = served
    assert _post(client, "/assignments", {"partitions": [{"topic": "t", "partition": 0}]}).status_code == 204
    assert client.delete(BASE + "/subscription", headers=AUTH).status_code == 204
    assert agent.instance("g", "c1").assigned == [], "a move would assign the partitions again"
    assert _post(client, "/subscription", {"topics": ["t"]}).status_code == 204
    assert instance.consumer.subscription == ["t"]


def test_the_openapi_document_lists_the_conflict(served: tuple[Any, GatewayAgent, Instance]) -> None:
    client, _agent, _instance = served
    paths = client.get("/openapi.json").get_json()["paths"]
    for path in ("/subscription", "/assignments"):
        assert "409" in paths["/consumers/{group_name}/instances/{instance}" + path]["post"]["responses"]


def test_a_relayed_conflict_keeps_its_code(served: tuple[Any, GatewayAgent, Instance]) -> None:
    """The instance relays the client library's error with its code (not invalid_config)."""
    _client, _agent, instance = served
    handle = _ServedHandle(instance)
    handle.assign([T0])
    with pytest.raises(RemoteError) as e:
        handle.subscribe(["t"])
    assert e.value.name == "subscription_conflict"


def test_an_assigned_instance_is_not_moved_back_to_a_subscription(served: tuple[Any, GatewayAgent, Instance],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An unsubscribe may outlast the gateway's call (it commits first, retrying for up to
    COMMIT_TIMEOUT_MS) and still be done: the client sees a timeout, the instance is
    unsubscribed. An assignment accepted afterwards proves the instance has no subscription, so
    the gateway must not remember one: a move would make the instance again subscribed, a group
    member reading whatever the group gives it instead of the partitions its client assigned."""
    client, agent, instance = served
    assert _post(client, "/subscription", {"topics": ["t"]}).status_code == 204

    def unsubscribe_outlasting_the_call(handle: _ServedHandle) -> None:
        handle._request("subscribe", topics=[])
        raise RequestTimeout("no reply from the consumer service")
    monkeypatch.setattr(_ServedHandle, "unsubscribe", unsubscribe_outlasting_the_call)
    assert client.delete(BASE + "/subscription", headers=AUTH).status_code >= 500
    assert instance.consumer.subscription == []
    assert _post(client, "/assignments", {"partitions": [{"topic": "t", "partition": 0}]}).status_code == 204
    entry = agent.instance("g", "c1")
    assert (entry.topics, entry.assigned) == ([], [T0]), "a move would subscribe the assigned instance"


@pytest.mark.parametrize("first, then", [("/assignments", "/subscription"), ("/subscription", "/assignments")])
def test_the_409_tells_a_rest_client_what_to_send(served: tuple[Any, GatewayAgent, Instance], first: str,
                                                  then: str) -> None:
    """It said the client library's advice, "subscribe() and assign() are mutually exclusive: call
    unsubscribe() first", which a REST client has no call for: it is told the request to send."""
    client, _, _ = served
    bodies = {"/assignments": {"partitions": [{"topic": "t", "partition": 0}]}, "/subscription": {"topics": ["t"]}}
    assert _post(client, first, bodies[first]).status_code == 204
    r = _post(client, then, bodies[then])
    message = r.get_json()["message"]
    assert r.status_code == 409 and "()" not in message and "unsubscribe" in message, message
    assert "DELETE " + BASE + "/subscription" in message, message
