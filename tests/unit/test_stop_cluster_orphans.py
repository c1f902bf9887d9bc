"""`loom down` after the supervisor died kills a node's process group only when the
node's own process is still alive. When the node's process died too (the OOM killer took the
supervisor and a gateway's gunicorn master), its forked worker lives on in the group, holding
the gateway's ports: `loom down` says no cluster runs, removes the pid file, and leaves it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from nodes import launcher
from tests.unit.fakes import small_cluster_config
from tests.unit.test_supervisor_process_groups import _gone


def _wait_gone_fast(pid: int) -> bool:
    import time
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
                            start_new_session=True)
    worker = int(node.stdout.readline())  # type: ignore[union-attr]
    try:
        node.kill()
        node.wait()   # the node's own process is gone; its worker lives on in its group
        dead_supervisor = subprocess.Popen([sys.executable, "-c", "pass"])
        dead_supervisor.wait()
        launcher.pid_file_path(cfg).write_text(json.dumps({"pid": dead_supervisor.pid, "config": "c.yaml",
                                                           "children": {"gateway": node.pid}}))
        launcher.stop_cluster(cfg, timeout_s=1.0, emit=lambda line: None)
        assert _wait_gone_fast(worker), f"loom down left pid {worker} (group {node.pid}, whose leader died) running"
    finally:
        node.stdout.close()  # type: ignore[union-attr]
        if not _gone(worker):
            os.kill(worker, signal.SIGKILL)
