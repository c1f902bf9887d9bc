"""Idle brokers with 1,000 partitions (issue 13 item 5): ``make up``'s whole node set (the
coordinator, three brokers, the gateway, the monitor, the producer and consumer services, as
tests/integration/test_large_topic_make_up.py starts it) with one 1,000-partition topic of
replication factor 3, then each broker's CPU over windows of no traffic.

    python -m tests.integration.large_topic_idle [--windows 3] [--window-s 10] [--profile-s 0] [--profile-out DIR] [--gil]

CPU is read from /proc by pid, as the test reads it; the monitor polls every broker's STATS
each second throughout, as it does under ``make up``. With ``--profile-s S`` a py-spy record
(``--py-spy PATH``) of each broker follows the windows, written as raw stacks to
``--profile-out``. Every process is stopped by its pid; the data lives in a temp directory
removed at the end.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.options import UsageParser
from fabric.client import Admin
from tests.harness import wait_until
from tests.integration.large_topic_support import PARTITIONS, cpu_seconds, fully_replicated
from tests.integration.test_large_topic_make_up import HEALTHY_TIMEOUT_S, every_node_healthy, make_up_running

SETTLE_AFTER_HEALTHY_S = 3  # the last partitions' first full heartbeats and ISR checks
REPLICATED_TIMEOUT_S = 60  # not the test's bound: this measures idle CPU, on a busy machine too


def measure(windows: int, window_s: float, profile_s: int, profile_out: Path | None, py_spy: str,
            gil_only: bool = False) -> dict[str, list[float]]:
    """Per broker, its CPU (fraction of one core) in each window."""
    tmp = Path(tempfile.mkdtemp(prefix="loom-idle-"))
    try:
        with make_up_running(tmp) as (up, monitor, brokers):
            with Admin(",".join(up.config.bootstrap()).replace("tcp://", "")) as admin:
                admin.create_topic("big", PARTITIONS, 3)
                wait_until(lambda: fully_replicated(admin, "big"), REPLICATED_TIMEOUT_S, 0.5,
                           what="the topic fully replicated")
            wait_until(lambda: every_node_healthy(monitor, up.config), HEALTHY_TIMEOUT_S, 0.5,
                       what="the monitor to judge every node healthy")
            time.sleep(SETTLE_AFTER_HEALTHY_S)
            usage: dict[str, list[float]] = {n: [] for n in brokers}
            for _ in range(windows):
                start, t0 = {n: cpu_seconds(p) for n, p in brokers.items()}, time.monotonic()
                time.sleep(window_s)
                dt = time.monotonic() - t0
                for n, p in brokers.items():
                    usage[n].append((cpu_seconds(p) - start[n]) / dt)
            if profile_s > 0 and profile_out is not None:
                profile_out.mkdir(parents=True, exist_ok=True)
                spies = [subprocess.Popen([py_spy, "record", "-p", str(pid), "-d", str(profile_s), "-r", "200",
                                           "-f", "raw", "-o", str(profile_out / f"{n}.txt"), *(["--gil"] if gil_only else [])],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                         for n, pid in brokers.items()]
                for s in spies:
                    s.wait(timeout=profile_s + 30)
            return usage
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = UsageParser(prog="python -m tests.integration.large_topic_idle", description=__doc__.split("\n\n")[0])
    ap.add_argument("--windows", type=int, default=3)
    ap.add_argument("--window-s", type=float, default=10.0)
    ap.add_argument("--profile-s", type=int, default=0)
    ap.add_argument("--profile-out", type=Path, default=None)
    ap.add_argument("--py-spy", default="py-spy")
    ap.add_argument("--gil", action="store_true", help="profile only samples holding the GIL (py-spy --gil): a "
                    "thread waiting for a CPU on a busy machine is not counted as running")
    o = ap.parse_args(argv)
    usage = measure(o.windows, o.window_s, o.profile_s, o.profile_out, o.py_spy, o.gil)
    for name, shares in sorted(usage.items()):
        print(f"{name}: idle CPU {' '.join(f'{100 * s:.2f}' for s in shares)} % of a core "
              f"(median {100 * statistics.median(shares):.2f} %)")
    every = [s for shares in usage.values() for s in shares]
    print(f"all brokers: median {100 * statistics.median(every):.2f} %, max {100 * max(every):.2f} %")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
