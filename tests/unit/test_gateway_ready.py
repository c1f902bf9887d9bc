"""``GET /status/ready``: ready when every broker is alive and every node serves. The node
states come from the gateway's own health watcher ("up"/"down") or, when the cluster runs a
monitor, from the monitor ("healthy", "degraded", "unresponsive", "down"): with a monitor the
answer was "ready": false on a healthy cluster, for good."""

from __future__ import annotations

import pytest

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from tests.unit.fakes import KEYS, StubAgent
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub


@pytest.mark.parametrize("states, ready", [
    ({"broker-1": "up", "coordinator": "up"}, True),
    ({"broker-1": "healthy", "coordinator": "healthy", "monitor": "up"}, True),
    ({"broker-1": "degraded", "coordinator": "healthy"}, True),
    ({"broker-1": "unresponsive", "coordinator": "healthy"}, False),
    ({"broker-1": "down", "coordinator": "up"}, False),
])
def test_ready_follows_the_node_states_of_either_source(states: dict[str, str], ready: bool) -> None:
    hub = EventHub()
    for node, state in states.items():
        hub.publish({"type": "node", "node": node, "state": state, "ts_ms": 1})
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=StubAgent(), hub=hub, keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test")
    r = create_app(gw).test_client().get("/status/ready", headers={"Authorization": f"Bearer {KEYS['read']}"})
    assert r.status_code == 200 and r.get_json()["nodes"] == states
    assert r.get_json()["ready"] is ready, r.get_json()
