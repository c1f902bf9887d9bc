"""The ZeroMQ context of a node that holds many clients takes more than libzmq's default 1,023
sockets: a gateway worker's request threads each hold clients of every service, and with eight
consumer services the worker passed 1,023 under load -- every request needing another socket
then failed with EMFILE ("Too many open files") though the descriptor limit had room. Brokers,
the coordinator and client programs keep libzmq's default (the larger context cost a one-record
produce latency there). A fresh process each (the context is the process's, sized before its
first socket)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nodes.run import MANY_SOCKETS_ROLES
from tests.harness import ROOT

SOCKETS = 1_100

SCRIPT = f"""
import os, resource, sys
import zmq
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
if want < {SOCKETS} + 200:
    print("skip: descriptor limit", hard); sys.exit(0)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), hard))
from fabric.zmq_context import SOCKETS_MAX, allow_sockets, context
if {{many}}:
    allow_sockets(SOCKETS_MAX)  # as nodes.run does for MANY_SOCKETS_ROLES, before any socket
from fabric.client import Admin
ctx = Admin("tcp://127.0.0.1:1").ctx  # the context every client and node of the process uses

def make(ctx):
    made = []
    try:
        while len(made) < {SOCKETS}:
            made.append(ctx.socket(zmq.DEALER))
    except zmq.ZMQError:
        pass
    for s in made:
        s.close(linger=0)
    return len(made)

print("parent made", make(ctx), flush=True)
pid = os.fork()  # a gunicorn worker: pyzmq makes another instance there
if pid == 0:
    print("child made", make(context()), flush=True)
    os._exit(0)
os.waitpid(pid, 0)
"""


def _run(many: bool) -> list[str]:
    out = subprocess.run([sys.executable, "-c", SCRIPT.replace("{many}", str(many))], cwd=ROOT,
                         capture_output=True, text=True, timeout=60)
    if out.stdout.startswith("skip"):
        pytest.skip(out.stdout.strip())
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split("\n")[:2]


def test_a_node_that_holds_many_clients_takes_more_than_1023_sockets_and_so_do_its_forked_workers() -> None:
    assert {"gateway", "consumer", "producer"} <= MANY_SOCKETS_ROLES
    assert _run(True) == [f"parent made {SOCKETS}", f"child made {SOCKETS}"]


def test_the_other_processes_keep_libzmqs_default() -> None:
    assert not {"broker", "coordinator"} & MANY_SOCKETS_ROLES
    assert _run(False) == ["parent made 1023", "child made 1023"]
