"""A node's ZeroMQ context takes more than libzmq's default 1,023 sockets: a gateway worker's
request threads each hold clients of every service, and with eight consumer services the
worker passed 1,023 under load -- every request needing another socket then failed with
EMFILE ("Too many open files") though the descriptor limit had room. A fresh process each (the
context is the process's, sized before its first socket)."""

from __future__ import annotations

import subprocess
import sys

from tests.harness import ROOT

SOCKETS = 1_100

SCRIPT = f"""
import resource, sys
import zmq
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
if want < {SOCKETS} + 200:
    print("skip: descriptor limit", hard); sys.exit(0)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
from fabric.client import Admin
ctx = Admin("tcp://127.0.0.1:1").ctx  # the context every client and node of the process uses
sockets = [ctx.socket(zmq.DEALER) for _ in range({SOCKETS})]
print("made", len(sockets))
for s in sockets:
    s.close(linger=0)
"""


def test_the_process_context_takes_more_than_1023_sockets() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if out.stdout.startswith("skip"):
        import pytest
        pytest.skip(out.stdout.strip())
    assert out.returncode == 0 and out.stdout.strip() == f"made {SOCKETS}", out.stderr[-2000:]


def test_a_forked_child_sizes_its_own_context() -> None:
    """pyzmq makes another instance in a forked child (a gunicorn worker): sized there too."""
    script = SCRIPT.replace('print("made", len(sockets))', 'print("parent made", len(sockets))') + f"""
import os
from fabric.zmq_context import context
pid = os.fork()
if pid == 0:
    child = [context().socket(zmq.DEALER) for _ in range({SOCKETS})]
    print("child made", len(child), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    if out.stdout.startswith("skip"):
        import pytest
        pytest.skip(out.stdout.strip())
    assert out.stdout.split("\n")[:2] == [f"parent made {SOCKETS}", f"child made {SOCKETS}"], (out.stdout, out.stderr[-2000:])
