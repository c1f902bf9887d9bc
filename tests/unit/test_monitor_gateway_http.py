"""The monitor's judgement of a gateway whose HTTP serving hangs while its control thread (STATS,
heartbeats) runs on: every request thread stuck, or the listener not accepting. Judged only by
heartbeats and STATS, such a gateway stayed ``healthy`` for good -- no alert, no restart --
while no user could reach Loom through it. Real sockets on 127.0.0.1: a port that listens and
never answers stands in for the hung HTTP server; no gateway process is started. The monitor's
clock is a ManualClock, which its probes read too: a probe is as old as the test made it, not as
old as a loaded machine made it (judged on real time, a prompt answer slowed past
``slow_response_ms`` by the machine's load had the gateway degraded where the test expected it
healthy)."""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from fabric import protocol as P
from fabric.blocking_client import BlockingClient
from fabric.clock import ManualClock
from fabric.config import LoomConfig, load_config
from nodes.gateway.control import GatewayControl
from nodes.local_cluster import free_ports, make_config, wait_until
from nodes.monitor import Monitor
from nodes.monitor import health as H
from nodes.monitor.http_probe import STOP_JOIN_TIMEOUT_S, HttpProbe
from webui.context import HttpRequestCounter
from webui.events import EventHub

UNRESPONSIVE_AFTER_MS = 2000
SLOW_RESPONSE_MS = 200
ALIVE = os.getpid()  # this test process stands in for the gateway's master: alive


