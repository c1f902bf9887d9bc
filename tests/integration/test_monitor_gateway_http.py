"""A real gateway whose HTTP serving hangs while its control thread runs on, with real
processes: every one of its request threads is held by a WebSocket (``websockets_max`` as large
as ``worker_threads``), so no HTTP request is served, yet PING, STATS and heartbeats answer
from the control thread. The monitor's HTTP probe finds it degraded, then unresponsive (no
supervisor runs it here: reported, never killed), and healthy again once the threads are free."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests
import websocket

from fabric.client.monitor import MonitorClient
from tests.gateway_client import ROLE_KEYS, gateway_overrides
from tests.harness import Cluster, wait_until
from tests.integration.monitor_support import monitor_options

pytestmark = pytest.mark.timeout(120)
THREADS = 4  # the least worker_threads allows
CLUSTER_OPTIONS = monitor_options(1, extra_nodes=("gateway",),
                                  monitor={"slow_response_ms": 500, "unresponsive_after_ms": 3000},
                                  **gateway_overrides(worker_threads=THREADS, websockets_max=THREADS))


def gateway_view(monitor: MonitorClient) -> dict:
    return next(n for n in monitor.status()["nodes"] if n["node"] == "gateway")


@pytest.fixture
def every_thread_held(cluster: Cluster) -> Iterator[list[websocket.WebSocket]]:
    """THREADS WebSockets open on the gateway, each holding one of its request threads."""
    url = f"ws://127.0.0.1:{cluster.raw['nodes']['gateway']['port']}/ws/events"
    sockets: list[websocket.WebSocket] = []
    try:
        for _ in range(THREADS):
            sockets.append(websocket.create_connection(url, header=[f"Authorization: Bearer {ROLE_KEYS['read']}"],
                                                       timeout=10))
        yield sockets
    finally:
        for ws in sockets:
            ws.close()


def test_a_gateway_with_every_request_thread_held_is_found_by_its_http_port(
        cluster: Cluster, every_thread_held: list[websocket.WebSocket]) -> None:
    monitor = MonitorClient(cluster.endpoint("monitor"))
    port = cluster.raw["nodes"]["gateway"]["port"]
    with pytest.raises(requests.exceptions.Timeout):  # what users of this gateway see
        requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
    assert cluster.ping("gateway")["node"] == "gateway", "its control thread answers on"
    view = wait_until(lambda: (v := gateway_view(monitor))["state"] == "unresponsive" and v, 30,
                      what="the gateway judged unresponsive by its HTTP port")
    assert f"HTTP port {port}" in view["reason"] and not view["http_probe"]["answered"], view
    events = monitor.events()["events"]
    assert any(e["kind"] == "health" and e["node"] == "gateway" and e["state"] == "degraded" for e in events), \
        "degraded first, while the failures were shorter than unresponsive_after_ms"
    assert any(e["kind"] == "recovery" and e.get("node") == "gateway" and e["action"] == "not_restarted"
               and f"HTTP port {port}" in e["reason"] for e in events), "the recovery machinery acted on it"
    for ws in every_thread_held:
        ws.close()
    view = wait_until(lambda: (v := gateway_view(monitor))["state"] == "healthy" and v, 30,
                      what="the gateway healthy again once its threads are free")
    assert view["http_probe"]["answered"] and view["http_probe"]["status"] == 200, view
