"""A cluster that ``loom up`` runs, as the commands after it find it: the supervisor's pid file
(``<data_dir>/loom.pid``: JSON, its own pid and its children's), each node's log
(``<data_dir>/logs/NAME.log``), PING of a node, and ``loom down`` (``stop_cluster``), which
stops the supervisor named in the pid file -- or, when the supervisor is gone, the nodes it left --,
and ``loom restart`` (``restart_node``), which asks the supervisor over its control socket.
The supervisor that writes these files is nodes/launcher.py (the pid file: nodes/launcher_lock.py).

Thread-safe: plain functions; ``ping`` opens a client of its own.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path
from typing import Callable

from fabric import protocol as P
from fabric.blocking_client import BlockingClient
from fabric.config import LoomConfig, NodeConfig
from fabric.errors import CodedError, FabricError, RemoteError
from fabric.zmq_context import context as zmq_context
from nodes.control import control_endpoint
from nodes.processes import (is_loom_process, kill_group, pid_alive, process_group, send_signal, supervised_group_members,
                             terminate_and_wait)

PID_FILE_NAME = "loom.pid"
LOG_DIR_NAME = "logs"
PING_TIMEOUT_MS = 500
STOP_TIMEOUT_S = 15.0           # a node's SIGTERM grace before SIGKILL (the supervisor's, and loom down's)
# the supervisor's answer to a restart: a kill and its wait (STOP_TIMEOUT_S at most), then a spawn
CONTROL_TIMEOUT_MS = int(STOP_TIMEOUT_S * 1000) + 5000


def pid_file_path(config: LoomConfig) -> Path:
    return Path(config.cluster.data_dir) / PID_FILE_NAME


def log_path(config: LoomConfig, name: str) -> Path:
    return Path(config.cluster.data_dir) / LOG_DIR_NAME / f"{name}.log"


def read_pid_file(config: LoomConfig) -> dict | None:
    """The supervisor's pid file, or None when there is none (or it is unreadable)."""
    try:
        return json.loads(pid_file_path(config).read_text())
    except (OSError, ValueError):
        return None


def ping(node: NodeConfig, timeout_ms: int = PING_TIMEOUT_MS) -> dict | None:
    """PING a node over the fabric: its reply (node, role, pid, uptime_ms) or None."""
    return ask(node, P.PING, timeout_ms)


def ask(node: NodeConfig, command: bytes, timeout_ms: int = PING_TIMEOUT_MS) -> dict | None:
    """A node's reply header to ``command`` (no arguments: PING, STATS) or None."""
    client = BlockingClient(zmq_context(), node.endpoint, identity=None)
    try:
        return client.call(command, timeout_ms=timeout_ms)[0]
    except CodedError:
        return None
    finally:
        client.close()


def restart_node(config: LoomConfig, name: str) -> tuple[str, int]:
    """``loom restart NAME``: ask the supervisor (its control socket) to start the node if it
    does not run (given up on, stopped, in its restart backoff), else to restart it (SIGKILL,
    then a new process). Returns (what was done, the new pid). Raises FabricError when no
    supervisor runs; RemoteError as the supervisor refuses (unknown_node, node_given_up: it was
    given up on while asked)."""
    info = read_pid_file(config)
    sup_pid = info.get("pid") if info else None
    if not (isinstance(sup_pid, int) and pid_alive(sup_pid) and is_loom_process(sup_pid)):
        raise FabricError(f"no running cluster found (no live supervisor in {pid_file_path(config)})")
    client = BlockingClient(zmq_context(), control_endpoint(config), identity=None)
    try:
        try:
            header = client.call(P.SUPERVISOR_START, {"node": name, "reason": "requested by an operator (loom restart)"},
                                 timeout_ms=CONTROL_TIMEOUT_MS)[0]
            return "started", header["pid"]
        except RemoteError as e:
            if e.code != P.NODE_RUNNING:
                raise
        header = client.call(P.SUPERVISOR_RESTART, {"node": name, "reason": "loom restart", "by": "an operator"},
                             timeout_ms=CONTROL_TIMEOUT_MS)[0]
        return "restarted", header["pid"]
    finally:
        client.close()


def stop_cluster(config: LoomConfig, timeout_s: float = 30.0, emit: Callable[[str], None] = print) -> bool:
    """``loom down``: SIGTERM the supervisor named in the pid file and wait for it and its
    children to exit; kill what is left. Returns False when no cluster was running."""
    info = read_pid_file(config)
    if not info:
        return False
    sup_pid = info.get("pid")
    children = [p for p in (info.get("children") or {}).values() if isinstance(p, int)]
    live_children = [p for p in children if pid_alive(p) and is_loom_process(p)]
    if isinstance(sup_pid, int) and pid_alive(sup_pid) and is_loom_process(sup_pid):
        emit(f"stopping the supervisor (pid {sup_pid}) and {len(live_children)} nodes")
        killed = terminate_and_wait([sup_pid], timeout_s)
        if killed:
            emit(f"the supervisor did not stop within {timeout_s:.0f} s: killed it")
    elif not live_children:
        orphans = [m for g in children for m in supervised_group_members(g, str(config.cluster.data_dir))]
        for m in orphans:  # a dead node's forked worker (a gateway's, holding its ports)
            send_signal(m, signal.SIGKILL)
        pid_file_path(config).unlink(missing_ok=True)
        return bool(orphans)
    # Children the supervisor could not stop (or orphans of a killed supervisor).
    left = [p for p in children if pid_alive(p) and is_loom_process(p)]
    if left:
        emit(f"stopping {len(left)} nodes left behind: {', '.join(map(str, left))}")
        groups = [p for p in left if process_group(p) == p]  # each node leads a group of its own (_spawn)
        terminate_and_wait(left, STOP_TIMEOUT_S)
        for g in groups:  # and what it forked (a gateway's worker holding its ports)
            kill_group(g)
    pid_file_path(config).unlink(missing_ok=True)
    return True