@contextmanager
def http_port_that_never_answers() -> Iterator[int]:
    """A port on 127.0.0.1 that completes TCP handshakes (the kernel's backlog) and never
    reads a request nor answers: an HTTP server whose threads are all stuck."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield sock.getsockname()[1]
    finally:
        sock.close()


@contextmanager
def http_server(before_answer: Callable[[], object]) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 whose request threads each call ``before_answer`` and then
    answer 200; yields its port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            before_answer()
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def http_server_with_stuck_threads() -> Iterator[tuple[int, threading.Event]]:
    """An HTTP server on 127.0.0.1 whose request threads are stuck until the event is set
    (then they answer 200); yields its port and that event."""
    unstuck = threading.Event()
    try:
        with http_server(unstuck.wait) as port:
            yield port, unstuck
    finally:
        unstuck.set()


@contextmanager
def http_server_answering_after(delay_s: float) -> Iterator[int]:
    """An HTTP server on 127.0.0.1 that answers every request 200, each after ``delay_s``."""
    stop = threading.Event()
    try:
        with http_server(lambda: stop.wait(delay_s)) as port:
            yield port
    finally:
        stop.set()


def port_has_connections(port: int, count: int) -> bool:
    """``count`` TCP connections to 127.0.0.1:``port`` are established (/proc/net/tcp)."""
    established = 0
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            remote_port, state = int(fields[2].split(":")[1], 16), fields[3]
            if remote_port == port and state == "01":
                established += 1
    return established >= count


def gateway_config(tmp_path: Path, http_port: int) -> LoomConfig:
    """Coordinator, broker 1, a gateway serving HTTP on ``http_port`` and the monitor."""
    cfg = load_config(make_config(tmp_path, 1, extra_nodes=("gateway", "monitor"), overrides={
        "monitor": {"unresponsive_after_ms": UNRESPONSIVE_AFTER_MS, "slow_response_ms": SLOW_RESPONSE_MS,
                    "health_interval_ms": 100}}), environ={})
    cfg.nodes["gateway"] = cfg.nodes["gateway"].model_copy(update={"port": http_port})
    return cfg


@contextmanager
def monitor_of_gateway(tmp_path: Path, http_port: int) -> Iterator[Monitor]:
    """A Monitor on a ManualClock (checks run by hand) watching a gateway on ``http_port``."""
    monitor = Monitor(gateway_config(tmp_path, http_port), "monitor", clock=ManualClock(0))
    try:
        yield monitor
    finally:
        monitor.close()


def degraded_by_its_http_port(monitor: Monitor, port: int) -> H.NodeView:
    """Checks, one health interval apart, over ``slow_response_ms`` and two intervals: the probe
    the first one started has then been in flight for longer than ``slow_response_ms`` (on the
    monitor's clock, which the probe reads), and the gateway, its STATS answered, is degraded
    for its HTTP port; its view."""
    view = monitor.views["gateway"]
    state = checks_over(monitor, SLOW_RESPONSE_MS + 2 * monitor.mon.health_interval_ms)
    assert state == H.DEGRADED and f"HTTP port {port}" in view.reason, (state, view.reason)
    return view


def check_with_stats_answered(monitor: Monitor, coordinator_heard: bool = True) -> str:
    """One check at which the gateway's heartbeats and STATS answer promptly (and the
    coordinator's heartbeats arrive, unless ``coordinator_heard`` is False); its state."""
    view = monitor.views["gateway"]
    view.heard(monitor.clock.now_ms(), ALIVE)
    if coordinator_heard:
        coordinator = monitor.views["coordinator"]
        coordinator.heard(monitor.clock.now_ms(), ALIVE)
        coordinator.stats_failed, coordinator.stats_rtt_ms = False, 3
    view.stats_failed, view.stats_rtt_ms = False, 3
    monitor._check()
    return view.state


def checks_over(monitor: Monitor, ms: int, coordinator_heard: bool = True) -> str:
    """A check every health interval for ``ms``, as the monitor runs them (a clock jumped by
    seconds between two checks is the monitor's own pause, which forgives the silences and
    failing probes of that time: fabric/stall.py); the gateway's state after the last."""
    steps = -(-ms // monitor.mon.health_interval_ms)
    for _ in range(steps):
        monitor.clock.advance(monitor.mon.health_interval_ms)  # type: ignore[attr-defined]
        state = check_with_stats_answered(monitor, coordinator_heard)
    return state


def checks_each_after_its_probe(monitor: Monitor, ms: int) -> str:
    """A check every health interval for ``ms``, each once the probe the last one started has
    ended -- a gateway that answers within the interval, however slow the machine running the
    test: the monitor's clock does not move while a probe is in flight; its state after the last."""
    probe, steps = monitor.http_probes["gateway"], -(-ms // monitor.mon.health_interval_ms)
    for _ in range(steps):
        wait_until(lambda: not probe.in_flight(), 10, interval_s=0.005, what="the probe in flight answered")
        state = checks_over(monitor, monitor.mon.health_interval_ms)
    return state


def test_a_gateway_whose_http_port_hangs_is_degraded_then_unresponsive_and_restart_is_asked(tmp_path: Path) -> None:
    with http_port_that_never_answers() as port, monitor_of_gateway(tmp_path, port) as monitor:
        view = degraded_by_its_http_port(monitor, port)
        assert checks_over(monitor, UNRESPONSIVE_AFTER_MS + 1) == H.UNRESPONSIVE, (view.state, view.reason)
        assert f"HTTP port {port}" in view.reason, view.reason
        # the recovery machinery acts on it (no supervisor runs it here: reported, not killed)
        acted = [e for e in monitor.events if e["kind"] == "recovery" and e.get("node") == "gateway"]
        assert acted and acted[-1]["action"] == "not_restarted" and "HTTP" in acted[-1]["reason"], acted
        node = next(n for n in monitor.status()["nodes"] if n["node"] == "gateway")
        assert node["state"] == H.UNRESPONSIVE and "HTTP" in node["reason"], node


def test_a_gateway_whose_stuck_request_threads_serve_again_is_healthy_again(tmp_path: Path) -> None:
    with http_server_with_stuck_threads() as (port, unstuck), monitor_of_gateway(tmp_path, port) as monitor:
        view = degraded_by_its_http_port(monitor, port)
        assert "did not answer within" in view.reason, view.reason
        unstuck.set()
        # the stuck probe's late answer (slow: degraded), then a prompt one
        assert checks_each_after_its_probe(monitor, 2 * monitor.mon.health_interval_ms) == H.HEALTHY, view.reason
        probe = next(n for n in monitor.status()["nodes"] if n["node"] == "gateway")["http_probe"]
        assert probe["answered"] and probe["status"] == 200 and probe["failing_ms"] is None, probe
        # earlier failures no longer count
        assert checks_each_after_its_probe(monitor, UNRESPONSIVE_AFTER_MS + 1) == H.HEALTHY, view.reason


def test_a_gateway_that_answers_slowly_is_degraded_never_unresponsive(tmp_path: Path) -> None:
    """A gateway under load answering /health/live in twice ``slow_response_ms``: each probe
    gave up at ``slow_response_ms`` (its socket timeout), so every probe failed and the gateway
    was judged unresponsive and restarted -- every WebSocket and consumer instance dropped for a
    gateway that serves. A late answer is now waited for (up to ``unresponsive_after_ms``):
    slow is degraded, only no answer is unresponsive. The monitor's clock follows real time."""
    with http_server_answering_after(2 * SLOW_RESPONSE_MS / 1000) as port, \
            monitor_of_gateway(tmp_path, port) as monitor:
        view, states, slow_seen = monitor.views["gateway"], set(), False
        started = last = time.monotonic()
        while time.monotonic() - started < 3 * UNRESPONSIVE_AFTER_MS / 1000:  # bounded: 6 s
            threading.Event().wait(0.05)
            now = time.monotonic()
            monitor.clock.advance(int((now - last) * 1000))  # type: ignore[attr-defined]
            last = now
            states.add(check_with_stats_answered(monitor))
            slow_seen = slow_seen or "slow HTTP answers" in view.reason
        assert H.UNRESPONSIVE not in states, view.reason
        assert not [e for e in monitor.events if e["kind"] == "recovery" and e.get("node") == "gateway"]
        assert slow_seen and states <= {H.HEALTHY, H.DEGRADED}, states


def test_a_gateway_is_not_restarted_for_its_http_port_while_the_coordinator_is_out(tmp_path: Path) -> None:
    """With the coordinator out, a gateway's requests that need metadata (produce, /health)
    each hold a request thread for seconds: under load they fill every thread and the probe
    waits behind them. A restart would cure nothing (the new process waits on the same
    coordinator) and drop every WebSocket and consumer instance: the gateway stays degraded,
    and is judged on its HTTP port again from when the coordinator is back."""
    with http_port_that_never_answers() as port, monitor_of_gateway(tmp_path, port) as monitor:
        view = degraded_by_its_http_port(monitor, port)
        coordinator = monitor.views["coordinator"]
        for _ in range(3):  # the coordinator falls silent: down, then long past the gateway's limit
            assert checks_over(monitor, UNRESPONSIVE_AFTER_MS + 1, coordinator_heard=False) == H.DEGRADED, view.reason
            assert f"HTTP port {port}" in view.reason, view.reason
        assert coordinator.state not in (H.HEALTHY, H.DEGRADED), coordinator.state
        assert not [e for e in monitor.events if e["kind"] == "recovery" and e.get("node") == "gateway"]
        assert check_with_stats_answered(monitor) == H.DEGRADED  # the coordinator is back: judged from now
        assert checks_over(monitor, UNRESPONSIVE_AFTER_MS // 2) == H.DEGRADED, view.reason
        assert checks_over(monitor, UNRESPONSIVE_AFTER_MS // 2 + 1) == H.UNRESPONSIVE, view.reason


def test_the_gateway_names_its_master_pid_in_stats_as_in_heartbeats(tmp_path: Path) -> None:
    """The monitor takes a node's pid from its heartbeats and its STATS answers; the gateway's
    heartbeats named gunicorn's master (the process the supervisor runs) and its STATS answers
    the worker, so the view's pid flipped at every check -- and a restart asked for the worker's
    pid, which the supervisor does not know."""
    cfg = load_config(make_config(tmp_path, 1, extra_nodes=("gateway",)), environ={})
    master_pid = os.getppid()  # any live pid other than ours stands in for gunicorn's master
    control = GatewayControl(cfg, "gateway", master_pid, EventHub(), HttpRequestCounter())
    control.start()
    client = BlockingClient(control.ctx, cfg.node("gateway").endpoint)
    try:
        for header in ({"metrics_only": True}, {}):  # the monitor's poll, and `loom status`'s
            reply, _ = client.call(P.STATS, header, timeout_ms=5000)
            assert reply["pid"] == master_pid == control.heartbeat_fields()["pid"], (header, reply.get("pid"))
    finally:
        client.close()
        control.stop()


def test_close_waits_for_stuck_probes_once_not_once_per_gateway(tmp_path: Path) -> None:
    """Three gateways whose probes hang: the monitor's close told and waited for each in turn,
    up to STOP_JOIN_TIMEOUT_S apiece; it now tells them all and waits once."""
    with http_port_that_never_answers() as port:
        monitor = Monitor(gateway_config(tmp_path, port), "monitor", clock=ManualClock(0))
        monitor.http_probes["gateway"].close()
        monitor.http_probes = {f"gateway-{i}": HttpProbe("127.0.0.1", port, 60_000) for i in range(3)}
        for probe in monitor.http_probes.values():
            assert probe.start()
        wait_until(lambda: port_has_connections(port, 3), 10, what="three probes connected")
        started = time.monotonic()
        monitor.close()
        took_s = time.monotonic() - started
    assert took_s < 2 * STOP_JOIN_TIMEOUT_S, f"close took {took_s:.1f} s for three stuck probes"


def test_the_monitors_own_row_names_its_pid(tmp_path: Path) -> None:
    """`loom status` showed '-' as the monitor's pid: its own row had none."""
    with monitor_of_gateway(tmp_path, free_ports(1)[0]) as monitor:
        row = next(n for n in monitor.status()["nodes"] if n["node"] == "monitor")
        assert row["pid"] == os.getpid()
