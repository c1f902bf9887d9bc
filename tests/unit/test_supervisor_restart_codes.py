"""The supervisor refuses a restart with a code that says why, not ``invalid_config``.

``SUPERVISOR_RESTART`` for a node it does not supervise answers ``unknown_node``; for one it gave
up on, ``node_given_up``; for one not running (or no longer as the pid asked about),
``node_not_running``. Before, all three were ``invalid_config``, which the config was not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fabric import protocol as P
from fabric.config import parse_config
from fabric.errors import RemoteError
from nodes import launcher


def _supervisor(tmp_path: Path) -> launcher.Supervisor:
    raw = {"cluster": {"data_dir": str(tmp_path)},
           "nodes": {"coordinator": {"role": "coordinator", "port": 19004},
                     "broker-1": {"role": "broker", "broker_id": 1, "port": 19001}},
           "supervisor": {"crash_loop_restarts_max": 1, "crash_loop_window_ms": 60_000}}
    return launcher.Supervisor(parse_config(raw, environ={}), str(tmp_path / "c.yaml"), emit=lambda line: None)


def _code(call) -> int:  # noqa: ANN001
    with pytest.raises(RemoteError) as e:
        call()
    return e.value.code


def test_each_refused_restart_has_its_own_code(tmp_path: Path) -> None:
    sup = _supervisor(tmp_path)
    procs: list[subprocess.Popen] = []

    def spawn(child: launcher.Child) -> None:  # a stand-in process that would run forever
        procs.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"]))
        child.proc = procs[-1]
    sup._spawn = spawn  # type: ignore[method-assign]
    child = sup.children["broker-1"]
    try:
        assert _code(lambda: sup.restart_now("nobody", "x")) == P.UNKNOWN_NODE
        assert _code(lambda: sup.restart_now("broker-1", "x")) == P.NODE_NOT_RUNNING  # never started
        spawn(child)
        assert _code(lambda: sup.restart_now("broker-1", "stale", pid=1)) == P.NODE_NOT_RUNNING
        first = child.proc.pid  # type: ignore[union-attr]
        assert sup.restart_now("broker-1", "hung") != first
        assert _code(lambda: sup.restart_now("broker-1", "hung again")) == P.NODE_GIVEN_UP  # the crash-loop limit
        assert _code(lambda: sup.restart_now("broker-1", "again")) == P.NODE_GIVEN_UP
        names = {P.error_name(c) for c in (P.UNKNOWN_NODE, P.NODE_GIVEN_UP, P.NODE_NOT_RUNNING)}
        assert names == {"unknown_node", "node_given_up", "node_not_running"}
    finally:
        for p in procs:
            p.kill()
            p.wait()
