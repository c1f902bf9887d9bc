"""Events for ``/ws/events``: node health, metrics and alerts, fanned out to every client.

``EventHub`` is the interface a feeder uses: anything that learns of an event calls
``publish(event)``; today that is the gateway's health watcher (node health from PINGs and the
coordinator's metadata), and the monitor's relay (nodes/gateway/monitor_link.py: the monitor's
health, alert and recovery events and its cluster status, ``type: "status"``). Each event is a JSON-able dict with ``type`` (``node``, ``metrics``,
``alert``...) and ``ts_ms``. Events whose ``type`` is in ``STATE_TYPES`` also update a snapshot
keyed by ``(type, key)`` that a new client receives first.

A feeder may also ask the hub to ``keep`` an event: the last ``RECENT_EVENTS_MAX`` kept are read
back by ``recent`` (``GET /gateway/events``), so that the dashboard's timeline shows them again
after a reload -- the monitor keeps its own events, the gateway's watcher had only the stream.

Every subscriber has a bounded queue; a subscriber that falls behind is marked ``overflowed``
(its queue stops growing) and its WebSocket is closed by the route, so a slow client never
grows the gateway's memory.

Thread-safe: ``publish`` and ``subscribe`` from any thread.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Callable, Protocol

SUBSCRIBERS_MAX = 256
EVENTS_QUEUE_MAX = 1000           # live events waiting for one subscriber
SNAPSHOT_KEYS_MAX = 10_000
STATE_TYPES = {"node": "node", "alert": "name", "status": "type"}  # type -> field that keys its snapshot
MONITOR_STATUS_FRESH_S = 3.0      # the monitor's status comes once per check (1 s): older, it is silent
RECENT_EVENTS_MAX = 500           # events kept for GET /gateway/events (the dashboard's timeline keeps as many)


class EventSink(Protocol):
    """What a feeder of events needs (the monitor's bridge will implement against this)."""

    def publish(self, event: dict[str, Any]) -> None: ...


class Subscription:
    def __init__(self, hub: "EventHub", queue_max: int) -> None:
        self._hub = hub
        self._queue: deque[dict] = deque()
        self._queue_max = queue_max
        self._cond = threading.Condition()
        self.overflowed = False
        self.closed = False

    def push(self, event: dict) -> None:
        with self._cond:
            if len(self._queue) >= self._queue_max:
                self.overflowed = True
            else:
                self._queue.append(event)
            self._cond.notify()

    def get(self, timeout_s: float) -> dict | None:
        """The next event, or None after timeout_s (or when closed or overflowed)."""
        with self._cond:
            if not self._queue and not self.closed and not self.overflowed:
                self._cond.wait(timeout_s)
            return self._queue.popleft() if self._queue else None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify()
        self._hub._remove(self)


class EventHub:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock                   # seconds, monotonic
        self._lock = threading.Lock()
        self._subs: list[Subscription] = []
        self._state: dict[tuple[str, str], dict] = {}
        self._status_at_s: float | None = None  # when the monitor's last status came
        self._recent: deque[dict] = deque(maxlen=RECENT_EVENTS_MAX)

    def publish(self, event: dict[str, Any], keep: bool = False) -> None:
        """Send ``event`` to every subscriber; ``keep``: also to the ones ``recent`` gives back."""
        key_field = STATE_TYPES.get(event.get("type", ""))
        with self._lock:
            if keep:
                self._recent.append(event)
            if key_field is not None and (len(self._state) < SNAPSHOT_KEYS_MAX or
                                          (event["type"], str(event.get(key_field))) in self._state):
                self._state[(event["type"], str(event.get(key_field)))] = event
            if event.get("type") == "status":
                self._status_at_s = self._clock()
            subs = list(self._subs)
        for s in subs:
            s.push(event)

    def recent(self) -> list[dict]:
        """The events published with ``keep``, oldest first (at most ``RECENT_EVENTS_MAX``)."""
        with self._lock:
            return list(self._recent)

    def monitor_reports(self) -> bool:
        """Whether the monitor's status came within ``MONITOR_STATUS_FRESH_S``: its node states
        stand then (``node_states``), and the dashboard shows the watcher's only for the monitor."""
        with self._lock:
            return self._status_at_s is not None and self._clock() - self._status_at_s < MONITOR_STATUS_FRESH_S

    def snapshot(self) -> list[dict]:
        with self._lock:
            return list(self._state.values())

    def subscribe(self, queue_max: int) -> Subscription | None:
        """A new subscription that starts with the snapshot; None when SUBSCRIBERS_MAX are open."""
        with self._lock:
            if len(self._subs) >= SUBSCRIBERS_MAX:
                return None
            snapshot = list(self._state.values())  # at most SNAPSHOT_KEYS_MAX, never cut short
            sub = Subscription(self, queue_max + len(snapshot))
            for event in snapshot:
                sub.push(event)
            self._subs.append(sub)
        return sub

    def _remove(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def node_states(self) -> dict[str, str]:
        """Each node's latest state. While the monitor's status comes, the states it gives stand
        (but "unknown": no verdict yet): the gateway's watcher takes a node for down after one
        PING unanswered, and the last event of either source won -- a paused node went down,
        degraded (serving), up. Its own events count for the rest, and all once it is silent."""
        with self._lock:
            states = {k[1]: e.get("state", "unknown") for k, e in self._state.items() if k[0] == "node"}
            status = self._state.get(("status", "status"))
            if status is None or self._status_at_s is None or self._clock() - self._status_at_s >= MONITOR_STATUS_FRESH_S:
                return states
            for n in status.get("nodes") or ():
                if isinstance(n, dict) and isinstance(n.get("node"), str) and n.get("state") not in (None, "unknown"):
                    states[n["node"]] = str(n["state"])
            return states
