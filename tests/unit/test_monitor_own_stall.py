"""The monitor paused itself (SIGSTOP, swapped out, starved of CPU) for longer than
``monitor.unresponsive_after_ms``: when it ran again it judged every node silent for the whole
pause -- the heartbeats it had not read -- and asked the supervisor to restart every node of the
cluster at once, all of a partition's replicas together. What a monitor did not hear while it
did not run says nothing of the nodes: their silence counts from its return, so a node that
stays silent after it is still found out. The Monitor's own classes on a ManualClock; no node
process is started (this test process stands in for every node: alive)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fabric.clock import ManualClock
from fabric.config import load_config
from nodes.local_cluster import make_config
from nodes.monitor import Monitor
from nodes.monitor import health as H

UNRESPONSIVE_AFTER_MS = 2000
HEALTH_INTERVAL_MS = 100
ALIVE = os.getpid()


def _check(monitor: Monitor, silent: tuple[str, ...] = ()) -> None:
    """One check after a health interval in which every node but ``silent`` was heard."""
    monitor.clock.advance(HEALTH_INTERVAL_MS)  # type: ignore[attr-defined]
    for name, view in monitor.views.items():
        if name not in silent:
            view.heard(monitor.clock.now_ms(), ALIVE)
            view.stats_failed, view.stats_rtt_ms = False, 3
    monitor._check()


@contextmanager
def healthy_monitor(tmp_path: Path, brokers: int) -> Iterator[Monitor]:
    """A Monitor on a ManualClock (checks run by hand) that has judged every node healthy."""
    cfg = load_config(make_config(tmp_path, brokers, extra_nodes=("monitor",), overrides={"monitor": {
        "unresponsive_after_ms": UNRESPONSIVE_AFTER_MS, "health_interval_ms": HEALTH_INTERVAL_MS}}), environ={})
    monitor = Monitor(cfg, "monitor", clock=ManualClock(0))
    try:
        for _ in range(5):
            _check(monitor)
        yield monitor
    finally:
        monitor.close()


def test_a_monitor_back_from_a_pause_restarts_nothing_and_still_finds_a_hung_node(tmp_path: Path) -> None:
    with healthy_monitor(tmp_path, 3) as monitor:
        assert {v.state for v in monitor.views.values()} == {H.HEALTHY}, {v.name: v.reason for v in monitor.views.values()}

        monitor.clock.advance(3 * UNRESPONSIVE_AFTER_MS)  # type: ignore[attr-defined]  # no check ran, nothing was read
        monitor._check()
        judged = {v.name: (v.state, v.reason) for v in monitor.views.values() if v.state in (H.UNRESPONSIVE, H.DOWN)}
        assert not judged, f"judged after the monitor's own pause: {judged}"
        recovery = [e for e in monitor.events if e["kind"] == "recovery"]
        assert not recovery, recovery
        assert monitor.stats()["stalls"] == 1

        # a node silent from then on is judged unresponsive once the window has passed
        for _ in range(UNRESPONSIVE_AFTER_MS // HEALTH_INTERVAL_MS + 2):
            _check(monitor, silent=("broker-2",))
        assert monitor.views["broker-2"].state == H.UNRESPONSIVE, monitor.views["broker-2"].reason
        assert {v.state for n, v in monitor.views.items() if n != "broker-2"} == {H.HEALTHY}


def test_a_monitor_that_pauses_again_and_again_still_finds_a_hung_node(tmp_path: Path) -> None:
    """Only the paused time is forgiven: the silence heard between pauses adds up (counting
    every silence from the last return instead, a monitor pausing more often than once a window
    never found a hung node)."""
    with healthy_monitor(tmp_path, 1) as monitor:
        states = []
        for _ in range(4):  # 1 s listened to (broker-1 silent), then a 3 s pause: 4 s of heard silence
            for _ in range(1000 // HEALTH_INTERVAL_MS):
                _check(monitor, silent=("broker-1",))
            states.append(monitor.views["broker-1"].state)
            monitor.clock.advance(3000)  # type: ignore[attr-defined]
        assert H.UNRESPONSIVE in states, (states, monitor.views["broker-1"].reason)
        assert monitor.stats()["stalls"] >= 3
