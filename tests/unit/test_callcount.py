"""``fabric.callcount``: a process started with ``LOOM_CALLCOUNT`` counts its Python calls from
SIGUSR1 to SIGUSR2 and writes them where the variable says; without it nothing is installed.
And ``loom bench rtt --calls`` is refused without ``--loom`` or beside ``--hops``."""

from __future__ import annotations

import os
import pstats
import subprocess
import sys
from pathlib import Path

import pytest

from bench import rtt
from fabric import callcount

SOURCE_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import os, signal
from fabric import callcount
installed = callcount.install()
def counted():
    pass
counted()  # before SIGUSR1: not counted
os.kill(os.getpid(), callcount.START_SIGNAL)
for _ in range(1000):
    counted()
os.kill(os.getpid(), callcount.STOP_SIGNAL)
counted()  # after SIGUSR2: not counted
print(installed)
"""


def _run(tmp_path: Path, env_value: str | None) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != callcount.ENV}
    if env_value is not None:
        env[callcount.ENV] = env_value
    env["PYTHONPATH"] = str(SOURCE_ROOT)
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    return done.returncode, done.stdout.strip()


def test_the_calls_between_the_two_signals_are_counted_and_written(tmp_path: Path) -> None:
    assert _run(tmp_path, str(tmp_path)) == (0, "True")
    [written] = tmp_path.glob(f"*{callcount.SUFFIX}")
    assert (tmp_path / f"{written.stem}{callcount.STARTED_SUFFIX}").exists()
    stats = pstats.Stats(str(written)).stats  # type: ignore[attr-defined]
    assert [v[1] for f, v in stats.items() if f[2] == "counted"] == [1000]


def test_without_the_variable_nothing_is_installed(tmp_path: Path) -> None:
    assert _run(tmp_path, None) == (-callcount.START_SIGNAL, "")  # SIGUSR1's default action ends it
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv", [["--calls"], ["--loom", "--hops", "--calls"]])
def test_calls_needs_loom_and_no_hops(argv: list[str], capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        rtt.main(argv)
    assert e.value.code == 2 and "--calls needs --loom" in capsys.readouterr().err
