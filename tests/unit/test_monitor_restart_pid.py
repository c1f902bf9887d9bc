"""after the monitor's own restart request, the view keeps the killed pid."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import zmq

from fabric import protocol as P
from fabric.clock import ManualClock
from fabric.reactor import Reactor
from nodes.launcher import pid_alive
from nodes.monitor import health as H
from nodes.monitor.recovery import Recovery
from tests.unit.fakes import small_cluster_config


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_node_that_hangs_again_after_the_restart_the_monitor_asked_for_is_restarted_again(tmp_path: Path) -> None:
    """broker-1 (pid OLD) hung; the monitor asked for a restart; the supervisor killed OLD and
    started NEW, which hangs before its first heartbeat (the crash loop the kill window is for).
    The view heard OLD before, so the supervisor's running pid is never taken (only 'before its
    first heartbeat') and the 'restarted' event's pid is ignored: the view keeps OLD, which is
    not running -> DOWN, never UNRESPONSIVE -> never restarted again."""
    cfg = small_cluster_config(tmp_path, monitor={"unresponsive_after_ms": 10_000, "restart_backoff_ms": 30_000})
    old, hung = _dead_pid(), os.getpid()
    reactor = Reactor(ManualClock(0))
    rec = Recovery(zmq.Context.instance(), reactor, cfg, "monitor", lambda e: e, saved_events=[])
    sent: list[tuple] = []
    rec.client.request = lambda cmd, header, *a, callback, timeout_ms: sent.append((cmd, header, callback))  # type: ignore[method-assign]
    views = {"broker-1": H.NodeView("broker-1", cfg.node("broker-1")),
             "coordinator": H.NodeView("coordinator", cfg.node("coordinator"))}
    view = views["broker-1"]
    view.heard(1_000, old)                   # OLD heartbeated once, then hung
    view.state = H.UNRESPONSIVE
    view.last_restart_request_ms = 20_000    # the monitor asked; the supervisor killed OLD, started NEW
    rec.poll(views)
    (_cmd, _h, callback), = sent
    callback({"instance": "sup1", "seq": 1,
              "children": {"broker-1": {"pid": hung, "state": "running", "restarts": 1, "reason": ""},
                           "coordinator": {"pid": hung, "state": "running", "restarts": 0, "reason": ""}},
              "events": [{"seq": 1, "ts_ms": 1, "action": "restarted", "node": "broker-1",
                          "reason": "unresponsive", "pid": hung, "old_pid": old}]}, [], None)
    now = 20_000 + 60_000   # a minute later: NEW never heartbeated, the backoff long passed
    state, reason = H.classify(view, now, 0, cfg, pid_alive(view.pid) if view.pid else None)
    assert view.pid == hung, f"the view still names pid {view.pid} (killed), not the running {hung}: {state} {reason}"
    view.state, view.reason = state, reason
    rec.act(views, now)
    assert [c for c, _h, _cb in sent].count(P.SUPERVISOR_RESTART) == 1, f"never restarted again: {state} ({reason})"
    rec.close()


def test_a_node_that_crashed_and_hangs_in_its_new_process_is_restarted(tmp_path: Path) -> None:
    """broker-1 (pid OLD, heard) crashes; the supervisor logs 'exited' OLD and 'restarted' as
    NEW (no old_pid in that event), and NEW hangs before its first heartbeat. The view keeps
    OLD with exited_pid OLD: 'down until a new one speaks' -- NEW never speaks, so for good."""
    cfg = small_cluster_config(tmp_path, monitor={"unresponsive_after_ms": 10_000, "restart_backoff_ms": 30_000})
    old, hung = _dead_pid(), os.getpid()
    rec = Recovery(zmq.Context.instance(), Reactor(ManualClock(0)), cfg, "monitor", lambda e: e, saved_events=[])
    sent: list[tuple] = []
    rec.client.request = lambda cmd, header, *a, callback, timeout_ms: sent.append((cmd, header, callback))  # type: ignore[method-assign]
    views = {"broker-1": H.NodeView("broker-1", cfg.node("broker-1")),
             "coordinator": H.NodeView("coordinator", cfg.node("coordinator"))}
    view = views["broker-1"]
    view.heard(1_000, old)
    rec.poll(views)
    (_cmd, _h, callback), = sent
    callback({"instance": "sup1", "seq": 2,
              "children": {"broker-1": {"pid": hung, "state": "running", "restarts": 1, "reason": ""},
                           "coordinator": {"pid": hung, "state": "running", "restarts": 0, "reason": ""}},
              "events": [{"seq": 1, "ts_ms": 1, "action": "exited", "node": "broker-1", "reason": "SIGSEGV",
                          "pid": old, "code": -11},
                         {"seq": 2, "ts_ms": 2, "action": "restarted", "node": "broker-1", "reason": "it exited",
                          "pid": hung}]}, [], None)
    now = 120_000
    state, reason = H.classify(view, now, 0, cfg, pid_alive(view.pid) if view.pid else None)
    view.state, view.reason = state, reason
    rec.act(views, now)
    assert [c for c, _h, _cb in sent].count(P.SUPERVISOR_RESTART) == 1, f"never restarted: {state} ({reason})"
    rec.close()
