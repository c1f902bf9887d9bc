"""``GET /status/ready``: ready when the coordinator answers, every broker is alive and every
node serves. The node states come from the gateway's own health watcher ("up"/"down") or, when
the cluster runs a monitor, from the monitor ("healthy", "degraded", "unresponsive", "down"):
with a monitor the answer was "ready": false on a healthy cluster, for good. A load balancer or
a Kubernetes probe reads the status code: 200 when ready, 503 (the same body, with its
reasons) when not -- it was 200 either way."""

from __future__ import annotations

from typing import Any

import pytest

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from tests.unit.fakes import KEYS, StubAgent
from webui.app import build_api, create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.errors import ClusterError
from webui.events import EventHub


class NoCoordinator(StubAgent):
    def metadata(self) -> Any:
        raise ClusterError("unavailable", "the coordinator did not answer")


def gateway(states: dict[str, str], agent: StubAgent) -> Gateway:
    hub = EventHub()
    for node, state in states.items():
        hub.publish({"type": "node", "node": node, "state": state, "ts_ms": 1})
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    return Gateway(agent=agent, hub=hub, keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                   settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test")


def get_ready(gw: Gateway) -> Any:
    return create_app(gw).test_client().get("/status/ready", headers={"Authorization": f"Bearer {KEYS['read']}"})


@pytest.mark.parametrize("states, ready", [
    ({"broker-1": "up", "coordinator": "up"}, True),
    ({"broker-1": "healthy", "coordinator": "healthy", "monitor": "up"}, True),
    ({"broker-1": "degraded", "coordinator": "healthy"}, True),
    ({"broker-1": "unresponsive", "coordinator": "healthy"}, False),
    ({"broker-1": "down", "coordinator": "up"}, False),
])
def test_ready_follows_the_node_states_of_either_source(states: dict[str, str], ready: bool) -> None:
    r = get_ready(gateway(states, StubAgent()))
    assert r.status_code == (200 if ready else 503), r.get_json()
    body = r.get_json()
    assert body["nodes"] == states and body["ready"] is ready, body
    assert body["brokers_alive"] == body["brokers"] == 1 and body["coordinator"] is True
    assert body["reasons"] == ([] if ready else [f"broker-1 is {states['broker-1']}"])


def test_without_the_coordinator_not_ready_is_503_with_the_ready_body() -> None:
    r = get_ready(gateway({"broker-1": "up"}, NoCoordinator()))
    assert r.status_code == 503
    body = r.get_json()
    assert body["ready"] is False and body["coordinator"] is False and body["nodes"] == {"broker-1": "up"}
    assert body["reasons"] == ["the coordinator: the coordinator did not answer"]


class BrokersCopyOnly(StubAgent):
    """The coordinator gone silent (SIGSTOPped, or killed: its port refuses the connection):
    the metadata fetch takes a broker's copy, which answers the look -- not the coordinator."""

    def coordinator_metadata(self) -> Any:
        raise ClusterError("unavailable", "not reachable: tcp://127.0.0.1:1 did not answer its last ask")


def test_a_brokers_copy_of_the_metadata_is_not_the_coordinator_answering() -> None:
    """The coordinator SIGSTOPped for 10 s under `make up`: `/health` answered 503 ("the
    coordinator is not reachable") the whole time while `/status/ready` answered 200 with
    `"coordinator": true` -- the broker's copy of the metadata, taken for the coordinator's
    answer -- until the monitor's status called the coordinator unresponsive."""
    r = get_ready(gateway({"broker-1": "healthy", "coordinator": "healthy"}, BrokersCopyOnly()))
    assert r.status_code == 503, r.get_json()
    body = r.get_json()
    assert body["ready"] is False and body["coordinator"] is False, body
    assert "brokers_alive" not in body and "brokers" not in body, "broker counts from a broker's copy"
    assert body["reasons"] == ["the coordinator: not reachable: tcp://127.0.0.1:1 did not answer its last ask"]


def test_the_document_gives_the_503_the_ready_body_or_an_error() -> None:
    doc = build_api(gateway({}, StubAgent())).openapi()
    responses = doc["paths"]["/status/ready"]["get"]["responses"]
    ready_schema = responses["200"]["content"]["application/json"]["schema"]
    assert "reasons" in ready_schema["properties"]
    alternatives = responses["503"]["content"]["application/json"]["schema"]["anyOf"]
    assert alternatives[0] == ready_schema and alternatives[1]["allOf"][0] == {"$ref": "#/components/schemas/Error"}


def test_while_the_monitor_reports_its_node_states_stand_over_the_watchers() -> None:
    """A consumer service SIGSTOPped for 6 s with the monitor running: readiness went 503 (the
    watcher missed one PING: "down"), 200 (the monitor: "degraded", which serves) and, after the
    SIGCONT, the watcher's "up" -- the last event of either source won. While the monitor's
    status comes (once per check) the node states are its; the watcher's count for what it
    does not judge and once it has been silent for MONITOR_STATUS_FRESH_S."""
    from webui import events
    now = [100.0]
    gw = gateway({"consumer-2": "up", "monitor": "up"}, StubAgent())
    gw.hub = events.EventHub(clock=lambda: now[0])
    status = {"type": "status", "cluster": {"name": "test"}, "ts_ms": 1,
              "nodes": [{"node": "consumer-2", "state": "degraded"}, {"node": "broker-1", "state": "unknown"},
                        {"node": "monitor", "state": "healthy"}]}
    gw.hub.publish({"type": "node", "node": "broker-1", "state": "up", "ts_ms": 1})
    gw.hub.publish(status)
    gw.hub.publish({"type": "node", "node": "consumer-2", "state": "down", "ts_ms": 2})
    r = get_ready(gw)
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["nodes"] == {"consumer-2": "degraded", "broker-1": "up", "monitor": "healthy"}
    now[0] += events.MONITOR_STATUS_FRESH_S      # the monitor silent: the watcher's word counts
    gw.hub.publish({"type": "node", "node": "monitor", "state": "down", "ts_ms": 3})
    r = get_ready(gw)
    assert r.status_code == 503
    assert r.get_json()["nodes"] == {"consumer-2": "down", "broker-1": "up", "monitor": "down"}
