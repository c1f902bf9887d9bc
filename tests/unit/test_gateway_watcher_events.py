"""The gateway's watcher's node events survive a page reload: ``GET /gateway/events``.

The watcher (nodes/gateway/control.py) publishes a node restarted between two of its PINGs as
down, then up -- for the monitor itself, the only source of such events. They went out on
``/ws/events`` only, and a reload of the dashboard, which reads back the monitor's event log
(``GET /monitor/events``), lost them. The event hub now keeps the watcher's recent node events
(bounded) that the page shows live -- the monitor's own, and every node's while the monitor does
not report -- each with its ``previous`` state, and the route gives them back, oldest first."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig, load_config
from nodes.gateway.control import GatewayControl
from nodes.local_cluster import make_config
from tests.unit.fakes import KEYS, StubAgent
from tests.unit.test_gateway_health_watch import Answer, ScriptedPings
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway, HttpRequestCounter
from webui.events import RECENT_EVENTS_MAX, EventHub


class Clock:
    def __init__(self) -> None:
        self.s = 100.0

    def __call__(self) -> float:
        return self.s


def watch(tmp_path: Path, hub: EventHub, script: dict[str, list[Answer]]) -> None:
    """The real watcher's checks against scripted PING answers, one answer per node a check."""
    tmp_path.mkdir(exist_ok=True)
    path = make_config(tmp_path, 1, extra_nodes=("monitor", "gateway"))
    node = GatewayControl(load_config(path, environ={}), "gateway", 1, hub, HttpRequestCounter())
    try:
        node._clients = {n: ScriptedPings(n, a) for n, a in script.items()}  # type: ignore[misc]
        for _ in range(max(len(a) for a in script.values())):
            node._check()
    finally:
        node.close()


def route(hub: EventHub, query: str = "", role: str = "read") -> Any:
    keys = KeyStore([(r, hash_key(k), [r]) for r, k in KEYS.items()])
    gw = Gateway(agent=StubAgent(), hub=hub, keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test")
    return create_app(gw).test_client().get("/gateway/events" + query, headers={"Authorization": f"Bearer {KEYS[role]}"})


def shape(events: list[dict]) -> list[tuple]:
    return [(e["node"], e.get("previous"), e["state"]) for e in events]


RESTARTED = [{"pid": 100, "uptime_ms": 5000}, {"pid": 100, "uptime_ms": 5500}, {"pid": 200, "uptime_ms": 300}]


def test_a_restart_the_watcher_saw_is_read_back_after_a_reload(tmp_path: Path) -> None:
    hub = EventHub()
    watch(tmp_path, hub, {"monitor": RESTARTED})
    r = route(hub)
    assert r.status_code == 200, r.get_json()
    events = r.get_json()["events"]
    assert shape(events) == [("monitor", None, "up"), ("monitor", "up", "down"), ("monitor", "down", "up")], events
    down = events[1]
    assert "restarted" in down["reason"] and down["type"] == "node" and down["role"] == "monitor"
    assert "kind" not in down, "not a monitor event: the page keys it as the watcher's"
    assert [e["ts_ms"] for e in events] == sorted(e["ts_ms"] for e in events)
    assert route(hub, f"?since_ms={events[-1]['ts_ms']}").get_json() == {"events": []}


def test_while_the_monitor_reports_only_its_own_node_events_are_kept(tmp_path: Path) -> None:
    """The page takes the monitor's word for every other node while it reports (the watcher's
    down after one missed PING flipped a paused node's card), so a reload shows what it showed."""
    clock = Clock()
    hub = EventHub(clock=clock)
    hub.publish({"type": "status", "nodes": [], "ts_ms": 1})
    watch(tmp_path, hub, {"monitor": RESTARTED, "broker-1": [{"pid": 7, "uptime_ms": 1}, None, None]})
    assert {e["node"] for e in route(hub).get_json()["events"]} == {"monitor"}
    clock.s += 10                                   # the monitor has been silent since
    watch(tmp_path / "again", hub, {"broker-1": [{"pid": 7, "uptime_ms": 1}, None]})
    assert [e for e in shape(route(hub).get_json()["events"]) if e[0] == "broker-1"] == [
        ("broker-1", None, "up"), ("broker-1", "up", "down")]


def test_the_hub_keeps_a_bounded_number(tmp_path: Path) -> None:
    hub = EventHub()
    for i in range(RECENT_EVENTS_MAX + 10):
        hub.publish({"type": "node", "node": "monitor", "state": "up", "ts_ms": i}, keep=True)
    hub.publish({"type": "node", "node": "broker-1", "state": "up", "ts_ms": 10**6})   # not kept
    kept = route(hub, f"?limit={RECENT_EVENTS_MAX}").get_json()["events"]
    assert [e["ts_ms"] for e in kept] == list(range(10, RECENT_EVENTS_MAX + 10))
    assert route(hub, role="produce").status_code == 403
