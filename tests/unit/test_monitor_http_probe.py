"""The monitor's HTTP liveness probe (nodes/monitor/http_probe.py) against the gateway's real
Flask app served on 127.0.0.1 (a stub cluster agent, no processes): the probe's route asks the
cluster nothing, a rate-limited answer still proves the HTTP threads serve, and at most one
probe is in flight per gateway, judged failed once it outlasts its timeout."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from fabric.apikeys import hash_key
from fabric.clock import Clock
from fabric.config import GatewayConfig, SecurityConfig
from nodes.local_cluster import wait_until
from nodes.monitor import http_probe
from nodes.monitor.http_probe import HttpProbe, probe_http
from tests.unit.fakes import KEYS, StubAgent, served_wsgi
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub

TIMEOUT_MS = 500


class CoordinatorGone(StubAgent):
    """The coordinator does not answer: /health waits on it (as the real agent does, up to 3 s)."""

    def __init__(self) -> None:
        self.released = threading.Event()

    def coordinator_reachable(self) -> bool:
        self.released.wait()
        return False


@contextmanager
def served_gateway_app(agent: Any, rate_per_s: float, burst: int) -> Iterator[int]:
    """The gateway's Flask app served by werkzeug on a free port of 127.0.0.1; yields the port."""
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(rate_per_s, burst, 100),
                 settings=GatewayConfig(), security=SecurityConfig(rate_limit_per_s=rate_per_s), cluster_id="test")
    with served_wsgi(create_app(gw)) as port:
        yield port


def test_the_probe_is_answered_while_the_coordinator_is_gone_and_the_rate_limit_is_spent() -> None:
    """The monitor's probes come from 127.0.0.1 without a key: they share the per-address bucket
    with every keyless local client (the dashboard, /health checks). A spent bucket answers 429,
    which is an answer: it cannot make a serving gateway look hung."""
    agent = CoordinatorGone()
    with served_gateway_app(agent, rate_per_s=0.001, burst=2) as port:
        try:
            first = probe_http("127.0.0.1", port, TIMEOUT_MS)
            assert first.answered and first.status == 200, first
            health = probe_http("127.0.0.1", port, TIMEOUT_MS, path="/health")
            assert not health.answered, f"/health waits on the coordinator, so it cannot be the probe: {health}"
            limited = probe_http("127.0.0.1", port, TIMEOUT_MS)
            assert limited.answered and limited.status == 429, limited
            assert "answered 429" in limited.detail and str(port) in limited.detail
        finally:
            agent.released.set()


def test_a_refused_connection_fails_the_probe() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        out = probe_http("127.0.0.1", port, TIMEOUT_MS)
    assert not out.answered and "ConnectionRefusedError" in out.detail and str(port) in out.detail, out


def test_one_probe_in_flight_and_an_overdue_one_is_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe stuck in its thread (name resolution, a server trickling bytes) past the timeout
    is judged failed, and no second probe piles up behind it."""
    stuck, calls = threading.Event(), []

    def probe_stuck(host: str, port: int, timeout_ms: int, clock: Clock | None = None) -> http_probe.ProbeOutcome:
        calls.append(port)
        stuck.wait()
        return http_probe.ProbeOutcome(True, "answered late", 200, 5000)
    monkeypatch.setattr(http_probe, "probe_http", probe_stuck)
    probe = HttpProbe("127.0.0.1", 1, timeout_ms=50)
    try:
        assert probe.outcome() is None and probe.start()
        wait_until(lambda: calls, 5, what="the probe thread to start its probe")
        assert not probe.start(), "a second probe while the first is in flight"
        out = wait_until(probe.outcome, 5, what="the overdue probe judged failed")
        assert not out.answered and "did not answer within 50 ms" in out.detail, out
        stuck.set()
        wait_until(lambda: (o := probe.outcome()) is not None and o.answered, 5, what="the late answer taken")
        assert probe.start() and len(calls) <= 2
    finally:
        stuck.set()
        probe.close()
