"""Monitor benchmark: what the monitor costs the cluster it watches, and its own memory.

    python -m bench.monitor [--records N] [--runs 3] [--partitions 1000] [--json out.json]

1. Produce throughput (rf 3, acks=all, 3 partitions, keyless 100-byte records, the client
   library) of one 3-broker cluster with the monitor stopped and running, alternating the order
   each run in the same cluster so that drift and other load fall on both sides alike. Target:
   the monitor costs at most 2%.
2. The monitor's resident memory (VmRSS, peak over ``--watch-s``) once the cluster has a topic
   of ``--partitions`` partitions (rf 3) and the monitor has polled it for a while. Target:
   under 150 MB with 1,000 partitions.
3. On that idle cluster, the brokers' CPU over ``--watch-s`` with the monitor running and then
   stopped: what answering its STATS polls costs them (a share of one core), and the monitor's
   own CPU. Unlike (1) this is not drowned by run-to-run noise on a shared machine.

Every loop is bounded by a count and a time limit; every process is stopped by its pid; the
data lives in a temp directory removed at the end.
"""

from __future__ import annotations

import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path


from bench.cluster import CpuMeter, Phase
from bench.options import UsageParser
from bench.stats import process_cpu_s
from fabric import protocol as P
from fabric.client import Admin, Producer
from fabric.client.monitor import MonitorClient
from nodes.local_cluster import Cluster, make_config, wait_until

VALUE = b"x" * 100
RSS_SAMPLE_INTERVAL_S = 0.5
BATCH_RECORDS = 1000
PRODUCE_S_MAX = 120.0


def produce(bootstrap: str, topic: str, records: int, value: bytes, acks: int | str, pids: list[int]) -> Phase:
    """Send ``records`` records from this process as fast as send() returns, then flush; the
    phase with this process's CPU and that of ``pids``."""
    with Producer(bootstrap, acks=acks, linger_ms=5, batch_records_max=BATCH_RECORDS) as p:
        p.sender.partition_count(topic, 10_000)  # metadata before the clock starts
        send = p.send
        cpu = CpuMeter(pids)
        t0 = time.perf_counter()
        deadline = t0 + PRODUCE_S_MAX
        sent = 0
        while sent < records:
            for _ in range(min(10_000, records - sent)):
                send(topic, value)
            sent += min(10_000, records - sent)
            if time.perf_counter() > deadline:
                break
        p.flush(timeout=PRODUCE_S_MAX)
        return cpu.phase(sent, time.perf_counter() - t0)


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _stats_rtt_ms(cluster: Cluster, broker: str, samples: int = 21) -> float:
    """Median round trip of the monitor's poll (STATS, metrics only) to ``broker``: an upper
    bound on the broker reactor time one poll takes (the monitor polls once per second)."""
    rtts = []
    for _ in range(samples):
        t0 = time.perf_counter()
        cluster.call(broker, P.STATS, {"metrics_only": True})
        rtts.append((time.perf_counter() - t0) * 1000)
    return statistics.median(rtts)


def _config(work: Path) -> Path:
    return make_config(work, 3, extra_nodes=("monitor",), overrides={
        "storage": {"fsync_interval_ms": 1000},
        "liveness": {"heartbeat_interval_ms": 300, "session_timeout_ms": 6000},
        "replication": {"replica_lag_time_max_ms": 10_000}})


