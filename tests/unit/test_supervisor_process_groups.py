"""What a node forked does not outlive it. The gateway's process is gunicorn's master; its
worker, stopping on a bug with a WebSocket open, hung at exit (the interpreter waited for the
thread serving it) while the monitor had the supervisor restart the gateway: the supervisor
killed the master only, the orphaned worker kept the gateway's control port, and every new
gateway failed to bind it until the supervisor gave up. Now the supervisor ends the whole
process group its node led (each node starts in a session of its own) when it restarts it or
sees it exit, and a gunicorn worker that has not ended its exit within the grace ends hard."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodes import launcher, running_cluster
from tests.unit.fakes import small_cluster_config

DEADLINE_S = 10.0
# a node that forks a process which would live on (as a gunicorn worker does), prints its pid
FORKS = "import os, sys, time\npid = os.fork()\nif pid == 0:\n    time.sleep(60)\n    os._exit(0)\n" \
        "print(pid, flush=True)\n{rest}"


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie nobody has reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _wait_gone(pid: int) -> bool:
    deadline = time.monotonic() + DEADLINE_S
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def _supervisor_with(tmp_path: Path, rest: str) -> tuple[launcher.Supervisor, list[subprocess.Popen], list[int]]:
    """broker-1 is a stand-in that forks (in a session of its own, as _spawn starts nodes)."""
    sup = launcher.Supervisor(small_cluster_config(tmp_path), str(tmp_path / "c.yaml"), emit=lambda line: None)
    procs: list[subprocess.Popen] = []
    forked: list[int] = []

    def spawn(child: launcher.Child) -> None:
        procs.append(subprocess.Popen([sys.executable, "-c", FORKS.format(rest=rest)], stdout=subprocess.PIPE,
                                      start_new_session=True))
        child.proc, child.group = procs[-1], procs[-1].pid
        child.restart_at_ms = None
        forked.append(int(procs[-1].stdout.readline()))  # type: ignore[union-attr]
    sup._spawn = spawn  # type: ignore[method-assign]
    spawn(sup.children["broker-1"])
    return sup, procs, forked


def _cleanup(procs: list[subprocess.Popen], forked: list[int]) -> None:
    for p in procs:
        p.kill()
        p.wait()
        p.stdout.close()  # type: ignore[union-attr]
    for pid in forked:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_restart_kills_what_the_node_forked(tmp_path: Path) -> None:
    sup, procs, forked = _supervisor_with(tmp_path, "time.sleep(60)")
    try:
        sup.restart_now("broker-1", "hung")
        assert _wait_gone(forked[0]), "the node's forked process outlived its restart"
        assert not _gone(forked[1]), "the new node's own process was killed"
    finally:
        _cleanup(procs, forked)


def test_a_node_that_exited_leaves_nothing_it_forked_behind(tmp_path: Path) -> None:
    sup, procs, forked = _supervisor_with(tmp_path, "sys.exit(1)")
    try:
        procs[0].wait(timeout=DEADLINE_S)
        assert not _gone(forked[0])
        sup.tick(launcher._now_ms())
        assert _wait_gone(forked[0]), "the exited node's forked process lives on"
    finally:
        _cleanup(procs, forked)


def test_a_stopping_gateway_worker_held_by_a_thread_ends_past_the_grace() -> None:
    code = ("import threading\nfrom nodes.gateway import exit_hard_after\n"
            "threading.Thread(target=threading.Event().wait).start()  # never ends, as a WebSocket's thread\n"
            "exit_hard_after(0.3)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        assert proc.wait(timeout=DEADLINE_S) == 70, "the worker's exit hung on a thread"
    finally:
        proc.kill()
        proc.wait()


# a node (its argv names nodes.run, as a real one's does) that forks a worker, as gunicorn's
# master does, in its own session as _spawn starts it, and that does not stop on SIGTERM
NODE = ("import os, signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\npid = os.fork()\n"
        "if pid == 0:\n    time.sleep(60)\n    os._exit(0)\nprint(pid, flush=True)\ntime.sleep(60)\n")


def test_loom_down_after_the_supervisor_was_killed_ends_the_nodes_process_groups(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor was SIGKILLed (the OOM killer, kill -9): its nodes live on, and `loom down`
    stops the ones its pid file names -- by pid (SIGTERM, then SIGKILL). A gateway's gunicorn
    master that needs the SIGKILL leaves its worker behind, holding the gateway's ports, and
    the next `loom up` (the pid file is gone) starts a gateway that cannot bind them: the
    failure b1e960d fixed for the supervisor's own restarts, by another way."""
    monkeypatch.setattr(running_cluster, "STOP_TIMEOUT_S", 0.5)
    cfg = small_cluster_config(tmp_path)
    node = subprocess.Popen([sys.executable, "-c", NODE, "-m", "nodes.run"], stdout=subprocess.PIPE,
                            start_new_session=True)
    worker = int(node.stdout.readline())  # type: ignore[union-attr]
    try:
        dead_supervisor = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_supervisor.wait()
        running_cluster.pid_file_path(cfg).write_text(json.dumps({"pid": dead_supervisor.pid, "config": "c.yaml",
                                                           "children": {"broker-1": node.pid}}))
        assert running_cluster.stop_cluster(cfg, timeout_s=1.0, emit=lambda line: None)
        node.wait(timeout=5)
        assert _wait_gone(worker), f"loom down left pid {worker}, forked by the node pid {node.pid}, running"
    finally:
        node.kill()
        node.wait()
        node.stdout.close()  # type: ignore[union-attr]
        if not _gone(worker):
            os.kill(worker, signal.SIGKILL)
