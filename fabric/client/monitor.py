"""A blocking client of the monitor node (nodes/monitor/): for ``loom status``, ``loom alerts``
and the gateway (``/metrics``, ``/ws/events``, the dashboard's charts).

    status()            the cluster's and every node's health (MONITOR_STATUS)
    history(series, since_ms)  {interval_ms, t: [wall ms], series: {key: [value|None]}}
    alerts(include_resolved)  firing and pending alerts (and resolved ones with include_resolved=True)
    events(since_seq)   ({events: [...], seq}): alert, health and recovery events, oldest first
    metrics_text()      the Prometheus text exposition (bytes) and its content type

Raises RemoteError, or RequestTimeout when the monitor does not answer (with
``fail_on_refused``, ConnectionRefused at once when its port refuses the connection: nothing
listens there). Not thread-safe: one client per thread.
"""

from __future__ import annotations

from typing import Any

import zmq

from fabric import protocol as P
from fabric.blocking_client import BlockingClient
from fabric.zmq_context import context as zmq_context

TIMEOUT_MS = 2000


class MonitorClient:
    def __init__(self, endpoint: str, ctx: zmq.Context | None = None, timeout_ms: int = TIMEOUT_MS, *,
                 fail_on_refused: bool = False) -> None:
        self.client = BlockingClient(ctx or zmq_context(), endpoint, fail_on_refused=fail_on_refused)
        self.timeout_ms = timeout_ms

    def _call(self, command: bytes, header: dict | None = None) -> tuple[dict, list[bytes]]:
        return self.client.call(command, header or {}, timeout_ms=self.timeout_ms)

    def status(self) -> dict[str, Any]:
        return self._call(P.MONITOR_STATUS)[0]

    def history(self, series: list[str] | None = None, since_ms: int = 0) -> dict[str, Any]:
        return self._call(P.MONITOR_HISTORY, {"series": series, "since_ms": since_ms})[0]

    def alerts(self, include_resolved: bool = True) -> list[dict]:
        return self.alerts_reply(include_resolved)["alerts"]

    def alerts_reply(self, include_resolved: bool = True) -> dict[str, Any]:
        """The whole MONITOR_ALERTS reply: ``alerts`` and the monitor's ``cluster`` name."""
        return self._call(P.MONITOR_ALERTS, {"all": include_resolved})[0]

    def events(self, since_seq: int = 0, limit: int = 1000) -> dict[str, Any]:
        return self._call(P.MONITOR_EVENTS, {"since_seq": since_seq, "limit": limit})[0]

    def metrics_text(self) -> tuple[bytes, str]:
        header, payloads = self._call(P.MONITOR_METRICS)
        return (bytes(payloads[0]) if payloads else b""), header.get("content_type", "text/plain")

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "MonitorClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
