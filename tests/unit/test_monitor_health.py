"""The monitor's health judgement of one node (nodes/monitor/health.py)."""

from __future__ import annotations

from pathlib import Path

from fabric import metrics as M
from nodes.monitor import health as H
from tests.unit.fakes import small_cluster_config


def test_health_states(tmp_path: Path) -> None:
    cfg = small_cluster_config(tmp_path, liveness={"heartbeat_interval_ms": 100, "session_timeout_ms": 1000},
                  monitor={"health_interval_ms": 100, "unresponsive_after_ms": 2000})
    view = H.NodeView("broker-1", cfg.node("broker-1"))
    assert H.classify(view, 100, 0, cfg, None)[0] == H.UNKNOWN
    view.heard(1000, 4242)
    assert H.classify(view, 1100, 0, cfg, True)[0] == H.HEALTHY
    assert H.classify(view, 1500, 0, cfg, True)[0] == H.HEALTHY          # a short silence is not judged
    assert H.classify(view, 1500, 0, cfg, False)[0] == H.DOWN            # ... unless the process is gone
    assert H.classify(view, 1100, 0, cfg, False) == (H.DOWN, "process 4242 is not running")  # at once
    state, reason = H.classify(view, 3100, 0, cfg, True)
    assert state == H.UNRESPONSIVE and "4242" in reason
    assert H.classify(view, 3100, 0, cfg, None)[0] == H.DOWN             # cannot look at the process
    view.exited_pid, view.exit_reason = 4242, "killed by SIGKILL"
    assert H.classify(view, 1100, 0, cfg, True) == (H.DOWN, "process 4242 exited (killed by SIGKILL)")
    view.heard(1200, 5000)                                                # the new process speaks
    assert H.classify(view, 1200, 0, cfg, True)[0] == H.HEALTHY
    view.samples = (M.Sample("loom_broker_disk_used_ratio", (), 0.95),)
    assert H.classify(view, 1200, 0, cfg, True) == (H.DEGRADED, "disk 95.0% used")
