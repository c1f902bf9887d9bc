"""What the gateway does after a bug in a request (tests/unit/test_gateway_programmer_errors.py:
answered 500, then the worker stops itself with SIGTERM): the worker stops gracefully and
gunicorn's master starts a fresh one that serves again -- the gateway node itself (the process
the supervisor watches) keeps running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import requests

from tests.gateway_client import GATEWAY_NODES, gateway_overrides
from tests.harness import Cluster, make_config, wait_until


def _workers(master_pid: int) -> set[int]:
    try:
        return set(map(int, Path(f"/proc/{master_pid}/task/{master_pid}/children").read_text().split()))
    except OSError:
        return set()


def _health(port: int) -> bool:
    try:
        return requests.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


def test_a_worker_stopped_by_a_bug_is_replaced_and_the_gateway_serves_again(tmp_path: Path) -> None:
    c = Cluster(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES, overrides=gateway_overrides()))
    try:
        c.start()
        port = c.raw["nodes"]["gateway"]["port"]
        master = c.procs["gateway"].pid
        wait_until(lambda: _health(port), 20, what="the gateway answers")
        (worker,) = wait_until(lambda: _workers(master), 10, what="the gateway's worker")
        os.kill(worker, signal.SIGTERM)  # what gateway.stop_worker does in the worker after a bug
        fresh = wait_until(lambda: _workers(master) - {worker}, 30, what="a fresh worker")
        assert worker not in fresh
        wait_until(lambda: _health(port), 30, what="the gateway answers again")
        assert c.procs["gateway"].poll() is None, "the gateway node itself stopped"
    finally:
        c.stop_all()
