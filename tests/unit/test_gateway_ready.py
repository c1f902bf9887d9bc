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


def test_the_document_gives_the_503_the_ready_body_or_an_error() -> None:
    doc = build_api(gateway({}, StubAgent())).openapi()
    responses = doc["paths"]["/status/ready"]["get"]["responses"]
    ready_schema = responses["200"]["content"]["application/json"]["schema"]
    assert "reasons" in ready_schema["properties"]
    alternatives = responses["503"]["content"]["application/json"]["schema"]["anyOf"]
    assert alternatives[0] == ready_schema and alternatives[1]["allOf"][0] == {"$ref": "#/components/schemas/Error"}
