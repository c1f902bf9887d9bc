"""The supervisor's control socket: a ROUTER on ``ipc://<data_dir>/supervisor.sock`` (a file
under the data dir, so only processes on this host that may open it can ask), serving

    SUPERVISOR_STATUS  {since_seq}              -> {instance, children: {name: {pid, state,
                                                    restarts, reason}}, events: [...], seq}
    SUPERVISOR_RESTART {node, reason, pid?, by?} -> {node, pid}  (SIGKILL, then a new process;
                                                    ``by``: who asks, "the monitor" unless said)
    SUPERVISOR_START   {node, reason?}          -> {node, pid}   (a node that does not run: given
                                                    up on, stopped, or in its restart backoff)

and the supervisor's event log (exits, restarts, give-ups, each with a reason), bounded by
``EVENTS_MAX``. ``instance`` changes with every supervisor, so a reader knows when the
sequence numbers started over.

Not thread-safe: served from the supervisor's own loop (``serve``), which owns the reactor.
"""

from __future__ import annotations

import os
import time
from collections import deque
from pathlib import Path
from typing import Callable

from fabric import protocol as P
from fabric import wire
from fabric.config import LoomConfig
from fabric.errors import RemoteError
from fabric.reactor import Reactor
from fabric.rpc import RpcServer
from fabric.zmq_context import context as zmq_context

SOCKET_NAME = "supervisor.sock"
EVENTS_REPLY_MAX = 500


def control_path(data_dir: str | Path) -> Path:
    return Path(data_dir).resolve() / SOCKET_NAME


def control_endpoint(config: LoomConfig) -> str:
    """The supervisor's control socket: local to this host by construction."""
    return f"ipc://{control_path(config.cluster.data_dir)}"


class EventLog:
    """Numbered events with wall-clock times; the oldest are dropped past ``EVENTS_MAX``."""

    def __init__(self) -> None:
        self.instance = os.urandom(4).hex()
        self.events: deque[dict] = deque(maxlen=P.EVENTS_MAX)
        self.seq = 0

    def add(self, action: str, node: str, reason: str, **fields: object) -> dict:
        self.seq += 1
        event = {"seq": self.seq, "ts_ms": time.time_ns() // 1_000_000, "action": action, "node": node,
                 "reason": reason, **fields}
        self.events.append(event)
        return event

    def since(self, seq: int) -> list[dict]:
        return [e for e in self.events if e["seq"] > seq][:EVENTS_REPLY_MAX]


class ControlServer:
    def __init__(self, data_dir: str | Path, log: EventLog, children: Callable[[], dict[str, dict]],
                 restart: Callable[[str, str, int | None], int], start: Callable[[str, str], int]) -> None:
        """``children()`` describes every child; ``restart(node, reason, pid)`` restarts one and
        ``start(node, reason)`` starts one that does not run, each returning its new pid (raises
        RemoteError when it cannot)."""
        self.path = control_path(data_dir)
        self.log = log
        self.children = children
        self.restart = restart
        self.start = start
        self.reactor = Reactor(contain_handler_errors=True)
        self.path.unlink(missing_ok=True)  # left by a supervisor that was killed
        self.server = RpcServer(zmq_context(), self.reactor, f"ipc://{self.path}")
        os.chmod(self.path, 0o600)
        self.server.route(P.SUPERVISOR_STATUS, self._on_status)
        self.server.route(P.SUPERVISOR_RESTART, self._on_restart)
        self.server.route(P.SUPERVISOR_START, self._on_start)

    def serve(self, timeout_ms: int) -> None:
        """Answer requests for up to ``timeout_ms`` (the supervisor's loop interval)."""
        self.reactor.run_once(timeout_ms)

    def _on_status(self, req: wire.Request) -> dict:
        since = req.get("since_seq", int, 0)
        return {"instance": self.log.instance, "children": self.children(), "events": self.log.since(since),
                "seq": self.log.seq}

    def _on_restart(self, req: wire.Request) -> dict:
        node = req.get("node", str)
        reason = req.get("reason", str, "")
        pid = req.get("pid", int, None)
        by = req.get("by", str, "the monitor")
        return {"node": node, "pid": self.restart(node, f"requested by {by}: {reason}" if reason else
                                                  "requested over the control socket", pid)}

    def _on_start(self, req: wire.Request) -> dict:
        node = req.get("node", str)
        return {"node": node, "pid": self.start(node, req.get("reason", str, "") or "requested over the control socket")}

    def close(self) -> None:
        self.server.close()
        self.path.unlink(missing_ok=True)


__all__ = ["ControlServer", "EventLog", "RemoteError", "control_endpoint", "control_path"]
