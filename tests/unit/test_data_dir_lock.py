"""One process per node data directory (Kafka's ``.lock`` in every log directory): a second
node process given a directory another one is using -- a second config naming the same
``data_dir``, a node started by hand beside ``loom up`` -- exits with one line and its own
exit code before it opens anything there, and the first keeps running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fabric.config import load_config
from nodes.data_dir_lock import LOCK_FILE_NAME, DataDirInUse, lock_data_dir, unlock_data_dir
from nodes.run import EXIT_DATA_DIR_IN_USE
from tests.harness import ROOT, make_config, wait_until


def _run(config_path: Path, node: str, **kw: object) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "nodes.run", "-c", str(config_path), "--node", node],
                            stdout=subprocess.DEVNULL, cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)),
                            **kw)


@pytest.mark.parametrize("node", ["coordinator", "broker-1"])
def test_second_process_on_a_data_dir_in_use_exits_and_the_first_runs_on(tmp_path: Path, node: str) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first_config = make_config(tmp_path / "a", 1)
    data_dir = load_config(first_config, environ={}).data_dir_for(node)
    # another config (other ports) naming the same cluster data directory
    second_config = make_config(tmp_path / "b", 1, overrides={"cluster": {"data_dir": str(tmp_path / "a" / "data")}})
    assert load_config(second_config, environ={}).data_dir_for(node) == data_dir
    first = _run(first_config, node, stderr=subprocess.DEVNULL)
    second: subprocess.Popen | None = None
    try:
        lock_file = data_dir / LOCK_FILE_NAME
        wait_until(lambda: lock_file.exists() and lock_file.read_text().strip() == str(first.pid), timeout_s=30, what=f"{node} holding its data directory")
        second = _run(second_config, node, stderr=subprocess.PIPE, text=True)
        _, stderr = second.communicate(timeout=30)
        assert second.returncode == EXIT_DATA_DIR_IN_USE, stderr
        errors = [ln for ln in stderr.splitlines() if ln.startswith("loom:")]
        assert "Traceback" not in stderr and len(errors) == 1, stderr
        assert str(data_dir) in errors[0] and f"pid {first.pid}" in errors[0], errors[0]
        assert first.poll() is None, "the first process stopped"
        assert lock_file.read_text().strip() == str(first.pid)
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)


def test_lock_is_free_again_once_its_holder_exits(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c",
                               "import sys; from pathlib import Path; from nodes.data_dir_lock import lock_data_dir; "
                               "lock_data_dir(Path(sys.argv[1])); print('locked', flush=True); sys.stdin.read()",
                               str(tmp_path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                              cwd=str(ROOT), env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DataDirInUse) as refused:
            lock_data_dir(tmp_path)
        assert refused.value.pid == holder.pid and str(tmp_path) in str(refused.value)
    finally:
        holder.kill()
        holder.wait(timeout=30)
    fd = lock_data_dir(tmp_path)  # a killed holder's lock went with it
    try:
        assert (tmp_path / LOCK_FILE_NAME).read_text().strip() == str(os.getpid())
    finally:
        unlock_data_dir(fd)
