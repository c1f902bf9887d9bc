"""The peer's servers sampled from /proc while its script runs (bench/stats.py
``ProcessTreeSampler``, bench/peer.py): real child processes that allocate memory and spin, a
process of the same name outside the tree that must not count, the figures' arithmetic, and
``peer.run`` on a stand-in script whose "server" is such a child."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Iterator

import pytest

from bench import peer, report
from bench.options import parse
from bench.stats import ProcessTreeSampler, SampledProcess, kill_tree
from tests.harness import wait_until

ALLOC_MB = 40
SPIN_CPU_S = 0.3
TICK_S = 0.01  # /proc's CPU times are in clock ticks
EXIT_CPU_S_MAX = 0.15  # a server's CPU after its report: the print, the wait, the exit

# A "server": allocates and touches ALLOC_MB, spins until it has used SPIN_CPU_S of CPU, says
# how much it used, then waits for its stdin to close.
SERVER = f"""
import os, sys
block = b"x" * ({ALLOC_MB} * 1024 * 1024)
while sum(os.times()[:2]) < {SPIN_CPU_S}:
    pass
t = os.times()
print(os.getpid(), t[0] + t[1], flush=True)
sys.stdin.read()
"""

# The root: starts two servers (by the executable name given) and one other child, prints the
# servers' reports once both are done, and stops them all when its own stdin closes.
ROOT = """
import subprocess, sys
server, code = sys.argv[1], sys.argv[2]
servers = [subprocess.Popen([server, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
           for _ in range(2)]
other = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
print(";".join(s.stdout.readline().strip() for s in servers), flush=True)
sys.stdin.read()
for p in [*servers, other]:
    p.stdin.close()
    p.wait()
"""


@pytest.fixture
def server_exe(tmp_path: Path) -> Path:
    """The Python interpreter under another name: its processes' executable name is ``spinner``."""
    exe = tmp_path / "spinner"
    exe.symlink_to(sys.executable)
    return exe


@pytest.fixture
def started() -> Iterator[list[subprocess.Popen]]:
    procs: list[subprocess.Popen] = []
    yield procs
    for p in procs:
        kill_tree(p.pid)
        p.wait(timeout=10)


def test_sampler_follows_the_named_processes_below_the_root_to_the_end(
        server_exe: Path, started: list[subprocess.Popen]) -> None:
    outsider = subprocess.Popen([str(server_exe), "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started.append(outsider)  # same name, already running, not below the root: never counted
    root = subprocess.Popen([sys.executable, "-c", ROOT, str(server_exe), SERVER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    started.append(root)
    sampler = ProcessTreeSampler(root.pid, {"spinner"})
    reports: dict[int, float] = {}

    def end_after_a_sample_of_the_idle_servers() -> None:
        assert root.stdout is not None
        for item in root.stdout.readline().strip().split(";"):
            pid, cpu_s = item.split()
            reports[int(pid)] = float(cpu_s)
        seen = sampler.samples
        wait_until(lambda: sampler.samples >= seen + 2, 10, 0.01, what="a whole sample after both servers are done")
        assert root.stdin is not None
        root.stdin.close()
    ender = threading.Thread(target=end_after_a_sample_of_the_idle_servers)
    ender.start()
    assert sampler.follow(root, 0.02, 30)
    ender.join(timeout=10)
    assert root.returncode == 0 and len(reports) == 2

    got = sampler.processes()
    assert {p.pid for p in got} == set(reports) and outsider.pid not in reports
    for p in got:
        assert p.name == "spinner"
        # at least what the server reported (a whole sample came after the report), and no more
        # than that plus its idle wait and its exit: the last sample can fall inside the
        # interpreter's shutdown, which frees the block (CI saw 0.33 s against 0.30 s reported)
        assert reports[p.pid] - TICK_S <= p.cpu_s <= reports[p.pid] + EXIT_CPU_S_MAX, (p, reports)
        assert p.cpu_s >= SPIN_CPU_S
        assert p.peak_rss_mb is not None and ALLOC_MB * 1.048 <= p.peak_rss_mb < ALLOC_MB * 1.048 + 60, p


def test_follow_stops_at_its_timeout_and_leaves_the_root_running(started: list[subprocess.Popen]) -> None:
    root = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    started.append(root)
    sampler = ProcessTreeSampler(root.pid, {"nats-server"})
    assert not sampler.follow(root, 0.02, 0.2)
    assert root.poll() is None and sampler.samples >= 2 and sampler.processes() == []


def test_peer_figures_cpu_per_record_and_peak_rss_per_server() -> None:
    servers = [SampledProcess(11, "nats-server", 100, 3.0, 41.26), SampledProcess(12, "nats-server", 101, 2.5, 39.0),
               SampledProcess(13, "nats-server", 102, 1.5, None)]
    got = peer.server_figures(servers, 300_000, 18.7)
    assert got["servers"] == 3 and got["server_cpu_s"] == 7.0 and got["records_published"] == 300_000
    assert got["cpu_us_per_record"] == {"cluster": 23.333}  # 7 s / 300,000 records
    assert got["publish_window_cpu_us_per_record"] == 18.7
    assert got["server_peak_rss_mb"] == {"nats-server-1": 41.3, "nats-server-2": 39.0, "nats-server-3": None}
    assert peer.server_figures([], 300_000)["cpu_us_per_record"] == {"cluster": None}  # none seen: unknown, not 0
    assert peer.server_figures(servers, 0)["cpu_us_per_record"] == {"cluster": None}


# nats_js_bench.py's lines, as quick_jetstream_latency.sh's log has them
LOG = """NOTE: nats-server nats-server: v2.15.1, nats-py 2.16.0
cluster started, pids [12857, 12858, 12862]
  [3-node cluster R3 100B run1] pub 20000 msgs in 0.96s = 20,831 msg/s; server CPU 60% client CPU 84% foreign 0.0 cores
  [3-node cluster R3 100B run1] latency @1981/s p50=0.66ms p99=1.57ms p99.9=9.21ms max=93.11ms foreign 0.0 cores
  [3-node cluster R3 100B run2] pub 19000 msgs in 0.70s = 28,443 msg/s; server CPU 61% client CPU 90% foreign 0.0 cores
  [3-node cluster R3 100B run2] latency @1979/s p50=0.83ms p99=2.18ms p99.9=4.26ms max=100.81ms foreign 0.0 cores
RESULT | NATS JetStream | 3-node cluster, R3 file, window 1000 | 100 | publish throughput (acked) | median=22,355 msg/s
"""


def test_records_published_and_the_scripts_own_window_figure() -> None:
    doc = {"argv": ["nats_js_bench.py", "--rate", "500", "--lat-seconds", "4"],
           "rows": [{"metric": "publish throughput (acked)", "unit": "MB/s", "runs": [2.0, 2.8]},
                    {"metric": "publish throughput (acked)", "unit": "msg/s", "runs": [20_000.0, 25_000.0, 40_000.0],
                     "extra": {"server_cpu_frac": [0.4, 0.6, 0.4]}}]}
    assert peer.published_records(LOG, doc) == 20_000 + 19_000 + 2 * 500 * 4
    assert peer.published_records(LOG, {}) == 39_000 + 2 * 2000 * 10  # the script's defaults
    assert peer.published_records(LOG.replace("latency @", "lat"), {}) == 39_000
    assert peer.publish_window_cpu_us(doc) == 20.0  # median of 20, 24 and 10 µs
    assert peer.publish_window_cpu_us({}) is None


# A stand-in for quick_jetstream.sh: one "nats-server" (the interpreter under that name) that
# allocates and spins, the log and JSON where the real script writes them, the figure last.
STAND_IN = """set -eu
"$(dirname "$0")/nats-server" -c '{server}' < /dev/null
printf '  [3-node cluster R3 100B run1] pub 1000 msgs in 1.00s = 1,000 msg/s\\n' > "$PEER_RESULTS_DIR/quick_jetstream.log"
printf '{doc}' > "$PEER_RESULTS_DIR/quick_jetstream.json"
echo 1000
"""


def test_peer_run_reports_its_servers_cpu_per_record_and_peak_rss(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = f'import os\nblock = b"x" * ({ALLOC_MB} * 1024 * 1024)\nwhile sum(os.times()[:2]) < 0.8:\n    pass\n'
    doc = {"rows": [{"metric": "publish throughput (acked)", "unit": "msg/s", "runs": [1000.0],
                     "extra": {"server_cpu_frac": [0.5]}}]}
    (tmp_path / "nats-server").symlink_to(sys.executable)
    (tmp_path / "quick_jetstream.sh").write_text(STAND_IN.format(server=server, doc=json.dumps(doc)))
    monkeypatch.setattr(peer, "missing", lambda: [])  # the stand-in needs none of setup.sh's tools
    monkeypatch.setattr(peer, "SAMPLE_INTERVAL_S", 0.02)
    monkeypatch.delenv("PEER_RESULTS_DIR", raising=False)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where run() keeps the script's results
    said: list[str] = []
    got = peer.run(parse("produce", ["--peer", "jetstream", "--peer-dir", str(tmp_path)]), said.append)
    assert got["records_per_s"] == 1000 and got["records_published"] == 1000 and got["servers"] == 1, got
    # CPU up to its last sample, which is at most one interval (here 20 ms) before its end
    assert 0.5 <= got["server_cpu_s"] <= 0.8 + 0.1, got
    assert got["cpu_us_per_record"]["cluster"] == round(1e6 * got["server_cpu_s"] / 1000, 3)
    assert got["publish_window_cpu_us_per_record"] == 500.0
    assert ALLOC_MB * 1.048 <= got["server_peak_rss_mb"]["nats-server-1"] < ALLOC_MB * 1.048 + 60, got
    assert not list((tmp_path / "tmp").iterdir()), "the script's results directory is left behind"
    table = report.peer_lines(_doc_with_peer(got))
    assert len(table) == 2 and "cluster CPU" in table[1] and "nats-server-1" in table[1], table


def _doc_with_peer(p: dict) -> dict:
    first = {"label": "segment/interval/send", "records_per_s": 300_000, "cpu_us_per_record": {"client": 2.0, "cluster": 1.0},
             "broker_peak_rss_mb": {"broker-1": 58.0}, "latency_ms": {"p99": 3.0}}
    return {"combinations": [first], "peer": p}
