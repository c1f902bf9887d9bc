"""``loom up`` / ``loom status`` / ``loom down`` as an operator runs them, on a test config.

The supervisor runs as a subprocess; a broker child is killed with SIGKILL and must come back
under a new pid that answers PING; ``loom down`` must leave no process behind. Every pid seen
is killed in teardown whatever happens.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.config import load_config, parse_config
from nodes import launcher, running_cluster
from tests.harness import ROOT, make_config, wait_until
from tests.integration.loom_up_support import loom
from tests.unit.fakes import ExitedProc

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def supervised(tmp_path: Path):  # noqa: ANN201
    """(config path, supervisor Popen, stdout path, pids seen): `loom up` in the background."""
    config_path = make_config(tmp_path, 3, extra_nodes=("gateway",),
                              overrides={"supervisor": {"restart_backoff_ms": 100, "restart_backoff_max_ms": 1000}})
    out, err = tmp_path / "up.out", tmp_path / "up.err"
    with open(out, "wb") as fo, open(err, "wb") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "nodes.cli", "up", "-c", str(config_path)], stdout=fo, stderr=fe,
                                cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1"))
    seen: set[int] = set()
    yield config_path, proc, out, seen
    for pid in [proc.pid, *seen]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=10)


def test_role_available() -> None:
    assert launcher.role_available("broker") and launcher.role_available("coordinator")
    assert not launcher.role_available("no-such-role")


def test_restart_backoff_doubles_up_to_the_cap(tmp_path: Path) -> None:
    cfg = parse_config({"cluster": {"data_dir": str(tmp_path)},
                        "nodes": {"coordinator": {"role": "coordinator", "port": 19004},
                                  "broker-1": {"role": "broker", "broker_id": 1, "port": 19001}},
                        "supervisor": {"restart_backoff_ms": 100, "restart_backoff_max_ms": 350}}, environ={})
    lines: list[str] = []
    sup = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lines.append)
    pids = iter(range(1000, 2000))

    def fake_spawn(child: launcher.Child) -> None:
        child.proc = ExitedProc(next(pids))  # type: ignore[assignment]
        child.started_ms = now
        child.restart_at_ms = None
    sup._spawn = fake_spawn  # type: ignore[method-assign]
    child = sup.children["broker-1"]
    now = 0
    fake_spawn(child)
    delays = []
    for _ in range(4):  # crash right after each start: 100, 200, 350 (cap), 350
        sup.tick(now)
        delays.append(child.restart_at_ms - now)
        now = child.restart_at_ms - 1
        sup.tick(now)
        assert child.restarts == len(delays) - 1, "restarted before its backoff ran out"
        now += 1
        sup.tick(now)
    assert delays == [100, 200, 350, 350] and child.restarts == 4
    assert any("broker-1" in ln and "restarting in 350 ms" in ln for ln in lines)
    now += launcher.STABLE_RUN_MS  # a child that ran long enough starts over at the base backoff
    sup.tick(now)
    assert child.restart_at_ms - now == 100


def test_up_restart_status_down(supervised) -> None:
    config_path, proc, out, seen = supervised
    cfg = load_config(config_path)
    wait_until(lambda: proc.poll() is None and "stop:" in out.read_text(), 40, what="the `loom up` summary")
    summary = out.read_text()
    expected_up = [n for n, c in cfg.nodes.items() if launcher.role_available(c.role)]
    for name, node in cfg.nodes.items():
        state = "up" if name in expected_up else "not available in this build"
        assert re.search(rf"^{name}\s+{node.role}\s+{node.port}\s+\S+\s+{state}", summary, re.M), summary
    key_file = Path(cfg.cluster.data_dir) / "admin.key"  # the dev admin key, made by `loom up`
    assert key_file.stat().st_mode & 0o777 == 0o600
    assert f"API key:   {key_file.read_text().strip()}  (admin; from {key_file})" in summary
    dashboard = cfg.node("gateway").dashboard_port
    assert f"dashboard: http://127.0.0.1:{dashboard}/" in summary
    assert f"gateway:   http://127.0.0.1:{cfg.node('gateway').port}/" in summary
    if "gateway" not in expected_up:
        assert "(not yet running: no gateway in this build)" in summary
        one = loom("up", "--node", "gateway", "-c", str(config_path))
        assert one.returncode == 1 and one.stderr.strip() == "loom: error: gateway: role gateway is not available in this build"

    info = json.loads(running_cluster.pid_file_path(cfg).read_text())
    assert info["pid"] == proc.pid and set(info["children"]) == set(expected_up)
    seen.update(info["children"].values())
    for name in expected_up:
        assert running_cluster.ping(cfg.node(name))["pid"] == info["children"][name]

    # kill -9 a broker: the supervisor starts a new one, which answers PING with its new pid.
    old_pid = info["children"]["broker-2"]
    os.kill(old_pid, signal.SIGKILL)

    def restarted() -> int | None:
        pid = json.loads(running_cluster.pid_file_path(cfg).read_text())["children"].get("broker-2")
        if pid and pid != old_pid:
            seen.add(pid)
            reply = running_cluster.ping(cfg.node("broker-2"))
            return pid if reply and reply["pid"] == pid else None
        return None
    new_pid = wait_until(restarted, 20, what="broker-2 to be restarted")
    assert new_pid != old_pid

    status = loom("status", "-c", str(config_path))
    assert status.returncode == 0, status.stdout + status.stderr
    for name in expected_up:
        assert re.search(rf"^{name}\s.*\bup\b", status.stdout, re.M), status.stdout
    assert re.search(rf"^broker-2\s.*\b{new_pid}\b", status.stdout, re.M), status.stdout
    assert re.search(r"^gateway\s.*not available in this build", status.stdout, re.M) or "gateway" in expected_up
    assert "under-replicated: 0, offline: 0" in status.stdout
    assert f"supervisor: pid {proc.pid}" in status.stdout

    all_pids = set(json.loads(running_cluster.pid_file_path(cfg).read_text())["children"].values())
    down = loom("down", "-c", str(config_path))
    assert down.returncode == 0, down.stderr
    assert proc.wait(timeout=30) == 0
    assert not any(launcher.pid_alive(p) for p in all_pids | {proc.pid})
    assert not running_cluster.pid_file_path(cfg).exists()

    after = loom("status", "-c", str(config_path), timeout_s=20)
    assert after.returncode == 1 and re.search(r"^broker-1\s.*\bdown\b", after.stdout, re.M)
    again = loom("down", "-c", str(config_path))
    assert again.returncode == 1 and again.stderr.startswith("loom: error: no running cluster found")
