"""`loom down` after the supervisor died killed a node's process group only when the node's own
process was still alive. When the node's process died too (the OOM killer took the supervisor
and a gateway's gunicorn master), its forked worker lived on in the group, holding the gateway's
ports: `loom down` said no cluster runs, removed the pid file, and left it. It now kills what is
left of the group -- only processes whose environment names this cluster (a stale pid file's
pid may lead someone else's group since)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nodes import processes, running_cluster
from tests.unit.fakes import small_cluster_config
from tests.unit.test_supervisor_process_groups import _gone


def _wait_gone_fast(pid: int) -> bool:
    deadline = time.monotonic() + 2.0
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True

NODE = ("import os, sys, time\npid = os.fork()\n"
        "if pid == 0:\n    time.sleep(60)\n    os._exit(0)\nprint(pid, flush=True)\ntime.sleep(60)\n")


def test_loom_down_ends_the_group_of_a_node_whose_own_process_is_gone(tmp_path: Path) -> None:
    cfg = small_cluster_config(tmp_path)
    node = subprocess.Popen([sys.executable, "-c", NODE, "-m", "nodes.run"], stdout=subprocess.PIPE,
                            start_new_session=True,  # as _spawn starts a node: its environment names the cluster
                            env=dict(os.environ, **{processes.SUPERVISED_ENV: str(cfg.cluster.data_dir)}))
    worker = int(node.stdout.readline())  # type: ignore[union-attr]
    try:
        node.kill()
        node.wait()   # the node's own process is gone; its worker lives on in its group
        dead_supervisor = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_supervisor.wait()
        running_cluster.pid_file_path(cfg).write_text(json.dumps({"pid": dead_supervisor.pid, "config": "c.yaml",
                                                           "children": {"gateway": node.pid}}))
        running_cluster.stop_cluster(cfg, timeout_s=1.0, emit=lambda line: None)
        assert _wait_gone_fast(worker), f"loom down left pid {worker} (group {node.pid}, whose leader died) running"
    finally:
        node.stdout.close()  # type: ignore[union-attr]
        if not _gone(worker):
            os.kill(worker, signal.SIGKILL)


def test_loom_down_on_a_stale_pid_file_kills_nothing_of_a_group_that_is_not_ours(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pid file's node pid was reused since by another group's leader (a shell job running a
    user's `loom consume`): loom down must not take that group's processes for a dead node's."""
    cfg = small_cluster_config(tmp_path)
    job = subprocess.Popen(["sh", "-c", f"{sys.executable} -c 'import time; time.sleep(30)' -m nodes.cli & wait"],
                           start_new_session=True)  # a job leader (not Loom) and its `loom` CLI
    killed: list[int] = []
    monkeypatch.setattr(running_cluster, "send_signal", lambda pid, sig: killed.append(pid))
    try:
        deadline = time.monotonic() + 10
        while not (cli := [int(p) for p in os.listdir("/proc") if p.isdigit() and p != str(job.pid)
                           and processes.process_group(int(p)) == job.pid and processes.is_loom_process(int(p))]):
            assert time.monotonic() < deadline, "the job's loom CLI did not start"
            time.sleep(0.02)
        dead_supervisor = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_supervisor.wait()
        running_cluster.pid_file_path(cfg).write_text(json.dumps({"pid": dead_supervisor.pid, "config": "c.yaml",
                                                           "children": {"gateway": job.pid}}))  # a reused pid
        assert running_cluster.stop_cluster(cfg, timeout_s=1.0, emit=lambda line: None) is False
        assert not set(killed) & set(cli), f"loom down killed {cli}, not a node of this cluster"
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
