"""The ``loom up`` supervisor never orphans its nodes: SIGHUP (the terminal closed) and SIGTERM
stop every node as Ctrl-C does, and a closed stdout (``loom up | head``) or stderr does not
kill it. Real processes: the supervisor and one child per node; every pid seen is killed in
teardown whatever happens."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Iterator

import pytest

from nodes import running_cluster
from tests.harness import make_config, wait_until
from tests.integration.loom_up_support import Up

pytestmark = pytest.mark.timeout(90)

@pytest.fixture
def started(tmp_path: Path) -> Iterator[list[Up]]:
    ups: list[Up] = []
    yield ups
    for up in ups:
        up.kill_all()


@pytest.mark.parametrize("sig", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_hangup_or_terminate_stops_every_node(tmp_path: Path, started: list[Up], sig: int) -> None:
    with open(tmp_path / "up.out", "wb") as out, open(tmp_path / "up.err", "wb") as err:
        up = Up(make_config(tmp_path, 1), out, err)
    started.append(up)
    up.wait_all_up()
    wait_until(lambda: "stop:" in (tmp_path / "up.out").read_text(), 10, what="the summary (start-up done)")
    up.proc.send_signal(sig)
    assert up.assert_stops_everything() == 0
    assert "Traceback" not in (tmp_path / "up.err").read_text()


def test_a_closed_stdout_does_not_kill_the_supervisor(tmp_path: Path, started: list[Up]) -> None:
    with open(tmp_path / "up.err", "wb") as err:
        up = Up(make_config(tmp_path, 1), subprocess.PIPE, err)
    started.append(up)
    assert up.proc.stdout is not None
    up.proc.stdout.close()  # `| head` that already left: every write to stdout fails (EPIPE)
    up.wait_all_up()
    # the summary table went to the closed pipe; the supervisor still supervises: a killed
    # node comes back under a new pid
    name, pid = next(iter(up.children.items()))
    os.kill(pid, signal.SIGKILL)

    def restarted() -> bool:
        new = (running_cluster.read_pid_file(up.config) or {}).get("children", {}).get(name)
        reply = running_cluster.ping(up.config.nodes[name]) if new and new != pid else None
        if reply and reply.get("pid") == new:
            up.children[name] = new
            return True
        return False
    wait_until(restarted, 30, what=f"{name} restarted by a supervisor whose stdout is closed")
    assert up.proc.poll() is None
    up.proc.send_signal(signal.SIGINT)
    assert up.assert_stops_everything() == 0
    assert "Traceback" not in (tmp_path / "up.err").read_text()


def test_a_closed_stderr_does_not_kill_the_supervisor(tmp_path: Path, started: list[Up]) -> None:
    with open(tmp_path / "up.out", "wb") as out:
        up = Up(make_config(tmp_path, 1), out, subprocess.PIPE)
    started.append(up)
    assert up.proc.stderr is not None
    up.proc.stderr.close()  # the terminal is gone: every progress line fails
    up.wait_all_up()
    name, pid = next(iter(up.children.items()))
    os.kill(pid, signal.SIGKILL)  # the supervisor reports the exit and the restart on stderr
    wait_until(lambda: (running_cluster.read_pid_file(up.config) or {}).get("children", {}).get(name) not in (None, pid), 30,
               what=f"{name} restarted by a supervisor whose stderr is closed")
    up.children[name] = json.loads(running_cluster.pid_file_path(up.config).read_text())["children"][name]
    assert up.proc.poll() is None
    up.proc.send_signal(signal.SIGHUP)
    assert up.assert_stops_everything() == 0
