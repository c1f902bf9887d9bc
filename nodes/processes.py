"""Processes by pid, for the supervisor and ``loom down``: is one alive, is it Loom's, signal
it, stop a list of them (SIGTERM, then SIGKILL), and the process groups the supervisor's nodes
lead (a node's forked worker, a gateway's, lives in its group).

Guards against pid reuse: ``is_loom_process`` reads a pid's command line, and a group's members
count as a cluster's only when their environment names its data dir (``SUPERVISED_ENV``, set by
the supervisor for each node and inherited by what it forks). Without /proc (not Linux) the
answers fall back to whether the pid is alive.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

SUPERVISED_ENV = "LOOM_SUPERVISED_DATA_DIR"  # in every node's environment: the data dir of its cluster


def pid_alive(pid: int) -> bool:
    """Is ``pid`` a running process? A zombie (exited, not yet reaped by its parent) is not."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True  # no /proc: trust kill(0)
    return stat[stat.rfind(b")") + 2:][:1] != b"Z"


def is_loom_process(pid: int) -> bool:
    """True when ``pid`` runs Loom: a node (``-m nodes.run``), the CLI (``-m nodes.cli``,
    ``-m nodes``) or the ``loom`` script. Guards against signalling a reused pid, so an
    argument that merely contains "loom" (an editor on loom.yaml) does not count. Without
    /proc the answer is whether the pid is alive."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return pid_alive(pid) and not Path("/proc/self").exists()
    except OSError:
        return pid_alive(pid)
    args = cmdline.split(b"\0")
    if b"nodes.run" in args or b"nodes.cli" in args:
        return True
    if any(a == b"-m" and module == b"nodes" for a, module in zip(args, args[1:])):  # nodes/__main__.py
        return True
    # the console script: `python …/bin/loom up` (or `loom up` run directly)
    return any(os.path.basename(a) == b"loom" for a in args[:2])


def terminate_and_wait(pids: list[int], timeout_s: float, procs: list[subprocess.Popen] | None = None) -> list[int]:
    """SIGTERM ``pids``, wait up to ``timeout_s`` for them to exit, SIGKILL the rest.
    Returns the pids that needed SIGKILL. ``procs`` (our own children) are reaped."""
    for pid in pids:
        send_signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    by_pid = {p.pid: p for p in procs or ()}

    def alive(pid: int) -> bool:
        proc = by_pid.get(pid)
        return proc.poll() is None if proc is not None else pid_alive(pid)
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    killed = [p for p in pids if alive(p)]
    for pid in killed:
        send_signal(pid, signal.SIGKILL)
    for proc in by_pid.values():
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
    return killed


def kill_group(pgid: int) -> None:
    """SIGKILL process group ``pgid``; nothing when it has no process left."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def process_group(pid: int) -> int | None:
    """``pid``'s process group, None when it is gone."""
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def supervised_group_members(pgid: int, data_dir: str) -> list[int]:
    """Processes of process group ``pgid`` that a supervisor of the cluster in ``data_dir``
    started, or that they forked (their environment says so: ``SUPERVISED_ENV``), from /proc;
    [] without it. The group's leader may be gone (a group id is not reused while a member
    lives), and a pid file's stale pid may name someone else's group since: only our own count."""
    out = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return out
    for e in entries:
        if not e.isdigit() or int(e) == os.getpid():
            continue
        try:
            with open(f"/proc/{e}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid and supervised_by(int(e), data_dir):
            out.append(int(e))
    return out


def supervised_by(pid: int, data_dir: str) -> bool:
    """``pid``'s environment names the cluster in ``data_dir`` (``_spawn`` sets it; forks inherit it)."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{SUPERVISED_ENV}={data_dir}".encode() in environ.split(b"\0")


def send_signal(pid: int, sig: int) -> None:
    """Signal ``pid``; nothing when it is gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
