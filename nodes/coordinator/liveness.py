"""Fast crash detection: a broker whose TCP connection to us closed and that then stays silent
for a short grace period is dead, without waiting out the whole session timeout.

A crashed process (SIGKILL, OOM, a failed host with RST) closes its sockets at once; a paused or
partitioned one does not, and is still caught by the session timeout. The coordinator's SUB
socket, connected to every broker's PUB endpoint, reports disconnects through a ZeroMQ socket
monitor. Any heartbeat after the disconnect clears it (a reconnect, not a crash).

Not thread-safe: owned by the coordinator's reactor.
"""

from __future__ import annotations

import logging
import struct

import zmq
from zmq.utils.monitor import parse_monitor_message

from fabric.reactor import Reactor

log = logging.getLogger(__name__)

DISCONNECT_GRACE_HEARTBEATS = 2  # silence after a disconnect, in heartbeat intervals


class DisconnectWatch:
    def __init__(self, sub: zmq.Socket, reactor: Reactor, endpoints: dict[str, int], heartbeat_interval_ms: int) -> None:
        """``endpoints``: broker PUB endpoint (tcp://host:port) -> broker id."""
        self.endpoints = endpoints
        self.sub = sub
        self.grace_ms = DISCONNECT_GRACE_HEARTBEATS * heartbeat_interval_ms
        self.reactor = reactor
        self.disconnected_ms: dict[int, int] = {}
        self.monitor = sub.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        reactor.add_socket(self.monitor, self._on_event)

    def _on_event(self, frames: list[bytes]) -> None:
        try:
            event = parse_monitor_message(frames)
        except (RuntimeError, struct.error) as e:  # what pyzmq raises for an event it cannot read
            log.debug("socket event not readable: %s", e)
            return
        endpoint = event.get("endpoint", b"")
        bid = self.endpoints.get(endpoint.decode() if isinstance(endpoint, bytes) else str(endpoint))
        log.debug("socket event %s on %s (broker %s)", event.get("event"), endpoint, bid)
        if bid is not None and event.get("event") == zmq.EVENT_DISCONNECTED:
            self.disconnected_ms.setdefault(bid, self.reactor.clock.now_ms())

    def heard(self, bid: int) -> None:
        """A heartbeat arrived: whatever disconnect we saw was a reconnect."""
        self.disconnected_ms.pop(bid, None)

    def crashed(self, bid: int, now_ms: int) -> bool:
        since = self.disconnected_ms.get(bid)
        return since is not None and now_ms - since >= self.grace_ms

    def forget(self, bid: int) -> None:
        self.disconnected_ms.pop(bid, None)

    def close(self) -> None:
        self.reactor.remove_socket(self.monitor)
        self.sub.disable_monitor()
        self.monitor.close(0)
