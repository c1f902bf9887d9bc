"""Alerts: rule conditions in, alert states out (pending -> firing -> resolved), with a history
that survives a monitor restart (``alerts.json`` under the monitor's data dir).

Each evaluation hands ``AlertBook.evaluate`` the conditions that hold now, keyed by (rule,
subject) -- subject is a node, a group, a topic or "cluster" -- for the rules it could judge
this round. A new condition is pending; after the rule's ``for_ms`` it fires; a firing alert
whose condition is gone is resolved; a pending one is dropped. Alerts of rules not judged this
round (a monitor that has just started and has not heard from the nodes yet) keep their state.

Not thread-safe: owned by the monitor's reactor. The file is written (atomically) only when
an alert fires or resolves.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

from engines.api import EngineError
from engines.durable import replace_file
from fabric import protocol as P

log = logging.getLogger(__name__)

PENDING = "pending"
FIRING = "firing"
RESOLVED = "resolved"
ALERTS_FILE_NAME = "alerts.json"


@dataclass
class Alert:
    rule: str
    subject: str
    state: str
    message: str
    value: float | None
    started_ms: int             # wall ms the condition was first seen
    fired_ms: int | None = None
    resolved_ms: int | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.rule, self.subject

    def to_dict(self) -> dict:
        return asdict(self)


Condition = tuple[str, float | None]  # message, value


class AlertBook:
    def __init__(self, directory: Path, for_ms: Callable[[str], int], on_change: Callable[[Alert], None]) -> None:
        """``for_ms(rule)``: how long a rule's condition must hold; ``on_change(alert)`` is
        called when an alert fires or resolves."""
        self.path = directory / ALERTS_FILE_NAME
        self.for_ms = for_ms
        self.on_change = on_change
        self.active: dict[tuple[str, str], Alert] = {}
        self.history: deque[Alert] = deque(maxlen=P.ALERT_HISTORY_MAX)
        self.saved_events: list[dict] = []
        self._pending_since: dict[tuple[str, str], int] = {}  # monotonic, for for_ms
        self._load()

    def _load(self) -> None:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.error("cannot read %s (%s): starting with no alert history", self.path, e)
            return
        for item in raw.get("alerts", []):
            try:
                a = Alert(**item)
            except TypeError:
                continue
            if a.state == FIRING:
                self.active[a.key] = a
            elif a.state == RESOLVED:
                self.history.append(a)
        self.saved_events = [e for e in raw.get("events", []) if isinstance(e, dict)][-P.EVENTS_MAX:]

    def save(self, events: list[dict]) -> None:
        """Write firing and resolved alerts and ``events`` (``engines.durable.replace_file``:
        atomically and durably). Raises nothing: a failed write is logged."""
        alerts = [a.to_dict() for a in self.history] + [a.to_dict() for a in self.active.values() if a.state == FIRING]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            replace_file(self.path, json.dumps({"alerts": alerts, "events": events[-P.EVENTS_MAX:]}).encode())
        except (OSError, EngineError) as e:
            log.error("cannot write %s: %s (alert history kept in memory)", self.path, e)

    def evaluate(self, conditions: dict[tuple[str, str], Condition], judged_rules: set[str], now_wall_ms: int,
                 now_ms: int | None = None) -> bool:
        """Apply one round of conditions; returns True when an alert fired or resolved.
        ``now_ms``: a monotonic clock for ``for_ms`` (the wall clock when None)."""
        changed = False
        mono = now_wall_ms if now_ms is None else now_ms
        for key, (message, value) in conditions.items():
            a = self.active.get(key)
            if a is None:
                a = self.active[key] = Alert(key[0], key[1], PENDING, message, value, now_wall_ms)
                self._pending_since[key] = mono
            a.message, a.value = message, value
            if a.state == PENDING and mono - self._pending_since.setdefault(key, mono) >= self.for_ms(a.rule):
                a.state, a.fired_ms = FIRING, now_wall_ms
                changed = True
                self.on_change(a)
        for key in [k for k in self.active if k not in conditions and k[0] in judged_rules]:
            a = self.active.pop(key)
            self._pending_since.pop(key, None)
            if a.state == FIRING:
                a.state, a.resolved_ms = RESOLVED, now_wall_ms
                self.history.append(a)
                changed = True
                self.on_change(a)
        return changed

    def firing(self) -> list[Alert]:
        return [a for a in self.active.values() if a.state == FIRING]

    def listing(self, include_resolved: bool) -> list[dict]:
        """Firing and pending alerts, then (optionally) resolved ones, newest first."""
        out = sorted((a.to_dict() for a in self.active.values()), key=lambda d: -d["started_ms"])
        if include_resolved:
            out += [a.to_dict() for a in reversed(self.history)]
        return out
