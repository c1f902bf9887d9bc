"""A node raises its soft open-files limit (RLIMIT_NOFILE) to the hard limit, at most
``OPEN_FILES_WANTED``: a broker with many partitions holds more descriptors than a soft limit
of 1,024 allows. Checked in a child process started with a low soft limit (the limit is
process-wide)."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

from nodes.run import OPEN_FILES_WANTED
from tests.harness import ROOT

CHILD = """
import resource
from nodes.run import raise_open_files_limit
print(raise_open_files_limit(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])
"""


def _child_with_soft_limit(soft: int) -> str:
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    run = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, cwd=str(ROOT), timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), preexec_fn=lower)
    assert run.returncode == 0, run.stderr
    return run.stdout.split()[-1]


def test_a_low_soft_limit_is_raised_to_the_hard_limit_or_the_wanted_count() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    assert int(_child_with_soft_limit(256)) == want


def test_a_soft_limit_already_high_enough_is_left_alone() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    want = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    assert int(_child_with_soft_limit(want)) == want
