"""The supervisor watches the monitor (nodes/monitor_watch.py), real processes under ``loom up``:
a monitor that answers PING is left alone; a SIGSTOPped one -- alive, silent -- is SIGKILLed
and restarted like a crashed node, within a bound computed from the config, and ``loom status``
counts that restart as any node's. Nobody restarted a hung monitor before, and ``loom status``
showed it down with no pid; once it was, its RESTARTS stayed 0."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Iterator

import pytest

from fabric.client.monitor import MonitorClient
from fabric.errors import CodedError
from nodes import launcher, running_cluster
from nodes.monitor_watch import silent_after_ms
from tests.harness import make_config, wait_until
from tests.integration.loom_up_support import Up, loom
from tests.integration.monitor_support import monitor_options

pytestmark = pytest.mark.timeout(90)
HEALTH_MS, UNRESPONSIVE_MS, BACKOFF_MS = 300, 2000, 100
NODE_START_S = 15.0  # a new Python node process answering PING, on a busy machine


@pytest.fixture
def up(tmp_path: Path) -> Iterator[Up]:
    # the monitor judges quickly (and only reports: no restarts of other nodes on a busy machine)
    options = monitor_options(1, monitor={"health_interval_ms": HEALTH_MS, "unresponsive_after_ms": UNRESPONSIVE_MS,
                                          "restart_unresponsive": False},
                              supervisor={"restart_backoff_ms": BACKOFF_MS})
    with open(tmp_path / "up.out", "wb") as out:
        started = Up(make_config(tmp_path, **options), out, subprocess.STDOUT)
    try:
        started.wait_all_up()
        yield started
    finally:
        started.kill_all()


def monitor_pid(up: Up) -> int | None:
    return (running_cluster.read_pid_file(up.config) or {}).get("children", {}).get("monitor")


def answers(up: Up, pid: int | None) -> bool:
    reply = running_cluster.ping(up.config.node("monitor"))
    return pid is not None and reply is not None and reply.get("pid") == pid


def restarts_shown(up: Up, node: str) -> int | None:
    """The RESTARTS the monitor's status shows for ``node`` (None: it does not answer)."""
    with MonitorClient(up.config.node("monitor").endpoint, timeout_ms=1000) as client:
        try:
            rows = client.status()["nodes"]
        except CodedError:
            return None
    return next(n["restarts"] for n in rows if n["node"] == node)


def test_a_hung_monitor_is_restarted_and_an_answering_one_never(up: Up, tmp_path: Path) -> None:
    silent_ms = silent_after_ms(up.config)
    assert silent_ms == UNRESPONSIVE_MS
    first = monitor_pid(up)
    assert first is not None and answers(up, first)

    # answering for longer than the supervisor lets a silent one live: never restarted
    held_until = time.monotonic() + 2 * silent_ms / 1000
    while time.monotonic() < held_until:
        assert monitor_pid(up) == first, "a monitor that answers was restarted"
        time.sleep(0.1)  # polling a condition that must hold throughout (not waiting on one)
    assert "does not answer" not in (tmp_path / "up.out").read_text()

    os.kill(first, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        # silent past the limit (counted from its last answer, at most one PING interval before
        # the SIGSTOP), seen within a loop pass, killed, restarted after the backoff, answering
        bound_s = (silent_ms + HEALTH_MS + launcher.LOOP_INTERVAL_MS + BACKOFF_MS) / 1000 + NODE_START_S
        wait_until(lambda: (pid := monitor_pid(up)) not in (None, first) and answers(up, pid), bound_s,
                   what="the supervisor to replace the hung monitor")
    finally:
        if launcher.pid_alive(first):
            os.kill(first, signal.SIGCONT)
    assert time.monotonic() - stopped_at >= (silent_ms - HEALTH_MS - launcher.LOOP_INTERVAL_MS) / 1000, \
        "killed before it was silent for the limit"
    wait_until(lambda: not launcher.pid_alive(first), 10, what="the hung monitor gone")
    log = (tmp_path / "up.out").read_text()
    assert f"monitor (pid {first}) is alive but does not answer" in log, log
    assert "has not answered PING" in log, log
    # counted like any node's restart: the monitor learns its own count from the supervisor
    wait_until(lambda: restarts_shown(up, "monitor") == 1, 10, what="the monitor to show its restart")
    status = loom("status", "-c", str(up.config_path))
    row = next(line.split() for line in status.stdout.splitlines() if line.startswith("monitor "))
    assert row[5] == "1", status.stdout  # NODE ROLE ENDPOINT STATE PID RESTARTS
