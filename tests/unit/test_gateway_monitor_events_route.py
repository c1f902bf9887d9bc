"""``GET /monitor/events?since_ms=&limit=``: the monitor's event log (health changes, alerts,
recovery actions) over REST, oldest first and in the shape ``/ws/events`` relays them, so that
the dashboard's timeline survives a reload. Through the real app with a stub agent; the agent
side without a monitor through the real ``MonitorAccess``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fabric import protocol as P
from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig, load_config
from nodes.gateway.monitor_link import MonitorAccess
from tests.harness import make_config
from tests.unit.fakes import KEYS, StubAgent
from webui.app import EVENTS_LIMIT_DEFAULT, build_api, create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.errors import ClusterError
from webui.events import EventHub


def monitor_log(n: int) -> list[dict]:
    """``n`` events as the monitor keeps them: seq and ts_ms rising, kinds in turn."""
    kinds = [({"kind": "health", "type": "node", "node": "broker-1", "role": "broker", "state": "down",
               "previous": "healthy", "reason": "exited"}),
             ({"kind": "alert", "type": "alert", "name": "node_down/broker-1", "rule": "node_down",
               "subject": "broker-1", "state": "firing", "message": "broker-1 is down"}),
             ({"kind": "recovery", "type": "recovery", "source": "supervisor", "action": "restarted",
               "node": "broker-1", "reason": "exited with -9"})]
    return [dict(kinds[i % 3], seq=i + 1, ts_ms=1_000 * (i + 1)) for i in range(n)]


class MonitorAgent(StubAgent):
    def __init__(self, events: list[dict] | None = None, error: ClusterError | None = None) -> None:
        self.events = events or []
        self.error = error
        self.asked = 0

    def monitor_events(self) -> list[dict]:
        self.asked += 1
        if self.error is not None:
            raise self.error
        return list(self.events)


def client_of(agent: StubAgent) -> Any:
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test")
    return create_app(gw).test_client()


def get(agent: StubAgent, query: str = "", role: str = "read") -> Any:
    return client_of(agent).get("/monitor/events" + query, headers={"Authorization": f"Bearer {KEYS[role]}"})


def test_the_monitors_events_come_oldest_first_in_the_streams_shape() -> None:
    events = monitor_log(6)
    r = get(MonitorAgent(events))
    assert r.status_code == 200, r.get_json()
    assert r.get_json() == {"events": events}  # unchanged: what /ws/events relays, seq and all


def test_since_ms_keeps_the_events_after_it_and_limit_the_newest() -> None:
    agent = MonitorAgent(monitor_log(10))
    assert [e["seq"] for e in get(agent, "?since_ms=7000").get_json()["events"]] == [8, 9, 10]
    assert [e["seq"] for e in get(agent, "?limit=3").get_json()["events"]] == [8, 9, 10]
    assert [e["seq"] for e in get(agent, "?since_ms=2000&limit=2").get_json()["events"]] == [9, 10]
    assert get(agent, "?since_ms=10000").get_json() == {"events": []}


def test_limit_has_a_default_and_a_maximum() -> None:
    agent = MonitorAgent(monitor_log(P.EVENTS_MAX))
    assert len(get(agent).get_json()["events"]) == EVENTS_LIMIT_DEFAULT
    body = get(agent, f"?limit={P.EVENTS_MAX}").get_json()
    assert [e["seq"] for e in body["events"]] == list(range(1, P.EVENTS_MAX + 1))


@pytest.mark.parametrize("query, name", [
    ("?limit=0", "limit"), (f"?limit={P.EVENTS_MAX + 1}", "limit"), ("?limit=ten", "limit"), ("?limit=-1", "limit"),
    ("?since_ms=-5", "since_ms"), ("?since_ms=soon", "since_ms"),
])
def test_a_bad_query_value_is_refused_with_its_name(query: str, name: str) -> None:
    agent = MonitorAgent(monitor_log(3))
    r = get(agent, query)
    assert r.status_code == 422 and r.get_json()["error_code"] == 42206, r.get_json()
    assert name in r.get_json()["message"] or "not an integer" in r.get_json()["message"], r.get_json()
    assert agent.asked == 0, "the monitor is not asked for a request that is refused"


def test_events_out_of_shape_are_left_out() -> None:
    """Whatever the monitor keeps (an older one's saved log), the answer keeps the stream's shape:
    a dict with a string ``type`` and an integer ``ts_ms``."""
    good = monitor_log(2)
    r = get(MonitorAgent([good[0], {"kind": "health"}, {"type": "node", "ts_ms": "x"}, "junk", good[1]]))  # type: ignore[list-item]
    assert r.get_json() == {"events": good}


def test_without_a_monitor_it_is_503_naming_the_monitor() -> None:
    for error in (ClusterError("unavailable", "no monitor node is configured"),
                  ClusterError("unavailable", "the monitor does not answer: timed out")):
        r = get(MonitorAgent(error=error))
        assert r.status_code == 503 and r.get_json()["error_code"] == 50301, r.get_json()
        assert "monitor" in r.get_json()["message"]


def test_the_agent_without_a_configured_monitor_says_so(tmp_path: Path) -> None:
    access = MonitorAccess(load_config(str(make_config(tmp_path, 1))))
    with pytest.raises(ClusterError) as e:
        access.events()
    assert e.value.kind == "unavailable" and "monitor" in e.value.message


def test_it_needs_the_read_role() -> None:
    agent = MonitorAgent(monitor_log(1))
    assert client_of(agent).get("/monitor/events").status_code == 401
    assert get(agent, role="produce").status_code == 403


def test_the_document_lists_it_with_its_parameters_and_errors() -> None:
    doc = build_api(Gateway(agent=MonitorAgent(), hub=EventHub(), keys=KeyStore([]),
                            limiter=RateLimiter(1.0, 1, 1), settings=GatewayConfig(),
                            security=SecurityConfig(), cluster_id="test")).openapi()
    op = doc["paths"]["/monitor/events"]["get"]
    assert op["x-loom-role"] == "read" and op["tags"] == ["ops"]
    params = {p["name"]: p["schema"] for p in op["parameters"]}
    assert params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == P.EVENTS_MAX
    assert params["limit"]["default"] == EVENTS_LIMIT_DEFAULT and params["since_ms"]["minimum"] == 0
    assert "503" in op["responses"] and "422" in op["responses"]
    item = op["responses"]["200"]["content"]["application/json"]["schema"]["properties"]["events"]["items"]
    assert set(item["required"]) == {"type", "ts_ms"}
