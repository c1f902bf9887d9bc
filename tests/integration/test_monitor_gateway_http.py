"""A real gateway whose HTTP serving hangs while its control thread runs on, with real
processes: the fault-injection hold (FAULTS ``hold_http_ms`` on the gateway's control port,
only with ``faults.enabled``; webui/request_hold.py) makes every HTTP request wait, so none is
served, yet PING, STATS and heartbeats answer from the control thread. The monitor's HTTP probe
finds it degraded, then unresponsive (no supervisor runs it here: reported, never killed), and
healthy again once the hold is released.

Nothing but the HTTP probe can find this gateway out: its heartbeats and STATS go on as from a
healthy node, so without the probe the monitor keeps it healthy and the wait for
``unresponsive`` (with the probe's reason naming the HTTP port) runs out. (It used to hang the
gateway by letting WebSockets take every request thread, a config now refused.)"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import requests

from fabric import protocol as P
from fabric.client.monitor import MonitorClient
from tests.gateway_client import gateway_overrides
from tests.harness import Cluster, wait_until
from tests.integration.monitor_support import monitor_options

pytestmark = pytest.mark.timeout(120)
HOLD_MS = 60_000  # ends by itself after this, should the test not release it
CLUSTER_OPTIONS = monitor_options(1, extra_nodes=("gateway",),
                                  monitor={"slow_response_ms": 500, "unresponsive_after_ms": 3000},
                                  faults={"enabled": True}, **gateway_overrides())


def gateway_view(monitor: MonitorClient) -> dict:
    return next(n for n in monitor.status()["nodes"] if n["node"] == "gateway")


def hold_http(cluster: Cluster, ms: int) -> dict:
    return cluster.call("gateway", P.FAULTS, {"hold_http_ms": ms})[0]


@pytest.fixture
def http_held(cluster: Cluster) -> Iterator[None]:
    """Every HTTP request of the gateway held, from a gateway that answered HTTP before."""
    port = cluster.raw["nodes"]["gateway"]["port"]
    assert requests.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200
    monitor = MonitorClient(cluster.endpoint("monitor"))
    wait_until(lambda: gateway_view(monitor)["state"] == "healthy", 30, what="the gateway healthy before the fault")
    assert hold_http(cluster, HOLD_MS)["hold_http_ms"] == HOLD_MS
    try:
        yield
    finally:
        hold_http(cluster, 0)


def test_a_gateway_whose_http_requests_hang_is_found_by_its_http_port(cluster: Cluster, http_held: None) -> None:
    monitor = MonitorClient(cluster.endpoint("monitor"))
    port = cluster.raw["nodes"]["gateway"]["port"]
    with pytest.raises(requests.exceptions.Timeout):  # what users of this gateway see
        requests.get(f"http://127.0.0.1:{port}/health", timeout=1)
    assert cluster.ping("gateway")["node"] == "gateway", "its control thread answers on"
    view = wait_until(lambda: (v := gateway_view(monitor))["state"] == "unresponsive" and v, 30,
                      what="the gateway judged unresponsive by its HTTP port")
    assert f"HTTP port {port}" in view["reason"] and not view["http_probe"]["answered"], view
    assert cluster.stats("gateway")["node"] == "gateway", "STATS answers on: only the probe saw the hang"
    events = monitor.events()["events"]
    assert any(e["kind"] == "health" and e["node"] == "gateway" and e["state"] == "degraded" for e in events), \
        "degraded first, while the failures were shorter than unresponsive_after_ms"
    assert any(e["kind"] == "recovery" and e.get("node") == "gateway" and e["action"] == "not_restarted"
               and f"HTTP port {port}" in e["reason"] for e in events), "the recovery machinery acted on it"
    assert hold_http(cluster, 0)["held_requests"] >= 1, "the hold held the requests that hung"
    view = wait_until(lambda: (v := gateway_view(monitor))["state"] == "healthy" and v, 30,
                      what="the gateway healthy again once its requests are released")
    assert view["http_probe"]["answered"] and view["http_probe"]["status"] == 200, view
    assert requests.get(f"http://127.0.0.1:{port}/health/live", timeout=5).status_code == 200
