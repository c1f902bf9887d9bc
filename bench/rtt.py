"""``loom bench rtt``: this machine's floor for a request/reply between two processes -- a bare
pyzmq DEALER sending to a ROUTER that echoes, on loopback, with a pause between round trips
(an idle process is slower to wake than a busy one, which is what a latency run at a low
offered rate meets). Run it beside a latency run to tell Loom's milliseconds from the machine's.
Besides the latency it reports the CPU each side spent per round trip (what waking costs here).

With ``--loom`` the same closed loop goes through a self-contained Loom cluster instead: one
record per ``send()`` (``linger_ms`` 0, ``acks=all``, one partition of replication factor
``--replication-factor``), waited for before the next, and the CPU every process spent per
request (its idle CPU over the same time subtracted) -- where a produce's hops cost.

    python -m bench.rtt --pause-ms 0.5 --count 3000 --runs 3
    python -m bench.rtt --loom --count 3000 --runs 3

Every process started here is stopped (joined, then killed by its pid). Not thread-safe.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path

import zmq

from bench.options import UsageParser
from bench.stats import LatencyHistogram, process_cpu_s
from nodes.local_cluster import free_ports, running_cluster

COUNT_MAX = 1_000_000
ECHO_STOP = b"stop"
RECV_TIMEOUT_MS = 5000  # a round trip this slow means the echo process is gone
PAYLOAD_BYTES = 100
IDLE_S = 2.0                # --loom: each process's idle CPU is measured over this long first
WARM_UP_REQUESTS = 200      # --loom: connections, metadata and the producer id settled first
LOOM_FSYNC_INTERVAL_MS = 1000
LOOM_TOPIC = "bench-rtt"


def _echo(port: int) -> None:
    ctx = zmq.Context()
    s = ctx.socket(zmq.ROUTER)
    s.setsockopt(zmq.LINGER, 0)
    s.bind(f"tcp://127.0.0.1:{port}")
    s.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
    try:
        while True:
            frames = s.recv_multipart()
            if frames[-1] == ECHO_STOP:
                return
            s.send_multipart(frames)
    except zmq.Again:
        return
    finally:
        s.close(0)
        ctx.term()


def measure(count: int, pause_s: float) -> dict:
    """``count`` round trips with ``pause_s`` between them; their latency summary in ms."""
    port = free_ports(1)[0]
    echo = multiprocessing.get_context("spawn").Process(target=_echo, args=(port,), daemon=True)
    echo.start()
    ctx = zmq.Context()
    d = ctx.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    d.setsockopt(zmq.RCVTIMEO, RECV_TIMEOUT_MS)
    d.connect(f"tcp://127.0.0.1:{port}")
    lat = LatencyHistogram()
    payload = b"x" * PAYLOAD_BYTES
    try:
        d.send_multipart([b"", payload])  # the connection and the echo process are up
        d.recv_multipart()
        echo_cpu0, own_cpu0 = process_cpu_s([echo.pid]), time.process_time()
        for _ in range(count):
            t0 = time.perf_counter()
            d.send_multipart([b"", payload])
            d.recv_multipart()
            lat.record_us((time.perf_counter() - t0) * 1e6)
            if pause_s:
                time.sleep(pause_s)  # the offered pace, not synchronisation
        cpu = {"echo": _per_request_us(process_cpu_s([echo.pid]) - echo_cpu0, count),
               "client": _per_request_us(time.process_time() - own_cpu0, count)}
        d.send_multipart([b"", ECHO_STOP])
    finally:
        d.close(0)
        ctx.term()
        echo.join(timeout=RECV_TIMEOUT_MS / 1000)
        if echo.is_alive():
            echo.kill()
    return dict(lat.summary_ms(), cpu_us_per_round_trip=cpu)


def _per_request_us(cpu_s: float, count: int) -> float:
    return round(cpu_s / count * 1e6, 1)


def measure_loom(count: int, pause_s: float, replication_factor: int) -> dict:
    """``count`` one-record produces through a fresh self-contained cluster, each waited for,
    with ``pause_s`` between them: latency summary in ms and, per process, CPU µs per request
    above its idle CPU. The cluster is stopped by its pids and its directory removed."""
    from fabric.client import Admin, Producer
    overrides = {"storage": {"fsync_interval_ms": LOOM_FSYNC_INTERVAL_MS}}
    with tempfile.TemporaryDirectory(prefix="loom-bench-rtt-", ignore_cleanup_errors=True) as work, \
            running_cluster(Path(work), 3, overrides=overrides) as cluster:
        cluster.create_topic(LOOM_TOPIC, partitions=1, replication_factor=replication_factor)
        with Admin(cluster.bootstrap) as admin:
            leader = admin.metadata().topics[LOOM_TOPIC].partitions[0].leader
        pids = {n: p.pid for n, p in cluster.procs.items()}
        with Producer(cluster.bootstrap, linger_ms=0, acks="all") as producer:
            payload = b"x" * PAYLOAD_BYTES
            for _ in range(WARM_UP_REQUESTS):
                producer.send(LOOM_TOPIC, payload).result(RECV_TIMEOUT_MS / 1000)
            before, t0 = _cpu_s(pids), time.perf_counter()
            time.sleep(IDLE_S)  # measuring the idle CPU, not synchronisation
            after, t1 = _cpu_s(pids), time.perf_counter()
            idle_s = t1 - t0
            idle = {n: (after[n] - before[n]) / idle_s for n in after}
            lat = LatencyHistogram()
            for _ in range(count):
                t = time.perf_counter()
                producer.send(LOOM_TOPIC, payload).result(RECV_TIMEOUT_MS / 1000)
                lat.record_us((time.perf_counter() - t) * 1e6)
                if pause_s:
                    time.sleep(pause_s)  # the offered pace, not synchronisation
            end, elapsed = _cpu_s(pids), time.perf_counter() - t1
    cpu = {("leader" if n == f"broker-{leader}" else n): _per_request_us(end[n] - after[n] - idle[n] * elapsed, count)
           for n in end}
    cpu["cluster"] = round(sum(v for n, v in cpu.items() if n != "client"), 1)
    return dict(lat.summary_ms(), cpu_us_per_request=cpu)


def _cpu_s(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of every node process and of this one (``client``)."""
    return {**{n: process_cpu_s([pid]) for n, pid in pids.items()}, "client": time.process_time()}


