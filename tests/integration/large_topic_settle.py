"""How long a 1,000-partition topic takes to settle (issue 13 item 5): a fresh 3-broker cluster
(coordinator and brokers, segment engine, fsync ``interval``, as tests/integration/test_large_topic.py
starts it) per round, one create of a 1,000-partition topic of replication factor 3, then the
time until every partition has a full ISR and every leader serves it (``fully_replicated``),
and each broker's CPU over that time.

    python -m tests.integration.large_topic_settle [--rounds 3] [--partitions 1000]

Prints one line per round and the median. CPU is read from /proc by pid; every process is
stopped by its pid and the data lives in a temp directory removed at the end of each round.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from bench.options import UsageParser
from fabric.client import Admin
from tests.harness import running_cluster
from tests.integration.large_topic_support import PARTITIONS, cpu_seconds, create_settled

ROUNDS_MAX = 50


def one_round(partitions: int) -> tuple[float, dict[str, float]]:
    """(seconds from the create to settled, CPU seconds each broker used in that time)."""
    with tempfile.TemporaryDirectory(prefix="loom-settle-") as tmp, running_cluster(Path(tmp)) as cluster, \
            Admin(cluster.bootstrap) as admin:
        start = {n: cpu_seconds(cluster.procs[n].pid) for n in cluster.broker_names()}
        _, settled_s = create_settled(admin, "big", partitions)
        return settled_s, {n: round(cpu_seconds(cluster.procs[n].pid) - start[n], 2) for n in cluster.broker_names()}


def main(argv: list[str] | None = None) -> None:
    parser = UsageParser(prog="python -m tests.integration.large_topic_settle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--partitions", type=int, default=PARTITIONS)
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= ROUNDS_MAX or args.partitions < 1:
        parser.error(f"--rounds must be in [1, {ROUNDS_MAX}] and --partitions >= 1")
    times = []
    for r in range(args.rounds):
        settled_s, cpu = one_round(args.partitions)
        times.append(settled_s)
        print(f"round {r + 1}: settled {settled_s:.2f} s after the create; broker CPU meanwhile {cpu} s", flush=True)
    print(f"median {statistics.median(times):.2f} s over {len(times)} rounds")


if __name__ == "__main__":
    main()
