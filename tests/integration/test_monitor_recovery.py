"""Automatic recovery with the supervisor (`loom up`) and the monitor, real processes:
a SIGKILLed broker is reported down, restarted, and the alert resolves; a SIGSTOPped consumer
service is found unresponsive and restarted through the supervisor's control socket; a broker
that cannot start is given up on after the crash-loop limit while the rest keeps serving, and
`loom restart` starts it again once fixed."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from typing import Iterator

import pytest

from fabric.client import Admin, Consumer, Producer
from fabric.client.monitor import MonitorClient
from fabric.config import LoomConfig, load_config
from nodes import launcher, running_cluster
from tests.harness import ROOT, wait_until
from tests.integration.loom_up_support import loom
from tests.integration.monitor_support import alert, monitor_config

pytestmark = [pytest.mark.timeout(180), pytest.mark.slow]
HEARTBEAT_MS, SESSION_MS, HEALTH_MS = 200, 3000, 300


class Supervised:
    def __init__(self, cfg: LoomConfig, proc: subprocess.Popen) -> None:
        self.cfg, self.proc = cfg, proc
        self.monitor = MonitorClient(cfg.node("monitor").endpoint)
        self.seen: set[int] = set()

    def pid(self, name: str) -> int | None:
        pid = json.loads(running_cluster.pid_file_path(self.cfg).read_text())["children"].get(name)
        if pid:
            self.seen.add(pid)
        return pid

    def events(self, **match: object) -> list[dict]:
        return [e for e in self.monitor.events()["events"] if all(e.get(k) == v for k, v in match.items())]


@pytest.fixture(scope="module")
def sup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Supervised]:
    tmp = tmp_path_factory.mktemp("recovery")
    path, _ = monitor_config(
        tmp, 3, extra_nodes=("consumer-1",),
        monitor={"health_interval_ms": HEALTH_MS, "restart_backoff_ms": 5000, "slow_response_ms": 5000,
                 "alerts": {"under_replicated": {"for_ms": 0}}},
        liveness={"heartbeat_interval_ms": HEARTBEAT_MS, "session_timeout_ms": SESSION_MS},
        supervisor={"restart_backoff_ms": 100, "restart_backoff_max_ms": 400, "crash_loop_restarts_max": 3,
                    "crash_loop_window_ms": 30_000})
    out = open(tmp / "up.out", "wb")  # noqa: SIM115 - closed in teardown
    proc = subprocess.Popen([sys.executable, "-m", "nodes.cli", "up", "-c", str(path)], stdout=out, stderr=subprocess.STDOUT,
                            cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"))
    s = Supervised(load_config(path), proc)
    try:
        wait_until(lambda: b"stop:" in (tmp / "up.out").read_bytes(), 60, what="`loom up` to start every node")
        for name in s.cfg.nodes:
            s.pid(name)
        wait_until(lambda: s.monitor.status()["cluster"]["state"] == "healthy", 20, what="a healthy cluster")
        admin = Admin(",".join(s.cfg.bootstrap()).replace("tcp://", ""))
        admin.create_topic("kept", partitions=2)
        wait_until(lambda: s.monitor.status()["cluster"].get("under_replicated") == 0
                   and s.monitor.status()["cluster"].get("partitions", 0) >= 2, 20, what="topic kept in sync")
        admin.close()
        yield s
    finally:
        s.monitor.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        for pid in [proc.pid, *s.seen]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)
        out.close()


def test_killed_broker_alert_fires_restart_resolves(sup: Supervised) -> None:
    old = sup.pid("broker-2")
    t0 = time.time()
    os.kill(old, signal.SIGKILL)  # type: ignore[arg-type]
    fired = wait_until(lambda: alert(sup.monitor, "node_down", "broker-2", "firing"), 15, what="node-down alert")
    assert fired["fired_ms"] / 1000 - t0 <= (SESSION_MS + 2 * HEARTBEAT_MS + HEALTH_MS) / 1000
    wait_until(lambda: (sup.pid("broker-2") or old) != old, 15, what="the supervisor to restart broker-2")
    wait_until(lambda: alert(sup.monitor, "node_down", "broker-2", "resolved"), 20, what="the alert to resolve")
    wait_until(lambda: sup.monitor.status()["cluster"]["under_replicated"] == 0, 30, what="ISR back to full")
    assert sup.events(kind="recovery", action="exited", node="broker-2", pid=old)
    assert sup.events(kind="recovery", action="restarted", node="broker-2")


def test_status_and_alerts_show_the_monitors_view(sup: Supervised) -> None:
    status = loom("status", "-c", sup.cfg.source)
    assert status.returncode == 0, status.stdout + status.stderr  # 1 if a node were down or unresponsive
    assert "view of the monitor" in status.stdout and "\ncluster: " in status.stdout, status.stdout
    for name in ("broker-1", "broker-2", "consumer-1", "coordinator", "monitor"):
        row = re.search(rf"^{name}\s+\S+\s+\S+\s+(\S+)", status.stdout, re.M)
        assert row and row.group(1) in ("healthy", "degraded"), status.stdout
    # what only a broker tells (nodes/cli_cluster.py _print_broker_notes): its storage engine
    engines = re.search(r"^engines: (.*)$", status.stdout, re.M)
    assert engines and "broker-1 segment" in engines.group(1) and "broker-2 segment" in engines.group(1), status.stdout
    leads = re.search(r"^leads: (.*)$", status.stdout, re.M)  # the partitions each broker leads
    assert leads and re.search(r"broker-1 \d+", leads.group(1)) and re.search(r"broker-2 \d+", leads.group(1)), \
        status.stdout
    alerts = loom("alerts", "--all", "-c", sup.cfg.source)
    assert alerts.returncode == 0 and "node_down" in alerts.stdout and "resolved" in alerts.stdout, alerts.stdout
    events = loom("alerts", "--events", "--json", "-c", sup.cfg.source)
    rows = [json.loads(line) for line in events.stdout.splitlines()]
    assert any(r.get("action") == "restarted" and r.get("node") == "broker-2" for r in rows)


def test_monitor_restart_keeps_the_alert_history(sup: Supervised) -> None:
    resolved_before = [a for a in sup.monitor.alerts(True) if a["state"] == "resolved"]
    restarts_before = sup.events(action="restarted", node="broker-2")
    old = sup.pid("monitor")
    os.kill(old, signal.SIGKILL)  # type: ignore[arg-type]
    wait_until(lambda: (sup.pid("monitor") or old) != old, 15, what="the supervisor to restart the monitor")
    after = wait_until(lambda: sup.monitor.alerts(True), 15, what="the new monitor to answer")
    assert [a for a in after if a["state"] == "resolved"][:len(resolved_before)] == resolved_before
    wait_until(lambda: sup.monitor.status()["supervisor"] and sup.monitor.status()["checks"] >= 3, 10,
               what="the new monitor to have read the supervisor's events")
    # the supervisor's events it had recorded are kept, and not recorded twice
    assert sup.events(action="restarted", node="broker-2") == restarts_before
    assert sup.events(action="restarted", node="monitor", source="supervisor")


def test_stopped_consumer_service_is_restarted_by_the_monitor(sup: Supervised) -> None:
    old = sup.pid("consumer-1")
    assert old is not None
    os.kill(old, signal.SIGSTOP)
    try:
        wait_until(lambda: alert(sup.monitor, "node_unresponsive", "consumer-1", "firing"), 15, what="unresponsive alert")
        wait_until(lambda: sup.events(action="restart_requested", node="consumer-1"), 10, what="a restart request")
        wait_until(lambda: sup.events(action="restarted", node="consumer-1"), 15, what="the supervisor's restart")
        wait_until(lambda: not launcher.pid_alive(old), 10, what="the stopped process to be gone")
        wait_until(lambda: alert(sup.monitor, "node_unresponsive", "consumer-1", "resolved"), 20, what="alert resolved")
        restarted = sup.events(action="restarted", node="consumer-1")[-1]
        assert restarted["old_pid"] == old and "unresponsive" in restarted["reason"]
        assert sup.pid("consumer-1") != old
    finally:
        try:
            os.kill(old, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_crash_looping_broker_is_given_up_and_the_rest_serves(sup: Supervised) -> None:
    data_dir = sup.cfg.data_dir_for("broker-3")
    shutil.move(str(data_dir), str(data_dir) + ".moved")
    data_dir.write_text("not a directory: the broker cannot open its logs\n")
    os.kill(sup.pid("broker-3"), signal.SIGKILL)  # type: ignore[arg-type]
    a = wait_until(lambda: alert(sup.monitor, "crash_loop", "broker-3", "firing"), 30, what="crash-loop alert")
    assert "gave up" in a["message"]
    status = sup.monitor.status()
    assert next(n for n in status["nodes"] if n["node"] == "broker-3")["state"] == "down"
    assert sup.events(action="gave_up", node="broker-3")
    bootstrap = ",".join(sup.cfg.bootstrap()).replace("tcp://", "")
    producer = Producer(bootstrap, acks=-1)
    for i in range(20):
        producer.send("kept", b"after-%d" % i, partition=i % 2)
    producer.flush()
    producer.close()
    consumer = Consumer(bootstrap)
    consumer.assign([("kept", 0), ("kept", 1)])
    consumer.seek_to_beginning()
    got: list = []
    wait_until(lambda: got.extend(consumer.poll(500)) or len(got) >= 20, 20, what="records from the two brokers left")
    consumer.close()


def test_a_given_up_broker_is_started_again_by_loom_restart_once_fixed(sup: Supervised) -> None:
    """Once the supervisor gave up on a node, only a whole-cluster `loom down` and `up` brought
    it back; `loom restart NODE` starts it, its crash count set back, and the monitor's
    crash-loop alert resolves. A running node is killed and started again."""
    if not alert(sup.monitor, "crash_loop", "broker-3", "firing"):
        test_crash_looping_broker_is_given_up_and_the_rest_serves(sup)  # run alone: give it up first
    data_dir = sup.cfg.data_dir_for("broker-3")
    data_dir.unlink()  # the cause fixed: its data directory back
    shutil.move(str(data_dir) + ".moved", str(data_dir))
    r = loom("restart", "broker-3", "-c", str(sup.cfg.source))
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.fullmatch(r"started broker-3: pid (\d+)\n", r.stdout)
    assert m, r.stdout
    sup.seen.add(int(m.group(1)))
    wait_until(lambda: alert(sup.monitor, "crash_loop", "broker-3", "resolved"), 30, what="the crash-loop alert resolved")
    wait_until(lambda: next(n for n in sup.monitor.status()["nodes"] if n["node"] == "broker-3")["state"] == "healthy",
               30, what="broker-3 healthy again")
    assert sup.events(action="started", node="broker-3")
    r = loom("restart", "broker-3", "-c", str(sup.cfg.source))
    again = re.fullmatch(r"restarted broker-3: pid (\d+)\n", r.stdout)
    assert r.returncode == 0 and again and int(again.group(1)) != int(m.group(1)), r.stdout + r.stderr
    sup.seen.add(int(again.group(1)))
    r = loom("restart", "nobody", "-c", str(sup.cfg.source))
    assert r.returncode != 0 and "not supervised" in r.stderr, r.stdout + r.stderr
