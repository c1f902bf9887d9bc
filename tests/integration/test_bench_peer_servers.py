"""The peer's server as its scripts start it: a real nats-server, started below another process
as nats_js_bench.py starts its three, is found and measured by the sampler under the executable
name ``loom bench --peer jetstream`` looks for (bench/peer.py ``SERVERS``). Skipped when no
nats-server is installed (``setup.sh`` in the shared peer directory installs one)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from bench import peer
from bench.stats import ProcessTreeSampler, descendant_pids, kill_tree
from tests.harness import free_ports, wait_until

NATS_SERVER = peer.nats_server()
pytestmark = pytest.mark.skipif(NATS_SERVER is None, reason="no nats-server (run the peers' setup.sh)")

# the root: starts the server given on its command line, stops it when its stdin closes
ROOT = """
import subprocess, sys
server = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
sys.stdin.read()
server.terminate()
server.wait()
"""


def accepts(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def root(tmp_path: Path) -> Iterator[subprocess.Popen]:
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-c", ROOT, str(NATS_SERVER), "-a", "127.0.0.1", "-p", str(port),
                             "-js", "-sd", str(tmp_path / "js")], stdin=subprocess.PIPE)
    proc.port = port  # type: ignore[attr-defined]
    yield proc
    kill_tree(proc.pid)
    proc.wait(timeout=10)


def test_a_real_nats_server_below_the_script_is_found_and_measured(root: subprocess.Popen) -> None:
    sampler = ProcessTreeSampler(root.pid, peer.SERVERS["jetstream"])
    wait_until(lambda: accepts(root.port), 10, what="nats-server to listen")  # type: ignore[attr-defined]
    sampler.sample()
    [server] = sampler.processes()
    assert server.pid in descendant_pids(root.pid) and server.name == "nats-server"
    assert server.cpu_s >= 0 and server.peak_rss_mb is not None and 5 < server.peak_rss_mb < 500, server
    assert root.stdin is not None
    root.stdin.close()
    assert root.wait(timeout=10) == 0
    sampler.sample()  # gone now: what was seen is kept
    assert [p.pid for p in sampler.processes()] == [server.pid]
