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


def test_a_broker_that_refuses_the_coordinator_is_degraded(tmp_path: Path) -> None:
    """A broker refusing the coordinator's metadata (a coordinator started without its state:
    another cluster id) or refused by it (another live process of its broker id) heartbeats on,
    and was healthy in the monitor, the dashboard and `loom status`'s states while the cluster
    counted it out. Its gauge loom_broker_metadata_refused makes it degraded."""
    cfg = small_cluster_config(tmp_path)
    view = H.NodeView("broker-1", cfg.node("broker-1"))
    view.heard(1000, 4242)
    view.samples = (M.Sample("loom_broker_metadata_refused", (), 0.0),)
    assert H.classify(view, 1100, 0, cfg, True)[0] == H.HEALTHY
    view.samples = (M.Sample("loom_broker_metadata_refused", (), 1.0),)
    state, reason = H.classify(view, 1100, 0, cfg, True)
    assert state == H.DEGRADED and "refus" in reason and "coordinator" in reason, reason
    assert "loom_broker_metadata_refused" in M.METRICS


def test_the_broker_reports_its_refusal_as_a_gauge(nodes) -> None:  # noqa: ANN001
    broker, _coord, _loop = nodes
    def refused() -> float:
        samples = M.decode_samples(broker.metrics.encode())
        return next(s.value for s in samples if s.name == "loom_broker_metadata_refused")
    assert refused() == 0.0
    broker.guard.registration_refused("another live process is broker 1", "data directory x")
    assert refused() == 1.0
    broker.guard.registration_refused("")
    assert refused() == 0.0