def main(argv: list[str] | None = None) -> int:
    ap = UsageParser(prog="loom bench monitor", description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=1000)
    ap.add_argument("--watch-s", type=float, default=20.0)
    ap.add_argument("--json")
    args = ap.parse_args(argv)
    if (not 1 <= args.records <= 10_000_000 or not 1 <= args.runs <= 20 or not 1 <= args.partitions <= 10_000
            or not 0 < args.watch_s <= 600):
        ap.error("--records 1..10M, --runs 1..20, --partitions 1..10000, --watch-s 0..600 (exclusive of 0)")
    work = Path(tempfile.mkdtemp(prefix="loom-bench-monitor-"))
    cluster = Cluster(_config(work))
    rates: dict[str, list[float]] = {"without": [], "with": []}
    cpu: dict[str, list[float]] = {"without": [], "with": []}  # CPU us per record, every node process
    try:
        cluster.start()
        with Admin(cluster.bootstrap) as admin:
            for run in range(args.runs):
                for mode in (("without", "with") if run % 2 == 0 else ("with", "without")):
                    if mode == "with":
                        if "monitor" not in cluster.procs or cluster.procs["monitor"].poll() is not None:
                            cluster.start_node("monitor")
                    else:
                        cluster.stop("monitor")
                    topic = f"bench-monitor-{run}-{mode}"
                    admin.create_topic(topic, partitions=3, replication_factor=3)
                    cluster.wait_topic_ready(admin, topic, timeout_s=30)
                    pids = [p.pid for p in cluster.procs.values() if p.poll() is None]
                    phase = produce(cluster.bootstrap, topic, args.records, VALUE, "all", pids)
                    rates[mode].append(phase.records_per_s)
                    cpu[mode].append(phase.server_cpu_us_per_record)
                    print(f"run {run + 1}: monitor {mode:>7}: {phase.records_per_s:,.0f} records/s, "
                          f"nodes' CPU {phase.server_cpu_us_per_record:.2f} us/record", flush=True)
            if "monitor" not in cluster.procs or cluster.procs["monitor"].poll() is not None:
                cluster.start_node("monitor")
            admin.create_topic("bench-monitor-wide", partitions=args.partitions, replication_factor=3)
            cluster.wait_topic_ready(admin, "bench-monitor-wide", timeout_s=300, full_isr=False)
        stats_ms = _stats_rtt_ms(cluster, "broker-1")
        mon = MonitorClient(cluster.endpoint("monitor"))
        wait_until(lambda: mon.status()["cluster"].get("partitions", 0) >= args.partitions, 60,
                   what="the monitor to see every partition")
        pid, peak, checks0 = cluster.procs["monitor"].pid, 0, mon.status()["checks"]
        brokers = [cluster.procs[n].pid for n in cluster.broker_names()]
        cpu0, mon_cpu0, t0 = process_cpu_s(brokers), process_cpu_s([pid]), time.monotonic()
        while time.monotonic() < t0 + args.watch_s:
            peak = max(peak, _rss_bytes(pid))
            time.sleep(RSS_SAMPLE_INTERVAL_S)
        watched_s = time.monotonic() - t0
        brokers_with = (process_cpu_s(brokers) - cpu0) / watched_s
        monitor_cpu = (process_cpu_s([pid]) - mon_cpu0) / watched_s
        checks = mon.status()["checks"] - checks0
        mon.close()
        cluster.stop("monitor")
        cpu0, t0 = process_cpu_s(brokers), time.monotonic()
        while time.monotonic() < t0 + args.watch_s:
            time.sleep(RSS_SAMPLE_INTERVAL_S)
        brokers_without = (process_cpu_s(brokers) - cpu0) / (time.monotonic() - t0)
    finally:
        cluster.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    without, with_ = statistics.median(rates["without"]), statistics.median(rates["with"])
    cost = 100 * (1 - with_ / without)
    cpu_without, cpu_with = statistics.median(cpu["without"]), statistics.median(cpu["with"])
    print(f"\nproduce (rf 3, acks=all), medians of {args.runs} runs x {args.records:,} records: "
          f"without monitor {without:,.0f}/s, with {with_:,.0f}/s: the monitor costs {cost:.1f}% (target <= 2%); "
          f"nodes' CPU per record {cpu_without:.2f} us without, {cpu_with:.2f} us with (the monitor's own included)")
    print(f"monitor RSS with {args.partitions} partitions: peak {peak / 2**20:.1f} MiB over {args.watch_s:.0f} s "
          f"({checks} checks; target < 150 MB)")
    print(f"idle cluster with {args.partitions} partitions: brokers' CPU {100 * brokers_with:.1f}% of a core with the "
          f"monitor, {100 * brokers_without:.1f}% without; the monitor itself {100 * monitor_cpu:.1f}%; one STATS poll "
          f"of a broker takes {stats_ms:.1f} ms round trip (once a second: {stats_ms / 10:.2f}% of its reactor at most)")
    if args.json:
        Path(args.json).write_text(json.dumps({"rates": rates, "cpu_us_per_record": cpu, "cost_percent": cost, "rss_peak_bytes": peak,
                                               "partitions": args.partitions, "checks": checks,
                                               "brokers_cpu_with": brokers_with, "brokers_cpu_without": brokers_without,
                                               "monitor_cpu": monitor_cpu, "stats_rtt_ms": stats_ms}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
