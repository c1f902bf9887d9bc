"""The monitor's parts through their real classes: the declared metrics and their registry,
Prometheus exposition, the alert state machine and its persistence, health judgement, and the
supervisor's crash-loop limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from fabric import metrics as M
from fabric import protocol as P
from fabric.config import parse_config
from nodes import launcher
from nodes.monitor import health as H
from nodes.monitor.alerts import FIRING, PENDING, RESOLVED, AlertBook
from nodes.monitor.exposition import Exposition, render_text
from tests.integration.test_launcher import _ExitedProc


def _config(tmp_path: Path, **sections: dict):  # noqa: ANN202
    raw = {"cluster": {"data_dir": str(tmp_path)},
           "nodes": {"coordinator": {"role": "coordinator", "port": 19004},
                     "broker-1": {"role": "broker", "broker_id": 1, "port": 19001},
                     "monitor": {"role": "monitor", "port": 19010}}}
    raw.update(sections)
    return parse_config(raw, environ={})


def test_every_declared_metric_follows_prometheus_conventions() -> None:
    for spec in M.SPECS:
        assert spec.name.startswith("loom_"), spec.name
        assert spec.name.endswith("_total") == (spec.kind == M.COUNTER), spec.name
        if spec.unit in ("seconds", "bytes"):
            assert spec.unit in spec.name, spec.name
        assert "key" not in spec.labels and "address" not in spec.labels and "client" not in spec.labels


def test_registry_records_and_round_trips_typed_samples() -> None:
    reg = M.MetricsRegistry()
    reg.inc("loom_broker_records_in_total", ("t",), 5)
    reg.inc("loom_broker_records_in_total", ("t",), 7)
    reg.observe("loom_request_duration_seconds", ("PRODUCE",), 0.003)
    reg.observe("loom_request_duration_seconds", ("PRODUCE",), 100.0)
    reg.add_collector(lambda: [("loom_broker_disk_free_bytes", (), 123)])
    decoded = {s.name: s for s in M.decode_samples(reg.encode())}
    assert decoded["loom_broker_records_in_total"].value == 12
    hist = decoded["loom_request_duration_seconds"]
    assert hist.count == 2 and hist.buckets[2] == 1 and hist.buckets[-1] == 1  # 3 ms <= 5 ms; 100 s in +Inf
    assert decoded["loom_broker_disk_free_bytes"].value == 123
    with pytest.raises(AssertionError):
        reg.inc("loom_broker_records_in_total", ("t", "extra"))
    with pytest.raises(KeyError):
        reg.inc("loom_not_declared_total")
    assert M.decode_samples([["loom_not_declared_total", [], 1, 0, []], "junk"]) == []


def test_series_past_the_bound_are_dropped_and_counted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(M, "SERIES_PER_METRIC_MAX", 3)
    reg = M.MetricsRegistry()
    for i in range(10):
        reg.inc("loom_broker_records_in_total", (f"t{i}",))
    samples = reg.snapshot()
    assert len([s for s in samples if s.name == "loom_broker_records_in_total"]) == 3
    dropped = [s for s in samples if s.name == "loom_metric_series_dropped_total"]
    assert dropped[0].value == 7


def test_exposition_parses_with_prometheus_client_parser() -> None:
    reg = M.MetricsRegistry()
    reg.inc("loom_broker_records_in_total", ("t",), 10)
    reg.observe("loom_request_duration_seconds", ("FETCH",), 0.02)
    snap = Exposition((("broker-1", tuple(reg.snapshot())),), (M.Sample("loom_cluster_offline_partitions", (), 2),))
    families = {f.name: f for f in text_string_to_metric_families(render_text(snap).decode())}
    rec = families["loom_broker_records_in"]
    assert rec.type == "counter" and rec.samples[0].name == "loom_broker_records_in_total"
    assert rec.samples[0].labels == {"node": "broker-1", "topic": "t"} and rec.samples[0].value == 10
    hist = families["loom_request_duration_seconds"]
    names = {s.name for s in hist.samples}
    assert names == {"loom_request_duration_seconds_bucket", "loom_request_duration_seconds_sum",
                     "loom_request_duration_seconds_count"}
    inf = [s for s in hist.samples if s.labels.get("le") == "+Inf"]
    assert inf[0].value == 1
    assert families["loom_cluster_offline_partitions"].samples[0].value == 2


def test_alerts_pend_fire_resolve_and_survive_a_restart(tmp_path: Path) -> None:
    changes: list[tuple[str, str]] = []
    book = AlertBook(tmp_path, lambda rule: 1000, lambda a: changes.append((a.rule, a.state)))
    key = ("node_down", "broker-1")
    book.evaluate({key: ("down", None)}, {"node_down"}, 10_000)
    assert book.active[key].state == PENDING and not changes
    book.evaluate({key: ("down", None)}, {"node_down"}, 11_000)
    assert book.active[key].state == FIRING and changes == [("node_down", FIRING)]
    book.save([])
    again = AlertBook(tmp_path, lambda rule: 1000, lambda a: changes.append((a.rule, a.state)))
    assert again.active[key].state == FIRING and again.active[key].fired_ms == 11_000
    again.evaluate({}, set(), 12_000)  # the rule was not judged: nothing resolves
    assert again.active[key].state == FIRING
    again.evaluate({}, {"node_down"}, 13_000)
    assert key not in again.active and changes[-1] == ("node_down", RESOLVED)
    assert [a["state"] for a in again.listing(True)] == [RESOLVED]
    # a pending alert whose condition goes away never fires
    again.evaluate({("offline_partitions", "cluster"): ("x", 1)}, set(), 20_000)
    again.evaluate({}, {"offline_partitions"}, 20_500)
    assert changes[-1] == ("node_down", RESOLVED) and not again.active


def test_health_states(tmp_path: Path) -> None:
    cfg = _config(tmp_path, liveness={"heartbeat_interval_ms": 100, "session_timeout_ms": 1000},
                  monitor={"health_interval_ms": 100, "unresponsive_after_ms": 2000})
    view = H.NodeView("broker-1", cfg.node("broker-1"))
    assert H.classify(view, 100, 0, cfg, None)[0] == H.UNKNOWN
    view.heard(1000, 4242)
    assert H.classify(view, 1100, 0, cfg, True)[0] == H.HEALTHY
    assert H.classify(view, 1500, 0, cfg, True)[0] == H.HEALTHY          # a short silence is not judged
    assert H.classify(view, 1500, 0, cfg, False)[0] == H.DOWN            # ... unless the process is gone
    state, reason = H.classify(view, 3100, 0, cfg, True)
    assert state == H.UNRESPONSIVE and "4242" in reason
    assert H.classify(view, 3100, 0, cfg, None)[0] == H.DOWN             # cannot look at the process
    view.exited_pid, view.exit_reason = 4242, "killed by SIGKILL"
    assert H.classify(view, 1100, 0, cfg, True) == (H.DOWN, "process 4242 exited (killed by SIGKILL)")
    view.heard(1200, 5000)                                                # the new process speaks
    assert H.classify(view, 1200, 0, cfg, True)[0] == H.HEALTHY
    view.samples = (M.Sample("loom_broker_disk_used_ratio", (), 0.95),)
    assert H.classify(view, 1200, 0, cfg, True) == (H.DEGRADED, "disk 95.0% used")


def test_supervisor_gives_up_on_a_crash_loop(tmp_path: Path) -> None:
    cfg = _config(tmp_path, supervisor={"restart_backoff_ms": 10, "restart_backoff_max_ms": 10,
                                        "crash_loop_restarts_max": 3, "crash_loop_window_ms": 10_000})
    lines: list[str] = []
    sup = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lines.append)
    pids = iter(range(1000, 2000))
    child = sup.children["broker-1"]
    sup._spawn = lambda c: c.__dict__.update(proc=_ExitedProc(next(pids)), restart_at_ms=None)  # type: ignore[method-assign]
    sup._spawn(child)
    for now in range(0, 400, 20):  # every start crashes at once
        sup.tick(now)
    assert child.restarts == 3 and child.given_up and child.proc is None
    assert sup.children_status()["broker-1"]["state"] == "given_up"
    actions = [e["action"] for e in sup.events.since(0)]
    assert actions.count("exited") == 4 and actions.count("restarted") == 3 and actions[-1] == "gave_up"
    assert any("giving up on broker-1" in ln for ln in lines)


def test_history_is_bounded_in_points_and_series() -> None:
    from nodes.monitor.history import History
    h = History(points_max=5, series_max=2)
    for i in range(8):
        h.append(1000 * i, {"a": i, "b": 2 * i, "c": 3 * i} if i != 6 else {"a": i})
    q = h.query()
    assert q["t"] == [3000, 4000, 5000, 6000, 7000]
    assert q["series"] == {"a": [3, 4, 5, 6, 7], "b": [6, 8, 10, None, 14]}
    assert h.series_dropped > 0
    assert h.query(["b"], since_wall_ms=5000) == {"t": [6000, 7000], "series": {"b": [None, 14]}}


def test_cluster_facts_count_isr_changes_elections_and_lag() -> None:
    from fabric.metadata import BrokerInfo, ClusterMetadata, PartitionInfo, TopicInfo
    from nodes.monitor.cluster import ClusterFacts

    def md(version: int, leader: int, epoch: int, isr: tuple[int, ...]) -> ClusterMetadata:
        part = PartitionInfo("t", 0, leader, epoch, (1, 2, 3), isr)
        return ClusterMetadata(version, "c", {1: BrokerInfo(1, "h", 1, 2)}, {"t": TopicInfo("t", (part,))})
    facts = ClusterFacts()
    facts.apply_metadata(md(1, 1, 0, (1, 2, 3)))
    facts.apply_metadata(md(2, 2, 1, (2, 3)))      # broker 1 died: shrink and election
    facts.apply_metadata(md(2, 3, 5, (3,)))        # not newer: ignored
    facts.apply_metadata(md(3, 2, 1, (1, 2, 3)))   # it is back in sync
    assert (facts.isr_shrinks["t"], facts.isr_expands["t"], facts.elections["t"]) == (1, 1, 1)
    assert facts.partition_counts()["under_replicated"] == 0
    facts.apply_groups([{"group": "g", "offsets": [["t", 0, 40], ["t", 9, 1]]}, "junk"], {("t", 0): 100.0})
    assert facts.lag == {("g", "t", 0): 60} and facts.group_lag() == {"g": 60}


def test_restart_requests_kill_respawn_and_count_toward_the_crash_loop(tmp_path: Path) -> None:
    import subprocess
    import sys

    from fabric.errors import RemoteError
    cfg = _config(tmp_path, supervisor={"crash_loop_restarts_max": 2, "crash_loop_window_ms": 60_000})
    sup = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lambda line: None)
    procs: list[subprocess.Popen] = []

    def spawn(child: launcher.Child) -> None:  # a stand-in process that would run forever
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        child.proc = procs[-1]
    sup._spawn = spawn  # type: ignore[method-assign]
    child = sup.children["broker-1"]
    spawn(child)
    try:
        with pytest.raises(RemoteError, match="not running as pid 1") as refused:
            sup.restart_now("broker-1", "test", pid=1)  # a stale request never kills the new process
        assert refused.value.code == P.NODE_NOT_RUNNING  # each refusal has its own code
        first = child.proc.pid  # type: ignore[union-attr]
        assert sup.restart_now("broker-1", "hung", pid=first) != first
        assert procs[0].poll() is not None and child.restarts == 1
        sup.restart_now("broker-1", "hung again")
        with pytest.raises(RemoteError, match="given up") as refused:
            sup.restart_now("broker-1", "and again")  # the third kill within the window
        assert refused.value.code == P.NODE_GIVEN_UP
        assert child.given_up and child.proc is None
        assert [e["action"] for e in sup.events.since(0)] == ["restarted", "restarted", "gave_up"]
        with pytest.raises(RemoteError, match="not supervised") as refused:
            sup.restart_now("nobody", "x")
        assert refused.value.code == P.UNKNOWN_NODE
        with pytest.raises(RemoteError, match="given up") as refused:
            sup.restart_now("broker-1", "once more")  # given up stays given up
        assert refused.value.code == P.NODE_GIVEN_UP
    finally:
        for p in procs:
            p.kill()
            p.wait()
