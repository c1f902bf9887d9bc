"""``python -m nodes.run``: a node whose port is taken fails with one line and its own exit code."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from fabric.config import load_config
from nodes.run import EXIT_BIND_ERROR
from tests.harness import ROOT, make_config


def test_node_with_its_port_taken_exits_with_one_line(tmp_path: Path) -> None:
    config_path = make_config(tmp_path, 1)
    cfg = load_config(config_path, environ={})
    blocker = zmq.Context.instance().socket(zmq.ROUTER)
    blocker.bind(cfg.node("coordinator").endpoint)
    try:
        run = subprocess.run([sys.executable, "-m", "nodes.run", "-c", str(config_path), "--node", "coordinator"],
                             capture_output=True, text=True, cwd=str(ROOT), timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        blocker.close(0)
    assert run.returncode == EXIT_BIND_ERROR, run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("loom:")]
    assert "Traceback" not in run.stderr and len(errors) == 1, run.stderr
    assert f"127.0.0.1:{cfg.node('coordinator').port}" in errors[0] and "in use" in errors[0]


@pytest.mark.parametrize("which", ["dashboard_port", "control_port"])
def test_gateway_with_a_port_taken_exits_with_one_line_naming_it(tmp_path: Path, which: str) -> None:
    # a taken HTTP port: gunicorn tried the bind five times, a second apart, and then said "Can't
    # connect to ('127.0.0.1', 8080)" (exit 1), which `make up` with 8080 taken printed as the
    # reason; a taken control port: the worker failed after the fork with a traceback
    config_path = make_config(tmp_path, 1, extra_nodes=("gateway",))
    port = getattr(load_config(config_path, environ={}).node("gateway"), which)
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gunicorn binds
    blocker.bind(("127.0.0.1", port))
    blocker.listen()
    try:
        run = subprocess.run([sys.executable, "-m", "nodes.run", "-c", str(config_path), "--node", "gateway"],
                             capture_output=True, text=True, cwd=str(ROOT), timeout=60,
                             env=dict(os.environ, PYTHONPATH=str(ROOT)))
    finally:
        blocker.close()
    assert run.returncode == EXIT_BIND_ERROR, run.stderr
    errors = [ln for ln in run.stderr.splitlines() if ln.startswith("loom:")]
    assert "Traceback" not in run.stderr and len(errors) == 1, run.stderr
    assert f"{which} {port}" in errors[0] and "in use" in errors[0], errors[0]
