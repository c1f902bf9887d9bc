"""Recovery: the monitor's side of the supervisor's control socket (nodes/launcher.py).

Once per check the monitor asks the supervisor for its children (pid, state, restarts) and
the events since the last ones it took (exits, restarts, give-ups); each becomes a monitor
event with its reason. A node the supervisor saw exit is down at once, before its silence
would tell. A node that is unresponsive is restarted through the supervisor (SIGKILL, then a
new process) at most once per ``monitor.restart_backoff_ms``. A node no supervisor runs
(``loom up --node``, another host) is reported, never killed.

Not thread-safe: owned by the monitor's reactor.
"""

from __future__ import annotations

from typing import Callable, Mapping

import zmq

from fabric import protocol as P
from fabric.config import LoomConfig
from fabric.errors import RemoteError
from fabric.reactor import Reactor
from fabric.rpc import RpcClient
from nodes.control import control_endpoint
from nodes.monitor import health as H

STATUS_TIMEOUT_MS = 1000
RESTART_TIMEOUT_MS = 10_000


class Recovery:
    def __init__(self, ctx: zmq.Context, reactor: Reactor, config: LoomConfig, name: str,
                 emit: Callable[[dict], dict], saved_events: list[dict]) -> None:
        """``emit(event)`` records and publishes a monitor event; ``saved_events`` are the
        events kept from before a restart (supervisor events already taken are not re-taken)."""
        self.config = config
        self.clock = reactor.clock
        self.emit = emit
        self.client = RpcClient(ctx, reactor, control_endpoint(config), identity=name)
        self.available = False
        self.children: dict[str, dict] = {}
        self.given_up: dict[str, str] | None = None
        self._in_flight = False
        self._instance = ""
        self._seq = 0
        # per supervisor instance, the last of its events already recorded (before a restart)
        self._taken_upto: dict[str, int] = {}
        for e in saved_events:
            if isinstance(e.get("sup_seq"), int) and isinstance(e.get("sup_instance"), str):
                self._taken_upto[e["sup_instance"]] = max(self._taken_upto.get(e["sup_instance"], 0), e["sup_seq"])
        self._not_restarted_ms: dict[str, int] = {}

    def supervises(self, node: str) -> bool:
        return self.available and node in self.children

    def restarts(self, node: str) -> int:
        """How many times the supervisor restarted ``node`` (a crash, a kill the monitor asked
        for, a hung monitor its watch replaced), as its last status said; 0 when not known.
        The monitor's own count comes from here: no view of the monitor holds it."""
        n = self.children.get(node, {}).get("restarts")
        return n if isinstance(n, int) else 0

    def poll(self, views: Mapping[str, H.NodeView]) -> None:
        if self._in_flight:
            return
        self._in_flight = True

        def done(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            self._in_flight = False
            if header is None or not isinstance(header.get("children"), dict):
                self.available, self.given_up = False, None
                return
            self.available = True
            self.children = header["children"]
            self.given_up = {n: c.get("reason", "") for n, c in self.children.items() if c.get("state") == "given_up"}
            if header.get("instance") != self._instance:
                self._instance, self._seq = header.get("instance", ""), 0
            for ev in header.get("events") or ():
                self._take(ev, views)
            for n, c in self.children.items():
                view = views.get(n)
                if view is None:
                    continue
                if isinstance(c.get("restarts"), int):
                    view.restarts = c["restarts"]
                if isinstance(c.get("pid"), int) and view.last_heard_ms is None:  # before its first heartbeat
                    view.pid = c["pid"]  # the running process, not one an old 'exited' event named
        self.client.request(P.SUPERVISOR_STATUS, {"since_seq": self._seq}, callback=done, timeout_ms=STATUS_TIMEOUT_MS)

    def _take(self, ev: dict, views: Mapping[str, H.NodeView]) -> None:
        if not isinstance(ev, dict) or not isinstance(ev.get("seq"), int):
            return
        self._seq = max(self._seq, ev["seq"])
        view = views.get(ev.get("node"))  # type: ignore[arg-type]
        if ev.get("action") == "exited" and view is not None and isinstance(ev.get("pid"), int):
            view.exited_pid, view.exit_reason = ev["pid"], str(ev.get("reason", ""))
            if view.pid is None:
                view.pid = ev["pid"]
        if ev.get("action") in ("restarted", "started") and view is not None and isinstance(ev.get("pid"), int) \
                and view.pid in (None, ev.get("old_pid"), view.exited_pid):
            view.new_process(ev["pid"], self.clock.now_ms())  # started in place of the one we knew
        if ev["seq"] <= self._taken_upto.get(self._instance, 0):
            return
        self._taken_upto = {self._instance: ev["seq"]}  # older instances' events never come back
        fields = {k: v for k, v in ev.items() if k not in ("seq", "ts_ms")}
        self.emit({"kind": "recovery", "source": "supervisor", **fields, "sup_instance": self._instance,
                   "sup_seq": ev["seq"], "sup_ts_ms": ev.get("ts_ms")})

    def act(self, views: Mapping[str, H.NodeView], now_ms: int) -> None:
        """Ask the supervisor to restart every unresponsive node it runs (with backoff)."""
        mon = self.config.monitor
        for v in views.values():
            if v.state != H.UNRESPONSIVE:
                continue
            last = v.last_restart_request_ms
            if last is not None and now_ms - last < mon.restart_backoff_ms:
                continue
            if not mon.restart_unresponsive or not self.supervises(v.name):
                if now_ms - self._not_restarted_ms.get(v.name, -mon.restart_backoff_ms) >= mon.restart_backoff_ms:
                    self._not_restarted_ms[v.name] = now_ms
                    why = "restart_unresponsive is off" if not mon.restart_unresponsive else "no supervisor runs it"
                    self.emit({"kind": "recovery", "source": "monitor", "action": "not_restarted", "node": v.name,
                               "reason": f"{v.reason}; {why}: reported only"})
                continue
            v.last_restart_request_ms = now_ms
            self._request_restart(v)

    def _request_restart(self, v: H.NodeView) -> None:
        reason = f"unresponsive: {v.reason}"
        self.emit({"kind": "recovery", "source": "monitor", "action": "restart_requested", "node": v.name,
                   "pid": v.pid, "reason": reason})

        def done(header: dict | None, payloads: list, err: RemoteError | None) -> None:
            if err is not None:
                self.emit({"kind": "recovery", "source": "monitor", "action": "restart_failed", "node": v.name,
                           "reason": f"the supervisor refused or did not answer: {err}"})
        self.client.request(P.SUPERVISOR_RESTART, {"node": v.name, "reason": reason, "pid": v.pid}, callback=done,
                            timeout_ms=RESTART_TIMEOUT_MS)

    def close(self) -> None:
        self.client.close()
