"""The monitor, as a review attacked it: after a monitor restart, a hung node that had crashed
before was judged down (the old exit event's pid) and never restarted; a dead node's last rates
kept counting in the cluster's throughput; alert delays were measured on the wall clock (a
clock stepped back held a pending alert for as long); a history series with no point left kept
its slot for good, so that new topics or groups got no history."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import zmq

from fabric import protocol as P
from fabric.clock import ManualClock
from fabric.config import load_config
from fabric.metrics import Sample
from fabric.reactor import Reactor
from nodes.processes import pid_alive
from nodes.local_cluster import make_config
from nodes.monitor import Monitor
from nodes.monitor import health as H
from nodes.monitor.alerts import FIRING, AlertBook
from nodes.monitor.history import History
from nodes.monitor.recovery import Recovery
from tests.unit.fakes import small_cluster_config


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


HUNG = os.getpid()  # this test process stands in for a hung broker: alive, silent


def _judged_after_status(tmp_path: Path, events: list[dict], *, heard_pid: int | None = None,
                         restart_requested_ms: int | None = None, saved_events: tuple = (),
                         now: int = 120_000, status_at_ms: int = 0) -> tuple[str, str, int | None, list]:
    """A Recovery whose first SUPERVISOR_STATUS answer says broker-1 runs as HUNG, with
    ``events`` (the supervisor's log); broker-1 was heard as ``heard_pid`` at 1 s (if given).
    Judges broker-1 at ``now`` and acts. Returns its state, reason, pid and the requests sent."""
    cfg = small_cluster_config(tmp_path, monitor={"unresponsive_after_ms": 10_000, "restart_backoff_ms": 30_000})
    rec = Recovery(zmq.Context.instance(), Reactor(ManualClock(status_at_ms)), cfg, "monitor", lambda e: e,
                   saved_events=list(saved_events))
    sent: list[tuple] = []
    rec.client.request = lambda cmd, header, *a, callback, timeout_ms: sent.append((cmd, header, callback))  # type: ignore[method-assign]
    views = {"broker-1": H.NodeView("broker-1", cfg.node("broker-1")),
             "coordinator": H.NodeView("coordinator", cfg.node("coordinator"))}
    view = views["broker-1"]
    if heard_pid is not None:
        view.heard(1_000, heard_pid)
    if restart_requested_ms is not None:
        view.state, view.last_restart_request_ms = H.UNRESPONSIVE, restart_requested_ms
    rec.poll(views)
    (_cmd, _h, callback), = sent
    callback({"instance": "sup1", "seq": events[-1]["seq"],
              "children": {"broker-1": {"pid": HUNG, "state": "running", "restarts": 1, "reason": ""},
                           "coordinator": {"pid": HUNG, "state": "running", "restarts": 0, "reason": ""}},
              "events": events}, [], None)
    state, reason = H.classify(view, now, 0, cfg, pid_alive(view.pid) if view.pid else None)
    view.state, view.reason = state, reason
    rec.act(views, now)
    rec.close()
    return state, reason, view.pid, [c for c, _h, _cb in sent]


def _crashed_then_restarted(old: int) -> list[dict]:
    return [{"seq": 1, "ts_ms": 1, "action": "exited", "node": "broker-1", "reason": "killed by SIGSEGV",
             "pid": old, "code": -11},
            {"seq": 2, "ts_ms": 2, "action": "restarted", "node": "broker-1", "reason": "it exited", "pid": HUNG}]


def test_a_restarted_monitor_restarts_a_hung_node_that_had_crashed_before(tmp_path: Path) -> None:
    """broker-1 crashed once (OLD exited, restarted as NEW), NEW hangs, and the monitor
    restarts: its replay of the supervisor's log set the view's pid to OLD, and the running
    pid was then ignored: judged down ('process OLD exited'), never restarted."""
    state, reason, _, sent = _judged_after_status(tmp_path, _crashed_then_restarted(_dead_pid()), now=20_000,
                                                  saved_events=({"kind": "recovery", "sup_instance": "sup1", "sup_seq": 2},))
    assert state == H.UNRESPONSIVE, f"a hung broker (pid {HUNG}) is judged {state}: {reason}"
    assert sent.count(P.SUPERVISOR_RESTART) == 1, "the hung broker is never restarted"


def test_a_node_that_crashed_and_hangs_in_its_new_process_is_restarted(tmp_path: Path) -> None:
    """The same without a monitor restart: the view had heard OLD, and kept it."""
    state, reason, _, sent = _judged_after_status(tmp_path, _crashed_then_restarted(old := _dead_pid()), heard_pid=old)
    assert sent.count(P.SUPERVISOR_RESTART) == 1, f"never restarted: {state} ({reason})"


def test_a_node_that_hangs_again_after_the_restart_the_monitor_asked_for_is_restarted_again(tmp_path: Path) -> None:
    """OLD hung, the monitor asked for a restart, NEW hangs before its first heartbeat (the
    crash loop the supervisor's kill window is for): the view kept OLD, not running -> down,
    never restarted again."""
    old = _dead_pid()
    state, reason, pid, sent = _judged_after_status(
        tmp_path, [{"seq": 1, "ts_ms": 1, "action": "restarted", "node": "broker-1", "reason": "unresponsive",
                    "pid": HUNG, "old_pid": old}], heard_pid=old, restart_requested_ms=20_000, now=80_000)
    assert pid == HUNG, f"the view still names pid {pid} (killed), not the running {HUNG}: {state} {reason}"
    assert sent.count(P.SUPERVISOR_RESTART) == 1, f"never restarted again: {state} ({reason})"


def test_a_process_restarted_long_after_its_predecessors_last_heartbeat_gets_its_own_time_to_start(
        tmp_path: Path) -> None:
    """OLD last heartbeated at 1 s and crashed; the supervisor restarted it as NEW 14 s later
    (its crash-loop backoff). NEW's silence was counted from OLD's last heartbeat: 14.5 s, over
    unresponsive_after_ms at once, so NEW was judged unresponsive and killed in its start-up --
    every restart after a backoff over 10 s, a crash loop of the monitor's making. NEW's silence
    counts from when the monitor learnt of it."""
    old = _dead_pid()
    state, reason, pid, sent = _judged_after_status(tmp_path, _crashed_then_restarted(old), heard_pid=old,
                                                    status_at_ms=15_000, now=15_500)
    assert pid == HUNG and state != H.UNRESPONSIVE, f"judged {state} 0.5 s after its start: {reason}"
    assert P.SUPERVISOR_RESTART not in sent
    state, reason, _, sent = _judged_after_status(tmp_path, _crashed_then_restarted(old), heard_pid=old,
                                                  status_at_ms=15_000, now=26_000)
    assert state == H.UNRESPONSIVE, f"silent 11 s since its start, judged {state}: {reason}"
    assert sent.count(P.SUPERVISOR_RESTART) == 1


def test_a_dead_broker_no_longer_counts_in_the_cluster_throughput_and_history(tmp_path: Path) -> None:
    """A broker killed while it took 1,000 records/s: its view keeps the rates of its last two
    STATS answers (nothing new arrives to replace them), and status()['rates'] (loom status,
    the dashboard) and the history's records_in_per_s go on showing 1,000 records/s from a
    broker that is down -- for as long as it stays down (given up: for good). gateway_5xx is
    judged from the same stale rates: a gateway that died while answering 5xx keeps that alert
    firing while it is down."""
    monitor = Monitor(load_config(make_config(tmp_path, 1, extra_nodes=("monitor",)), environ={}), "monitor")
    try:
        view = monitor.views["broker-1"]
        dead = subprocess.Popen([sys.executable, "-c", "pass"])
        dead.wait()
        now = monitor.clock.now_ms()
        view.heard(now, dead.pid)
        monitor._take_samples(view, [Sample("loom_broker_records_in_total", ("t",), 0.0)], now - 2000)
        monitor._take_samples(view, [Sample("loom_broker_records_in_total", ("t",), 1000.0)], now - 1000)
        monitor._check()  # its process is gone: down at once
        assert view.state == H.DOWN
        rate = monitor.status()["rates"]["records_in_per_s"]
        assert rate == 0, f"a broker that is down still counts {rate} records/s in the cluster's throughput"
        last = monitor.history.query(["records_in_per_s"])["series"].get("records_in_per_s", [None])[-1]
        assert last is None or last == 0 or math.isnan(last), f"the history records {last} records/s for it"
    finally:
        monitor.close()


def test_a_pending_alert_fires_after_for_ms_even_when_the_wall_clock_steps_back(tmp_path: Path) -> None:
    """AlertBook.evaluate measures for_ms on the wall clock (started_ms and now are wall ms).
    The monitor's checks run on the monotonic clock, but an NTP step back of an hour (a VM
    resumed, a wrong clock corrected) while under_replicated is pending (for_ms 30 s) holds the
    alert back for an hour plus 30 s of real under-replication; a step forward fires any
    pending alert at once."""
    book = AlertBook(tmp_path, lambda rule: 30_000, lambda a: None)
    key = ("under_replicated", "cluster")
    wall, now = 1_700_000_000_000, 0  # the monitor passes both clocks (Monitor._check)
    book.evaluate({key: ("3 under-replicated partitions", 3)}, {"under_replicated"}, wall, now)
    wall -= 3_600_000  # the clock is stepped back an hour
    for _ in range(60):  # a minute of checks, one a second, the condition holding throughout
        wall, now = wall + 1000, now + 1000
        book.evaluate({key: ("3 under-replicated partitions", 3)}, {"under_replicated"}, wall, now)
    assert book.active[key].state == FIRING, "under-replicated for a minute (for_ms 30 s) and still pending"


def test_a_new_series_gets_history_once_old_ones_have_aged_out() -> None:
    """History keeps at most HISTORY_SERIES_MAX series and never frees one: a series whose
    every point has aged out of the ring (a deleted topic, a group of a finished script --
    lag{group=...}, records_in_per_s{topic=...}) keeps its slot for good. Once that many keys
    were ever seen, no new topic or group gets a chart until the monitor restarts."""
    h = History(points_max=10, series_max=3)
    t = 0
    for g in ("a", "b", "c"):  # three groups, one after another, each gone after a while
        for _ in range(10):
            t += 1000
            h.append(t, {f"lag{{group={g}}}": 5.0})
    for _ in range(10):  # nothing of theirs in the last ten points
        t += 1000
        h.append(t, {})
    t += 1000
    h.append(t, {"lag{group=new}": 7.0})
    assert "lag{group=new}" in h.query()["series"], \
        f"a new group gets no history; slots held by series with no point left: {sorted(h.series)}"