def main(argv: list[str] | None = None) -> int:
    ap = UsageParser(prog="loom bench rtt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=3000, help="round trips per run (default 3000)")
    ap.add_argument("--pause-ms", type=float, default=0.5, help="pause between round trips (default 0.5: 2,000/s)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians reported (default 3)")
    ap.add_argument("--loom", action="store_true",
                    help="one-record produces through a self-contained Loom cluster instead of a bare echo")
    ap.add_argument("--replication-factor", type=int, default=3, help="with --loom (default 3)")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    if not 0 < a.count <= COUNT_MAX or a.pause_ms < 0 or a.runs < 1:
        ap.error(f"--count must be 1..{COUNT_MAX:,}, --pause-ms >= 0, --runs >= 1")
    if not 1 <= a.replication_factor <= 3:
        ap.error("--replication-factor must be 1..3 (the self-contained cluster has 3 brokers)")
    cpu_key = "cpu_us_per_request" if a.loom else "cpu_us_per_round_trip"
    runs = []
    for i in range(a.runs):
        r = measure_loom(a.count, a.pause_ms / 1000, a.replication_factor) if a.loom else measure(a.count, a.pause_ms / 1000)
        runs.append(r)
        cpu = ", ".join(f"{n} {v}" for n, v in r[cpu_key].items())
        print(f"run {i + 1}/{a.runs}: round trip p50/p99/p99.9 {r['p50']}/{r['p99']}/{r['p999']} ms; CPU us: {cpu}")
    med = {k: round(statistics.median(r[k] for r in runs), 3) for k in ("p50", "p99", "p999")}
    med_cpu = {n: round(statistics.median(r[cpu_key][n] for r in runs), 1) for n in runs[0][cpu_key]}
    what = (f"one-record produce (RF {a.replication_factor}, acks=all, linger_ms 0) through Loom" if a.loom
            else "bare pyzmq DEALER/ROUTER round trip")
    print(f"loom bench rtt: {what}, {a.pause_ms} ms pause, medians of {a.runs}: "
          f"p50 {med['p50']} ms, p99 {med['p99']} ms, p99.9 {med['p999']} ms; "
          f"CPU us per {'request' if a.loom else 'round trip'}: {', '.join(f'{n} {v}' for n, v in med_cpu.items())}")
    if a.json:
        Path(a.json).write_text(json.dumps({"latency_ms": med, cpu_key: med_cpu, "runs": runs,
                                            "pause_ms": a.pause_ms, "count": a.count, "loom": a.loom}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
