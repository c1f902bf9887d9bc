"""``python -m nodes.run``: a node whose port is taken fails with one line and its own exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
