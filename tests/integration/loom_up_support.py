"""``loom up`` as an operator runs it, for tests: the supervisor in the background on a test
config, the other ``loom`` commands as subprocesses, and a teardown that kills by pid the
supervisor, every node it reported and whatever runs below them (the gateway's workers)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import IO

from bench.stats import kill_tree
from fabric.config import load_config
from nodes import launcher, running_cluster
from tests.harness import ROOT, wait_until

LOOM_TIMEOUT_S = 40.0
STOP_TIMEOUT_S = 30


def loom(*args: str, timeout_s: float = LOOM_TIMEOUT_S) -> subprocess.CompletedProcess:
    """One ``loom`` command, run from the source tree; its output as text."""
    return subprocess.run([sys.executable, "-m", "nodes.cli", *args], capture_output=True, cwd=str(ROOT),
                          env=dict(os.environ, PYTHONPATH=str(ROOT)), timeout=timeout_s, text=True)


class Up:
    """``loom up -c CONFIG`` in the background with the given stdout/stderr."""

    def __init__(self, config_path: Path, stdout: int | IO, stderr: int | IO) -> None:
        self.config_path = config_path
        self.config = load_config(config_path, environ={})
        self.proc = subprocess.Popen([sys.executable, "-m", "nodes.cli", "up", "-c", str(config_path)],
                                     stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, cwd=str(ROOT),
                                     env=dict(os.environ, PYTHONPATH=str(ROOT)))
        self.children: dict[str, int] = {}

    def wait_all_up(self, timeout_s: float = 30) -> None:
        """Until the pid file names a child for every node and each answers PING with that pid."""
        def up() -> bool:
            info = running_cluster.read_pid_file(self.config) or {}
            kids = info.get("children") or {}
            if info.get("pid") != self.proc.pid or set(kids) != set(self.config.nodes):
                return False
            for name, pid in kids.items():
                reply = running_cluster.ping(self.config.nodes[name])
                if not reply or reply.get("pid") != pid:
                    return False
            self.children = dict(kids)
            return True
        wait_until(up, timeout_s, what="every node up under the supervisor")

    def assert_stops_everything(self) -> int:
        """The supervisor exits and leaves no node running; returns its exit code."""
        code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        wait_until(lambda: not any(launcher.pid_alive(p) for p in self.children.values()), 5,
                   what="no node left running after the supervisor exited")
        return code

    def kill_all(self) -> None:
        """SIGKILL the supervisor, every node it ran (those it reports now too) and the processes
        below them (the gateway's workers)."""
        info = running_cluster.read_pid_file(self.config) or {}
        for pid in [self.proc.pid, *self.children.values(), *(info.get("children") or {}).values()]:
            kill_tree(pid)  # a node outlives a killed supervisor (its own session): each by its pid
        self.proc.wait(timeout=10)
