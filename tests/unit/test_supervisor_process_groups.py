"""What a node forked does not outlive it. The gateway's process is gunicorn's master; its
worker, stopping on a bug with a WebSocket open, hung at exit (the interpreter waited for the
thread serving it) while the monitor had the supervisor restart the gateway: the supervisor
killed the master only, the orphaned worker kept the gateway's control port, and every new
gateway failed to bind it until the supervisor gave up. Now the supervisor ends the whole
process group its node led (each node starts in a session of its own) when it restarts it or
sees it exit, and a gunicorn worker that has not ended its exit within the grace ends hard."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from nodes import launcher
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
    import os
    import signal
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
