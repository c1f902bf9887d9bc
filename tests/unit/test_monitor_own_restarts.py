"""The monitor's own row of ``loom status`` (and its ``loom_node_restarts_total``): the
supervisor counts the monitor's restarts as any node's (a crash, or a hung monitor its watch
killed and replaced), but the monitor showed itself with 0 restarts whatever the supervisor
said. Through the real Monitor, its Recovery fed the supervisor's SUPERVISOR_STATUS answer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from fabric.config import load_config
from nodes.local_cluster import make_config
from nodes.monitor import Monitor


def _supervisor_answers(monitor: Monitor, children: dict[str, dict]) -> None:
    sent: list[Any] = []
    monitor.recovery.client.request = (  # type: ignore[method-assign]
        lambda cmd, header, *a, callback, timeout_ms: sent.append(callback))
    monitor.recovery.poll(monitor.views)
    (callback,) = sent
    callback({"instance": "sup1", "seq": 0, "children": children, "events": []}, [], None)


def test_the_monitor_shows_the_restarts_the_supervisor_counted_for_it(tmp_path: Path) -> None:
    monitor = Monitor(load_config(make_config(tmp_path, 1, extra_nodes=("monitor",)), environ={}), "monitor")
    try:
        _supervisor_answers(monitor, {
            "broker-1": {"pid": os.getpid(), "state": "running", "restarts": 1, "reason": ""},
            "monitor": {"pid": os.getpid(), "state": "running", "restarts": 2, "reason": ""}})
        rows = {n["node"]: n for n in monitor.status()["nodes"]}
        assert rows["broker-1"]["restarts"] == 1
        assert rows["monitor"]["restarts"] == 2, "the supervisor replaced the monitor twice; it shows 0"
        exposition = {name: samples for name, samples in monitor._build_exposition().per_node}
        restarts = [s.value for s in exposition["monitor"] if s.name == "loom_node_restarts_total"]
        assert restarts == [2]
    finally:
        monitor.close()
