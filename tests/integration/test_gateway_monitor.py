"""The gateway hooked to the monitor, with real processes: /metrics through the gateway (the
monitor's exposition over RPC), the gateway's own HTTP request counter reaching it, the
monitor's events and status relayed on /ws/events, its history as REST, and 503 once the
monitor is gone."""

from __future__ import annotations

import json
from typing import Any

import pytest
import websocket
from prometheus_client.parser import text_string_to_metric_families

from tests.gateway_client import GATEWAY_NODES, ROLE_KEYS, Http, gateway_overrides
from tests.harness import Cluster, wait_until
from tests.integration.monitor_support import monitor_options

pytestmark = pytest.mark.timeout(120)
RECORDS = 25


CLUSTER_OPTIONS = monitor_options(3, extra_nodes=GATEWAY_NODES, **gateway_overrides())  # tests/conftest.py


@pytest.fixture(scope="module")
def http(module_cluster: Cluster) -> Http:
    return Http(module_cluster.raw["nodes"]["gateway"]["port"], role="read")


def families(http: Http) -> dict[str, Any]:
    r = http("GET", "/metrics")
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain")
    return {f.name: f for f in text_string_to_metric_families(r.text)}


def total(fams: dict[str, Any], family: str, sample: str, **labels: str) -> float:
    if family not in fams:
        return 0.0
    return sum(s.value for s in fams[family].samples
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


def test_metrics_through_the_gateway_parse_and_count_produced_records(cluster: Cluster, http: Http) -> None:
    admin = Http(cluster.raw["nodes"]["gateway"]["port"])
    admin.ok("POST", "/v3/clusters/test/topics", {"topic_name": "mon", "partitions_count": 3})
    wait_until(lambda: all(p["leader"] for p in admin.ok("GET", "/v3/clusters/test/topics/mon/partitions")["data"]),
               20, what="leaders")
    produce = Http(cluster.raw["nodes"]["gateway"]["port"], role="produce")
    produce.ok("POST", "/topics/mon", {"records": [{"value": i} for i in range(RECORDS)]}, acks="all")
    wait_until(lambda: total(families(http), "loom_broker_records_in", "loom_broker_records_in_total",
                             topic="mon") == RECORDS, 20, what=f"{RECORDS} records counted on /metrics")
    doc = http.ok("GET", "/openapi.json")
    assert doc["paths"]["/metrics"]["get"]["x-loom-role"] == "read"
    assert "text/plain; version=0.0.4" in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]


def test_the_http_request_counter_reaches_the_monitor(cluster: Cluster, http: Http) -> None:
    route = "/v3/clusters/<cluster_id>/topics"

    def count(status: str) -> float:
        return total(families(http), "loom_gateway_http_requests", "loom_gateway_http_requests_total",
                     node="gateway", route=route, status=status)
    before_200, before_404 = count("200"), count("404")
    for _ in range(3):
        http.ok("GET", "/v3/clusters/test/topics")
    assert http("GET", "/v3/clusters/nope/topics").status_code == 404
    wait_until(lambda: count("200") >= before_200 + 3 and count("404") >= before_404 + 1, 20,
               what="the gateway's request counts on the monitor's /metrics")
    fams = families(http)
    routes = {s.labels["route"] for s in fams["loom_gateway_http_requests"].samples}
    assert all(r.startswith("/") or r == "unmatched" for r in routes)
    assert "/v3/clusters/test/topics" not in routes, "labels are route templates, not paths"


def test_history_route_has_the_monitors_shape(cluster: Cluster, http: Http) -> None:
    doc = http.ok("GET", "/openapi.json")
    assert doc["paths"]["/monitor/history"]["get"]["x-loom-role"] == "read"
    h = wait_until(lambda: (lambda x: x if x["t"] else None)(http.ok("GET", "/monitor/history")), 20,
                   what="history points")
    assert set(h) == {"interval_ms", "t", "series"} and h["interval_ms"] == 300
    assert all(len(v) == len(h["t"]) for v in h["series"].values())
    assert "brokers_alive" in h["series"]


def test_monitor_events_and_status_on_ws_events(cluster: Cluster) -> None:
    url = f"ws://127.0.0.1:{cluster.raw['nodes']['gateway']['port']}/ws/events"
    ws = websocket.create_connection(url, header=[f"Authorization: Bearer {ROLE_KEYS['read']}"], timeout=10)
    seen: list[dict] = []

    def saw(pred: Any) -> bool:
        ws.settimeout(1)
        try:
            seen.append(json.loads(ws.recv()))
        except websocket.WebSocketTimeoutException:
            pass
        return any(pred(e) for e in seen)
    try:
        wait_until(lambda: saw(lambda e: e.get("type") == "status" and "cluster" in e and "nodes" in e), 10,
                   what="the monitor's status")
        cluster.kill("consumer-2")
        wait_until(lambda: saw(lambda e: e.get("type") == "node" and e.get("kind") == "health"
                               and e.get("node") == "consumer-2" and e.get("state") == "down"), 30,
                   what="the monitor's consumer-2 down event")
        cluster.start_node("consumer-2")
        wait_until(lambda: saw(lambda e: e.get("kind") == "health" and e.get("node") == "consumer-2"
                               and e.get("state") == "healthy"), 30, what="consumer-2 healthy again")
    finally:
        ws.close()
    # the same events, unchanged, from GET /monitor/events (the dashboard replays them on load)
    relayed = [e for e in seen if e.get("type") in ("node", "alert", "recovery") and "seq" in e]
    http = Http(cluster.raw["nodes"]["gateway"]["port"], role="read")
    logged = {e["seq"]: e for e in http.ok("GET", "/monitor/events", limit=1000)["events"]}
    assert relayed and all(logged.get(e["seq"]) == e for e in relayed), (relayed, logged)
    assert list(logged) == sorted(logged), "oldest first"


def test_metrics_and_history_are_503_without_the_monitor(cluster: Cluster, http: Http) -> None:
    cluster.stop("monitor")
    for path in ("/metrics", "/monitor/history", "/monitor/events"):
        r = http("GET", path)
        assert r.status_code == 503 and r.json()["error_code"] == 50301 and "monitor" in r.json()["message"], r.text
    assert http("GET", "/v3/clusters/test/topics").status_code == 200, "the rest keeps serving"
