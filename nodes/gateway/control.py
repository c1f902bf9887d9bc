"""The gateway's fabric side inside the gunicorn worker: a ROUTER on ``control_port`` for
PING and STATS (so ``loom up``, ``loom status`` and the monitor see the gateway like any
node), heartbeats on its PUB port, and the health watcher that feeds ``/ws/events``.

Everything here is made in the worker after gunicorn forked it (ZeroMQ contexts do not
survive a fork) and runs on one reactor thread.

Health watcher: every ``HEALTH_INTERVAL_MS`` it PINGs every other node (one DEALER per node,
all in flight at once; a node whose answer says ``stopping`` drains after SIGTERM, see
``nodes.base``: up, but ``takes_work`` says no -- new produce and consumer instances go
elsewhere while what it took is still waited for) and publishes ``{"type": "node", "node", "role", "state": up|down}``
on the event hub when a node's state changes (and with every broker's liveness from the
coordinator's metadata). A PING answer names its process (``pid``, ``uptime_ms``): an answer
from another process than the last one (another pid, or the uptime gone back) is a node that
was restarted between two PINGs -- the supervisor restarts a killed node in about 1.5 s, within
the PING timeout -- and is published as ``down`` (its ``reason`` says the restart) and ``up``
again, the health changes the timeline shows for a node whose PING went unanswered (``node_up``
stays up: the node is up by then). Each event names the state before it (``previous``, but a
node's first); those the dashboard shows live (the monitor's, and every node's while the monitor
does not report) are kept by the hub for ``GET /gateway/events``, so a reload shows them again. When the config has a monitor, its events and status are relayed to
the hub too (nodes/gateway/monitor_link.py); the watcher stays as the fallback without one.
HTTP request counts (``HttpRequestCounter``, filled by the HTTP threads) are read into this
node's metrics registry by a collector, so STATS carries them to the monitor.

FAULTS also takes ``hold_http_ms`` here (only with ``faults.enabled``): every HTTP request waits
that long, or until ``hold_http_ms: 0``, while this node answers on (webui/request_hold.py); a
``block`` list in the same request is applied too.

Not thread-safe: owned by the control thread, except ``is_up`` and ``takes_work``, which read
dicts that only the control thread replaces (atomic under the GIL).
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from fabric import protocol as P
from fabric.config import LoomConfig
from fabric.errors import RemoteError
from fabric.rpc import RpcClient
from nodes.base import Node
from nodes.gateway.monitor_link import MonitorRelay
from webui.context import HttpRequestCounter
from webui.events import EventHub
from webui.request_hold import HOLD_MS_MAX, RequestHold

log = logging.getLogger(__name__)

HEALTH_INTERVAL_MS = 500
PING_TIMEOUT_MS = 1000


class GatewayControl(Node):
    role = "gateway"

    def __init__(self, config: LoomConfig, name: str, master_pid: int, hub: EventHub,
                 http_requests: HttpRequestCounter, hold: RequestHold | None = None) -> None:
        super().__init__(config, name)
        self.master_pid = master_pid
        self.hold = hold  # the app's request hold: made only with faults.enabled
        self.hub = hub
        self.http_requests = http_requests
        self.metrics.add_collector(http_requests.samples)  # the monitor's gateway_5xx rule reads it
        self.relay = MonitorRelay(self.ctx, self.reactor, config, hub)
        self.node_up: dict[str, bool] = {}
        self.node_stopping: dict[str, bool] = {}  # up, draining after SIGTERM (PING says ``stopping``)
        self._peers = {n: c for n, c in config.nodes.items() if n != name and c.role != "gateway"}
        # a node back from an outage is seen up within a health interval: produce is refused
        # while the producer service is seen down, and a reconnect backoff grown to its usual
        # 5 s cap kept refusing it that long after the service was back
        self._clients = {n: RpcClient(self.ctx, self.reactor, c.endpoint, identity=f"{name}-health",
                                      reconnect_ivl_max_ms=HEALTH_INTERVAL_MS)
                         for n, c in self._peers.items()}
        self._asked: set[str] = set()
        # per node, the (pid, uptime_ms) of its last PING answer: another process is a restart
        self._process: dict[str, tuple[int, int]] = {}
        self._published: dict[str, bool] = {}  # per node, the state of the last event published: its ``previous``
        self.reactor.call_every(HEALTH_INTERVAL_MS, self._check)
        self.reactor.call_later(0, self._check)
        self._thread = threading.Thread(target=self.reactor.run, name="loom-gateway-control", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def is_up(self, endpoint: str) -> bool:
        name = self._peer_at(endpoint)
        return name is None or self.node_up.get(name, True)

    def takes_work(self, endpoint: str) -> bool:
        """Up and not stopping: new work may go there (``is_up``: what it took is waited for)."""
        name = self._peer_at(endpoint)
        return name is None or (self.node_up.get(name, True) and not self.node_stopping.get(name, False))

    def _peer_at(self, endpoint: str) -> str | None:
        return next((name for name, cfg in self._peers.items() if cfg.endpoint == endpoint), None)

    def _on_ping(self, req: Any) -> dict:
        reply = super()._on_ping(req)
        reply.update(pid=self.master_pid, worker_pid=os.getpid())  # the supervisor knows the master
        return reply

    def _on_stats(self, req: Any) -> dict:
        # the master's pid, as in heartbeats and PING: the monitor's view of the gateway took the
        # worker's from STATS and the master's from heartbeats, one after the other, and asked
        # the supervisor to restart whichever it held last (a worker pid it does not know)
        reply = super()._on_stats(req)
        reply.update(pid=self.master_pid, worker_pid=os.getpid())
        return reply

    def _on_faults(self, req: Any) -> dict:
        if "hold_http_ms" not in req.header:
            return super()._on_faults(req)
        if not self.faults.enabled or self.hold is None:
            raise RemoteError(P.INVALID_CONFIG, "fault injection is off (faults.enabled in the config)")
        ms = req.get("hold_http_ms", int)
        if not 0 <= ms <= HOLD_MS_MAX:
            raise RemoteError(P.MALFORMED_REQUEST, f"hold_http_ms must be 0 (release) to {HOLD_MS_MAX}")
        # the other faults of the same request too (checked before either is applied: a bad
        # block list leaves the hold as it was), not dropped silently
        reply = super()._on_faults(req) if "block" in req.header else {}
        held = self.hold.hold_for(ms)
        log.warning("fault injection: %s", f"holding every HTTP request for {ms} ms" if ms else "HTTP requests released")
        return {**reply, "hold_http_ms": ms, "held_requests": held}  # held when the change was made

    def heartbeat_fields(self) -> dict[str, Any]:
        return {**super().heartbeat_fields(), "pid": self.master_pid}

    def stats(self) -> dict[str, Any]:
        return {"http": self.http_requests.totals(), "nodes_up": dict(self.node_up),
                "monitor_events_malformed": self.relay.malformed}

    def _check(self) -> None:
        for name, client in self._clients.items():
            if name in self._asked:
                continue
            self._asked.add(name)

            def done(h: dict | None, _p: list, err: RemoteError | None, name: str = name) -> None:
                self._asked.discard(name)
                up = err is None and h is not None and h.get("node") == name
                stopping = up and h.get("stopping") is True  # type: ignore[union-attr]
                if self.node_stopping.get(name, False) != stopping:
                    self.node_stopping = {**self.node_stopping, name: stopping}
                    if stopping:
                        log.info("%s (%s) is stopping: nothing new is sent to it", name, self._peers[name].role)
                restarted = self._restarted(name, h) if up else None
                if restarted is not None and self.node_up.get(name):
                    # down and up again between two PINGs: told, but node_up stays (it is up
                    # now, and the agent's readers on other threads would see a moment "down")
                    log.warning("%s (%s) %s", name, self._peers[name].role, restarted)
                    self._publish(name, False, restarted)
                    self._publish(name, True)
                self._set(name, up)
            client.request(P.PING, {}, callback=done, timeout_ms=PING_TIMEOUT_MS)

    def _restarted(self, name: str, h: dict) -> str | None:
        """Why the process answering for ``name`` is not the one that answered last (another
        pid, or its uptime gone back: a pid can be reused), or None. It remembers this answer."""
        pid, uptime_ms = h.get("pid"), h.get("uptime_ms")
        if not isinstance(pid, int) or not isinstance(uptime_ms, int):
            return None  # nothing to tell processes apart by: judged by answering alone
        last = self._process.get(name)
        self._process[name] = (pid, uptime_ms)
        if last is None:
            return None
        if pid != last[0]:
            return f"restarted: process {last[0]} replaced by {pid} between two PINGs"
        if uptime_ms < last[1]:
            return f"restarted: process {pid} is up {uptime_ms} ms, {last[1]} ms at the PING before"
        return None

    def _set(self, name: str, up: bool) -> None:
        if self.node_up.get(name) == up:
            return
        self.node_up = {**self.node_up, name: up}
        self._publish(name, up)
        if not up:
            log.warning("%s (%s) does not answer PING", name, self._peers[name].role)

    def _publish(self, name: str, up: bool, reason: str = "") -> None:
        role = self._peers[name].role
        event: dict[str, Any] = {"type": "node", "node": name, "role": role, "state": "up" if up else "down",
                                 "ts_ms": self.clock.wall_ms()}
        if name in self._published:
            event["previous"] = "up" if self._published[name] else "down"
        self._published[name] = up
        if reason:
            event["reason"] = reason
        # kept for a reload (GET /gateway/events) when the page shows it live: the monitor's
        # node states stand for every other node while it reports
        self.hub.publish(event, keep=role == "monitor" or not self.hub.monitor_reports())

    def stop(self) -> None:
        self.reactor.stop()
        self._thread.join(timeout=5)
        self.relay.close()
