"""The gateway's link to the monitor node (nodes/monitor), when the config has one.

``MonitorAccess`` -- request side, for the HTTP threads: the Prometheus text (``GET /metrics``),
the history (``GET /monitor/history``) and the event log (``GET /monitor/events``) over RPC
(fabric/client/monitor.py). One client per
thread (``threading.local``); a client that timed out is dropped and made again. Raises
``webui.errors.ClusterError("unavailable")`` when no monitor is configured or it does not
answer. Thread-safe.

``MonitorRelay`` -- event side, on the gateway control's reactor thread: a SUB socket on the
monitor's PUB port (topics ``ev`` and ``st``) whose events (``type`` node/alert/recovery, and
``name`` for alerts) and cluster status (as ``{"type": "status", ...}``) go to the event hub
(webui/events.py) unchanged. The gateway's own health watcher keeps publishing node up/down
beside it, so ``/ws/events`` still shows node health when there is no monitor or it is down.
Not thread-safe: owned by the control thread.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import zmq

from fabric import protocol as P
from fabric import wire
from fabric.client.monitor import MonitorClient
from fabric.config import LoomConfig
from fabric.errors import FabricError
from fabric.reactor import Reactor
from fabric.rpc import make_socket
from webui.errors import ClusterError
from webui.events import EventSink

log = logging.getLogger(__name__)

MONITOR_TIMEOUT_MS = 2000


def monitor_name(config: LoomConfig) -> str | None:
    return next((n for n, c in config.nodes.items() if c.role == "monitor"), None)


class MonitorAccess:
    def __init__(self, config: LoomConfig, timeout_ms: int = MONITOR_TIMEOUT_MS) -> None:
        name = monitor_name(config)
        self.endpoint = config.nodes[name].endpoint if name else None
        self.timeout_ms = timeout_ms
        self._local = threading.local()

    def _call(self, fn: Any) -> Any:
        if self.endpoint is None:
            raise ClusterError("unavailable", "no monitor node is configured")
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._local.client = MonitorClient(self.endpoint, timeout_ms=self.timeout_ms)
        try:
            return fn(client)
        except FabricError as e:
            client.close()  # a timed-out request may still answer later: start clean
            self._local.client = None
            raise ClusterError("unavailable", f"the monitor does not answer: {e}") from None

    def metrics_text(self) -> tuple[bytes, str]:
        return self._call(lambda c: c.metrics_text())  # type: ignore[no-any-return]

    def history(self, since_ms: int = 0) -> dict[str, Any]:
        return self._call(lambda c: c.history(None, since_ms))  # type: ignore[no-any-return]

    def events(self) -> list[Any]:
        """The monitor's whole event log (it keeps the last ``P.EVENTS_MAX``), oldest first, as
        it sent each event on its PUB socket; the caller filters (items are the peer's input)."""
        reply = self._call(lambda c: c.events(0, P.EVENTS_MAX))
        events = reply.get("events") if isinstance(reply, dict) else None
        return events if isinstance(events, list) else []


class MonitorRelay:
    def __init__(self, ctx: zmq.Context, reactor: Reactor, config: LoomConfig, hub: EventSink) -> None:
        self.hub = hub
        self.sub: zmq.Socket | None = None
        self.malformed = 0
        name = monitor_name(config)
        if name is None:
            return
        self.sub = make_socket(ctx, zmq.SUB)
        self.sub.setsockopt(zmq.RECONNECT_IVL_MAX, config.liveness.heartbeat_interval_ms)
        self.sub.setsockopt(zmq.SUBSCRIBE, P.TOPIC_EVENT)
        self.sub.setsockopt(zmq.SUBSCRIBE, P.TOPIC_STATUS)
        self.sub.connect(config.nodes[name].pub_endpoint)
        reactor.add_socket(self.sub, self._on_sub)

    def _on_sub(self, frames: list[bytes]) -> None:
        try:
            msg = wire.decode_pub(frames, (P.PUB_EVENT, P.PUB_STATUS))
        except wire.MalformedFrame:  # the monitor's bad input: count and drop (there is no one to answer)
            self.malformed += 1
            return
        event = dict(msg.header)
        if msg.kind == P.PUB_STATUS:
            event["type"] = "status"
        if isinstance(event.get("type"), str):
            self.hub.publish(event)
        else:
            self.malformed += 1

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close(0)
