"""A ``loom`` command whose reader went away (``loom status | head -1``) ends quietly with exit 0,
as ``loom consume … | head`` does: it printed a 52-line traceback ending in BrokenPipeError."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import ROOT

PROGRAM = """
import click
from nodes.cli import LoomGroup

@click.group(cls=LoomGroup)
def main():
    pass

@main.command()
def status():
    raise BrokenPipeError("stdout is closed")  # what the status table's console raises

main()
"""


def test_a_closed_stdout_ends_a_command_quietly() -> None:
    done = subprocess.run([sys.executable, "-c", PROGRAM, "status"], cwd=ROOT, capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()[-500:]
