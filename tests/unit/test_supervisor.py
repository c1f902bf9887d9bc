"""The supervisor: no restart of a node that exits with a configuration error, a restart (with
the reason) of one that crashed, one supervisor per data dir (a lock, not just a pid file), and
``loom down`` never signals an unrelated process that merely mentions "loom"."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from fabric.config import parse_config
from fabric.errors import FabricError
from nodes import launcher, running_cluster


class _ExitedProc:
    def __init__(self, pid: int, returncode: int) -> None:
        self.pid = pid
        self.returncode = returncode

    def poll(self) -> int:
        return self.returncode


def _two_node_config(tmp_path: Path):  # noqa: ANN202
    return parse_config({"cluster": {"data_dir": str(tmp_path)},
                         "nodes": {"coordinator": {"role": "coordinator", "port": 19004},
                                   "broker-1": {"role": "broker", "broker_id": 1, "port": 19001}},
                         "supervisor": {"restart_backoff_ms": 100}}, str(tmp_path / "c.yaml"), environ={})


def _exited(tmp_path: Path, log_text: str, returncode: int) -> tuple[launcher.Supervisor, list[str]]:
    """A supervisor whose broker-1 has just exited with ``returncode``, its log ending in ``log_text``."""
    cfg = _two_node_config(tmp_path)
    lines: list[str] = []
    sup = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lines.append)
    log = running_cluster.log_path(cfg, "broker-1")
    log.parent.mkdir(parents=True)
    log.write_text(log_text)
    sup.children["broker-1"].proc = _ExitedProc(4242, returncode)  # type: ignore[assignment]
    sup.tick(1000)
    return sup, lines


def test_supervisor_does_not_restart_a_node_with_a_config_error(tmp_path: Path) -> None:
    sup, lines = _exited(tmp_path, "loom: c.yaml: storage.engine: no engine named 'nope'\n", launcher.EXIT_CONFIG_ERROR)
    child = sup.children["broker-1"]
    sup.tick(100_000)
    assert child.restart_at_ms is None and child.restarts == 0 and child.proc is None
    assert any("broker-1" in ln and "not restarting" in ln and "no engine named 'nope'" in ln for ln in lines), lines


def test_supervisor_says_why_a_crashed_node_died(tmp_path: Path) -> None:
    _, lines = _exited(tmp_path, "Traceback (most recent call last):\nOSError: [Errno 28] No space left on device\n", 1)
    assert any("restarting in 100 ms" in ln and "No space left on device" in ln for ln in lines), lines


def test_a_second_supervisor_of_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    cfg = _two_node_config(tmp_path)
    first = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lambda line: None)
    second = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lambda line: None)
    try:
        first.check_not_running()  # takes the data dir's lock (no pid file written yet)
        with pytest.raises(FabricError, match="already running"):
            second.check_not_running()
    finally:
        first.release_lock()
        second.release_lock()
    second.check_not_running()  # free again once the first lets go
    second.release_lock()


def test_the_refusal_names_the_config_to_stop(tmp_path: Path) -> None:
    """`loom up -c FILE` on a running cluster said "run `loom down` first": that `loom down`
    reads the default config (or $LOOM_CONFIG), not FILE, so it stopped another cluster or none."""
    cfg = _two_node_config(tmp_path)
    first = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lambda line: None)
    second = launcher.Supervisor(cfg, str(tmp_path / "c.yaml"), emit=lambda line: None)
    try:
        first.check_not_running()
        with pytest.raises(FabricError) as refused:
            second.check_not_running()
    finally:
        first.release_lock()
        second.release_lock()
    assert f"run `loom down -c {tmp_path / 'c.yaml'}` first" in str(refused.value)


def test_an_unrelated_process_that_mentions_loom_is_not_ours(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(tmp_path / "loom-notes.txt")])
    try:
        assert launcher.pid_alive(proc.pid)
        assert not launcher.is_loom_process(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_the_cli_run_as_python_m_nodes_is_ours(tmp_path: Path) -> None:
    """`python -m nodes up` (nodes/__main__.py: the loom command) was not taken for Loom: `loom
    down` found its supervisor's pid not ours, SIGTERMed the nodes as left behind, and the
    supervisor, still running, started every one of them again."""
    fake = tmp_path / "nodes"  # a package named nodes whose __main__ waits: the command line is the real one's
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    ready = tmp_path / "ready"
    (fake / "__main__.py").write_text(f"import pathlib, time\npathlib.Path({str(ready)!r}).touch()\ntime.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-m", "nodes", "up", "-c", "config/cluster.yaml"], cwd=tmp_path)
    try:
        # until it runs, the child's command line may still be the forking test's
        deadline = time.monotonic() + 10
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert launcher.pid_alive(proc.pid)
        assert launcher.is_loom_process(proc.pid)
    finally:
        proc.kill()
        proc.wait(timeout=10)


def test_supervisor_restarts_a_node_stopped_by_a_programmer_error(tmp_path: Path) -> None:
    from nodes.run import EXIT_PROGRAMMER_ERROR
    sup, lines = _exited(tmp_path, "CRITICAL loom.run: broker-1 stopped by a programmer error\nTypeError: bad call\n",
                         EXIT_PROGRAMMER_ERROR)
    assert sup.children["broker-1"].restart_at_ms is not None
    assert any("restarting in 100 ms" in ln and "TypeError" in ln for ln in lines), lines
