"""The monitor's health changes of one node form a chain: each event's ``previous`` is the
state the event before it gave. A broker killed and restarted by the supervisor was published
``healthy → down``, ``down → unknown`` (its new process not heard yet), ``unknown → degraded``
and ``degraded → healthy``; the dashboard leaves a change from ``unknown`` out (a first
verdict), so its timeline read "down → unknown" then "degraded → healthy" with no step
between. ``unknown`` is the monitor's own first wait; a new process of a node it has judged
before is down until it is heard. Through the real Monitor, its clock in the test's hands."""

from __future__ import annotations

import os
from pathlib import Path

from fabric.clock import ManualClock
from fabric.config import load_config
from nodes.local_cluster import make_config
from nodes.monitor import Monitor
from nodes.monitor import health as H


def _changes(monitor: Monitor, node: str) -> list[tuple[str, str]]:
    return [(e["previous"], e["state"]) for e in monitor.events if e.get("kind") == "health" and e["node"] == node]


def test_a_restarted_node_goes_from_down_to_its_next_state_with_no_unknown_between(tmp_path: Path) -> None:
    clock = ManualClock(start_ms=1_000)
    monitor = Monitor(load_config(make_config(tmp_path, 1, extra_nodes=("monitor",)), environ={}), "monitor",
                      clock=clock)
    try:
        old, new = os.getpid(), os.getppid()   # both run: judged by what the monitor heard, not by a dead pid
        for view in monitor.views.values():
            view.heard(clock.now_ms(), old)
        monitor._check()
        view = monitor.views["broker-1"]
        assert view.state == H.HEALTHY
        view.exited_pid, view.exit_reason = old, "killed by SIGKILL"   # the supervisor saw it exit ...
        clock.advance(100)
        monitor._check()
        assert view.state == H.DOWN
        view.new_process(new, clock.now_ms())                          # ... and started it again
        clock.advance(100)
        monitor._check()
        assert view.state == H.DOWN, f"a new process not heard yet: {view.state} ({view.reason})"
        assert str(new) in view.reason, view.reason
        clock.advance(100)
        view.heard(clock.now_ms(), new)
        monitor._check()
        assert view.state == H.HEALTHY
        changes = _changes(monitor, "broker-1")
        assert changes == [("unknown", "healthy"), ("healthy", "down"), ("down", "healthy")], changes
        assert all(prev == before[1] for before, (prev, _) in zip(changes, changes[1:])), changes
    finally:
        monitor.close()


def test_a_freshly_started_monitor_still_waits_in_unknown(tmp_path: Path) -> None:
    """No verdict yet: a process the supervisor's log names is not judged down before it is heard
    (that fired node_down for every node a new monitor had not heard yet)."""
    clock = ManualClock(start_ms=1_000)
    monitor = Monitor(load_config(make_config(tmp_path, 1, extra_nodes=("monitor",)), environ={}), "monitor",
                      clock=clock)
    try:
        view = monitor.views["broker-1"]
        view.new_process(os.getpid(), clock.now_ms())
        clock.advance(100)
        monitor._check()
        assert view.state == H.UNKNOWN, view.reason
    finally:
        monitor.close()
