"""The supervisor's crash-loop limit (nodes/launcher.py): a node that keeps crashing, or that the
monitor keeps asking to restart, is given up on, and every refusal has its own code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes import launcher
from tests.unit.fakes import ExitedProc, small_cluster_config


def test_supervisor_gives_up_on_a_crash_loop(tmp_path: Path) -> None:
    cfg = small_cluster_config(tmp_path, supervisor={"restart_backoff_ms": 10, "restart_backoff_max_ms": 10,
                                        "crash_loop_restarts_max": 3, "crash_loop_window_ms": 10_000})
    lines: list[str] = []
    sup = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lines.append)
    pids = iter(range(1000, 2000))
    child = sup.children["broker-1"]
    sup._spawn = lambda c: c.__dict__.update(proc=ExitedProc(next(pids)), restart_at_ms=None)  # type: ignore[method-assign]
    sup._spawn(child)
    for now in range(0, 400, 20):  # every start crashes at once
        sup.tick(now)
    assert child.restarts == 3 and child.given_up and child.proc is None
    assert sup.children_status()["broker-1"]["state"] == "given_up"
    actions = [e["action"] for e in sup.events.since(0)]
    assert actions.count("exited") == 4 and actions.count("restarted") == 3 and actions[-1] == "gave_up"
    assert any("giving up on broker-1" in ln for ln in lines)


def _supervisor_of_a_hung_stand_in(cfg, tmp_path: Path):  # noqa: ANN001, ANN202
    """A supervisor whose broker-1 is a stand-in process that would run (hung) forever; returns
    it, the child and the list of the stand-ins started (the caller kills them)."""
    sup = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lambda line: None)
    procs: list[subprocess.Popen] = []

    def spawn(child: launcher.Child) -> None:
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        child.proc = procs[-1]
    sup._spawn = spawn  # type: ignore[method-assign]
    child = sup.children["broker-1"]
    spawn(child)
    return sup, child, procs


def test_restart_requests_kill_respawn_and_count_toward_the_crash_loop(tmp_path: Path) -> None:
    cfg = small_cluster_config(tmp_path, supervisor={"crash_loop_restarts_max": 2, "crash_loop_window_ms": 60_000})
    sup, child, procs = _supervisor_of_a_hung_stand_in(cfg, tmp_path)
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


def test_a_node_that_hangs_after_every_restart_is_given_up_on_with_the_default_config(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/monitoring.md: 'kills the monitor asked for count too, so a node that hangs again
    and again is given up on as well: the monitor raises crash_loop for it'. The monitor asks
    at most once per monitor.restart_backoff_ms (30 s), and the supervisor gives up after more
    than crash_loop_restarts_max (5) exits within crash_loop_window_ms (60 s): at most 3 kills
    fit in the window, so with the defaults a node that hangs after every start is killed and
    restarted every 30 s for good, and crash_loop never fires."""
    cfg = small_cluster_config(tmp_path)
    now = [0]
    monkeypatch.setattr(launcher, "_now_ms", lambda: now[0])
    sup, child, procs = _supervisor_of_a_hung_stand_in(cfg, tmp_path)
    try:
        for _ in range(20):  # ten minutes: hung after each start, killed on each monitor request
            now[0] += cfg.monitor.restart_backoff_ms
            try:
                sup.restart_now("broker-1", "unresponsive", pid=child.proc.pid)  # type: ignore[union-attr]
            except RemoteError:
                break
        assert child.given_up, f"killed and restarted {child.restarts} times in ten minutes, never given up"
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_a_node_given_up_on_is_started_again_on_request_its_crash_count_set_back(tmp_path: Path) -> None:
    """`loom restart` (SUPERVISOR_START): a node given up on starts now; one that runs is refused
    node_running (the caller restarts it instead); an unknown one unknown_node."""
    cfg = small_cluster_config(tmp_path, supervisor={"crash_loop_restarts_max": 1, "crash_loop_window_ms": 60_000})
    sup, child, procs = _supervisor_of_a_hung_stand_in(cfg, tmp_path)
    try:
        with pytest.raises(RemoteError) as refused:
            sup.start_again("broker-1", "x")
        assert refused.value.code == P.NODE_RUNNING
        sup.restart_now("broker-1", "hung")
        with pytest.raises(RemoteError):
            sup.restart_now("broker-1", "hung again")  # over the limit: given up
        assert child.given_up and sup.children_status()["broker-1"]["state"] == "given_up"
        pid = sup.start_again("broker-1", "fixed")
        assert child.proc is not None and child.proc.pid == pid and child.proc.poll() is None
        assert child.given_up is None and sup.children_status()["broker-1"]["state"] == "running"
        assert sup.events.since(0)[-1]["action"] == "started"
        assert sup.restart_now("broker-1", "hung once more") != pid, "the crash count started over"
        with pytest.raises(RemoteError) as refused:
            sup.start_again("nobody", "x")
        assert refused.value.code == P.UNKNOWN_NODE
    finally:
        for p in procs:
            p.kill()
            p.wait()
