"""A node's health "since" (``loom status``, the dashboard's "since 28 min ago") across the
monitor's own restart: the new monitor said every node had been healthy since its own start,
as if the whole cluster had just recovered. Health changes are kept with the events the monitor
saves, and a node judged as the saved state said keeps that state's time. Through the real
Monitor, a process killed and started again on the same data dir."""

from __future__ import annotations

import os
from pathlib import Path

from fabric.clock import ManualClock
from fabric.config import load_config
from nodes.local_cluster import make_config
from nodes.monitor import Monitor


def _judged(config_path: Path, clock: ManualClock) -> dict[str, dict]:
    """One monitor's first check with every node heard from; its status rows by node."""
    monitor = Monitor(load_config(config_path, environ={}), "monitor", clock=clock)
    try:
        for view in monitor.views.values():
            view.heard(clock.now_ms(), os.getpid())
        monitor._check()
        return {n["node"]: n for n in monitor.status()["nodes"]}
    finally:
        monitor.close()


def test_a_restarted_monitor_keeps_when_a_node_became_what_it_still_is(tmp_path: Path) -> None:
    config_path = Path(make_config(tmp_path, 1, extra_nodes=("monitor",)))
    clock = ManualClock(start_ms=1_000)
    first = _judged(config_path, clock)
    healthy_since = first["broker-1"]["since_ms"]
    assert first["broker-1"]["state"] == "healthy"
    clock.advance(600_000)                  # ten minutes on, the monitor is killed and started again
    again = _judged(config_path, clock)
    assert again["broker-1"]["state"] == "healthy"
    assert again["broker-1"]["since_ms"] == healthy_since, "the new monitor's start, not the node's change"
    assert again["coordinator"]["since_ms"] == first["coordinator"]["since_ms"]
    clock.advance(600_000)                  # and again: the second monitor's first verdict was no change
    third = _judged(config_path, clock)
    assert third["broker-1"]["since_ms"] == healthy_since, "the second monitor's start, not the node's change"


def test_the_monitor_says_since_when_it_has_been_healthy_itself(tmp_path: Path) -> None:
    """Every node's card said "since …" but the monitor's own (its row's since_ms was 0): it is
    healthy since it started."""
    clock = ManualClock(start_ms=1_000)
    started_wall_ms = clock.wall_ms()
    clock.advance(5_000)
    rows = _judged(Path(make_config(tmp_path, 1, extra_nodes=("monitor",))), clock)
    assert rows["monitor"]["state"] == "healthy" and rows["monitor"]["since_ms"] == started_wall_ms + 5_000
