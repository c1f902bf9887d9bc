"""Cluster benchmark: produce and consume throughput through the client library against a real
3-broker cluster (plus coordinator) on loopback, with a raw pyzmq baseline in the same run.

    python -m bench.cluster [--records N] [--runs 3] [--json out.json]
                            [--engine segment] [--fsync interval] [--value-bytes 100]

Scenarios (each run uses a fresh topic of 3 partitions, keyless 100-byte records):
  rf1-acks1     replication factor 1, acks=1
  rf3-acksall   replication factor 3, acks=all (min.insync.replicas 2)
Baseline: one DEALER -> ROUTER process pair moving the same record bytes as msgpack frames of
1000 records (produce: client packs and sends, server answers each frame; consume: server
sends pre-packed frames, client unpacks every record). Ratios = Loom / baseline.

Every loop is bounded by a count and a time limit; every process started here is stopped by
its pid; the cluster's data lives in a temp directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import msgpack
import zmq

from bench.options import UsageParser
from bench.stats import process_cpu_s
from fabric.client import Admin, Consumer, Producer
from nodes.local_cluster import Cluster, free_ports, make_config

FRAME_RECORDS = 1000
BASELINE_WINDOW = 16          # frames in flight in the baseline (the producer pipelines too)
PHASE_SECONDS_MAX = 120.0     # any one produce or consume phase
SERVER_LIFETIME_S_MAX = 900   # the baseline server exits on its own after this
SCENARIOS = (("rf1-acks1", 1, 1), ("rf3-acksall", 3, "all"))
FSYNC_INTERVAL_MS = 1000      # the config default (the test harness uses 50 ms)


@dataclass
class Phase:
    """One timed phase. CPU seconds are measured too: on a shared machine they say what a
    record costs even when wall-clock rates swing with other people's load."""

    records: int
    seconds: float
    client_cpu_s: float = 0.0   # this process (application thread + I/O thread)
    server_cpu_s: float = 0.0   # every node process (or the baseline server)

    @property
    def records_per_s(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0

    @property
    def client_cpu_us_per_record(self) -> float:
        return 1e6 * self.client_cpu_s / self.records if self.records else 0.0

    @property
    def server_cpu_us_per_record(self) -> float:
        return 1e6 * self.server_cpu_s / self.records if self.records else 0.0


class CpuMeter:
    """CPU used by this process and by ``pids`` between start() and stop()."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.client0 = time.process_time()
        self.server0 = process_cpu_s(pids)

    def phase(self, records: int, seconds: float) -> Phase:
        return Phase(records, seconds, time.process_time() - self.client0, process_cpu_s(self.pids) - self.server0)


# -- the raw pyzmq baseline ---------------------------------------------------------------------
def baseline_server(port: int) -> int:
    """ROUTER: b"P" frames get a small ack, b"F" gets one pre-packed frame, b"Q" stops."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.bind(f"tcp://127.0.0.1:{port}")
    frame: bytes = b""
    deadline = time.monotonic() + SERVER_LIFETIME_S_MAX
    while time.monotonic() < deadline:
        if not sock.poll(1000):
            continue
        ident, kind, *rest = sock.recv_multipart(copy=True)
        if kind == b"P":
            sock.send_multipart([ident, b"ok"])
        elif kind == b"S":  # set the frame the fetches return
            frame = rest[0]
            sock.send_multipart([ident, b"ok"])
        elif kind == b"F":
            sock.send_multipart([ident, frame], copy=False)
        elif kind == b"Q":
            sock.send_multipart([ident, b"bye"])
            break
    sock.close(0)
    return 0


def _records(count: int, value: bytes, now_ms: int) -> list[tuple]:
    return [(now_ms, None, value, None)] * count


def baseline(records: int, value: bytes) -> tuple[Phase, Phase]:
    """Produce and consume the same records over raw DEALER -> ROUTER (one process pair)."""
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "bench.cluster", "--baseline-server", str(port)],
                            cwd=str(Path(__file__).resolve().parent.parent))
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    try:
        sock.send_multipart([b"P"])
        if not sock.poll(10_000):
            raise RuntimeError("baseline server did not answer")
        sock.recv()
        frames = max(1, records // FRAME_RECORDS)
        # produce: build each frame from records (as a producer does), keep a window in flight
        cpu = CpuMeter([proc.pid])
        t0 = time.perf_counter()
        sent = acked = 0
        while acked < frames and time.perf_counter() - t0 < PHASE_SECONDS_MAX:
            while sent < frames and sent - acked < BASELINE_WINDOW:
                recs = [(time.time_ns() // 1_000_000, None, value, None) for _ in range(FRAME_RECORDS)]
                sock.send_multipart([b"P", msgpack.packb(recs, use_bin_type=True)], copy=False)
                sent += 1
            if sock.poll(1000):
                sock.recv()
                acked += 1
        produce = cpu.phase(acked * FRAME_RECORDS, time.perf_counter() - t0)
        # consume: fetch pre-packed frames, unpack every record (as a consumer does)
        sock.send_multipart([b"S", msgpack.packb(_records(FRAME_RECORDS, value, 0), use_bin_type=True)])
        sock.poll(10_000)
        sock.recv()
        cpu = CpuMeter([proc.pid])
        t0 = time.perf_counter()
        asked = got = total = 0
        while got < frames and time.perf_counter() - t0 < PHASE_SECONDS_MAX:
            while asked < frames and asked - got < BASELINE_WINDOW:
                sock.send(b"F")
                asked += 1
            if sock.poll(1000):
                recs = msgpack.unpackb(sock.recv(copy=False), raw=False, use_list=False)
                total += sum(1 for r in recs if r[2])
                got += 1
        consume = cpu.phase(total, time.perf_counter() - t0)
        sock.send(b"Q")
        sock.poll(2000)
        return produce, consume
    finally:
        sock.close(0)
        _stop(proc)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)


# -- Loom through the client library -----------------------------------------------------------
def produce(bootstrap: str, topic: str, records: int, value: bytes, acks: int | str, pids: list[int]) -> Phase:
    with Producer(bootstrap, acks=acks, linger_ms=5, batch_records_max=FRAME_RECORDS) as p:
        p.sender.partition_count(topic, 10_000)  # metadata before the clock starts
        send = p.send
        cpu = CpuMeter(pids)
        t0 = time.perf_counter()
        deadline = t0 + PHASE_SECONDS_MAX
        sent = 0
        while sent < records:
            for _ in range(min(10_000, records - sent)):
                send(topic, value)
            sent += min(10_000, records - sent)
            if time.perf_counter() > deadline:
                break
        p.flush(timeout=PHASE_SECONDS_MAX)
        return cpu.phase(sent, time.perf_counter() - t0)


def consume(bootstrap: str, topic: str, partitions: int, records: int, pids: list[int]) -> Phase:
    with Consumer(bootstrap, auto_offset_reset="earliest") as c:
        c.assign([(topic, p) for p in range(partitions)])
        c.partitions_for(topic)
        got = 0
        cpu = CpuMeter(pids)
        t0 = time.perf_counter()
        deadline = t0 + PHASE_SECONDS_MAX
        while got < records and time.perf_counter() < deadline:
            got += len(c.poll(timeout_ms=1000, max_records=50_000))
        return cpu.phase(got, time.perf_counter() - t0)


def run_scenario(cluster: Cluster, admin: Admin, name: str, rf: int, acks: int | str, run: int,
                 records: int, value: bytes) -> tuple[Phase, Phase]:
    topic = f"bench-{name}-{run}"
    admin.create_topic(topic, partitions=3, replication_factor=rf)
    cluster.wait_topic_ready(admin, topic, timeout_s=30)
    pids = [proc.pid for proc in cluster.procs.values()]
    p = produce(cluster.bootstrap, topic, records, value, acks, pids)
    c = consume(cluster.bootstrap, topic, 3, p.records, pids)
    if c.records != p.records:
        raise RuntimeError(f"{topic}: produced {p.records} records, consumed {c.records}")
    return p, c


# -- reporting ---------------------------------------------------------------------------------
def _median(phases: list[Phase], attr: str = "records_per_s") -> float:
    return statistics.median(getattr(ph, attr) for ph in phases)


def _line(p: Phase, c: Phase) -> str:
    return (f"produce {p.records_per_s:,.0f} rec/s (cpu us/rec client {p.client_cpu_us_per_record:.2f} "
            f"server {p.server_cpu_us_per_record:.2f}), consume {c.records_per_s:,.0f} rec/s "
            f"(client {c.client_cpu_us_per_record:.2f} server {c.server_cpu_us_per_record:.2f})")


def main(argv: list[str] | None = None) -> int:
    ap = UsageParser(prog="loom bench cluster", description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=300_000, help="records per scenario run")
    ap.add_argument("--runs", type=int, default=3, help="runs per scenario (medians reported)")
    ap.add_argument("--json", help="write results as JSON to this file")
    ap.add_argument("--engine", default="segment")
    ap.add_argument("--fsync", default="interval", choices=("always", "interval", "never"))
    ap.add_argument("--value-bytes", "--record-size", dest="value_bytes", type=int, default=100)
    ap.add_argument("--scenarios", default=",".join(s[0] for s in SCENARIOS))
    ap.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.baseline_server:
        return baseline_server(args.baseline_server)
    if not 1 <= args.records <= 10_000_000 or not 1 <= args.runs <= 20:
        ap.error("--records must be 1..10M and --runs 1..20")
    value = os.urandom(args.value_bytes // 2).hex().encode()[:args.value_bytes].ljust(args.value_bytes, b"x")
    by_name = {s[0]: s for s in SCENARIOS}
    wanted = [by_name[n] for n in args.scenarios.split(",") if n in by_name]
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "records": args.records, "runs": args.runs,
            "engine": args.engine, "fsync": args.fsync, "value_bytes": args.value_bytes,
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    results: dict[str, dict[str, list[Phase]]] = {}
    for run in range(args.runs):
        bp, bc = baseline(args.records, value)
        results.setdefault("baseline", {"produce": [], "consume": []})
        results["baseline"]["produce"].append(bp)
        results["baseline"]["consume"].append(bc)
        print(f"run {run + 1}: baseline: {_line(bp, bc)}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="loom-bench-cluster-"))
    cluster = Cluster(make_config(work, 3, engine=args.engine, fsync=args.fsync,
                                  overrides={"storage": {"fsync_interval_ms": FSYNC_INTERVAL_MS},
                                             "liveness": {"heartbeat_interval_ms": 200, "session_timeout_ms": 6000},
                                             "replication": {"replica_lag_time_max_ms": 10_000}}))
    try:
        cluster.start()
        with Admin(cluster.bootstrap) as admin:
            for run in range(args.runs):
                for name, rf, acks in wanted:
                    p, c = run_scenario(cluster, admin, name, rf, acks, run, args.records, value)
                    results.setdefault(name, {"produce": [], "consume": []})
                    results[name]["produce"].append(p)
                    results[name]["consume"].append(c)
                    print(f"run {run + 1}: {name}: {_line(p, c)}", flush=True)
    finally:
        cluster.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    _report(results, meta, args.json)
    return 0


def _report(results: dict, meta: dict, json_path: str | None) -> None:
    base_p, base_c = _median(results["baseline"]["produce"]), _median(results["baseline"]["consume"])
    print(f"\nmedians of {meta['runs']} runs, {meta['records']:,} x {meta['value_bytes']}-byte records, "
          f"engine {meta['engine']}, fsync {meta['fsync']}; cpu = CPU microseconds per record")
    print(f"{'scenario':<13}{'produce/s':>11}{'consume/s':>11}{'prod/base':>10}{'cons/base':>10}"
          f"{'prod cpu cli':>13}{'srv':>6}{'cons cpu cli':>13}{'srv':>6}")
    summary = {}
    for name, ph in results.items():
        mp, mc = _median(ph["produce"]), _median(ph["consume"])
        cpu = [_median(ph[k], a) for k in ("produce", "consume")
               for a in ("client_cpu_us_per_record", "server_cpu_us_per_record")]
        summary[name] = {"produce_records_per_s": round(mp), "consume_records_per_s": round(mc),
                         "produce_ratio": round(mp / base_p, 3), "consume_ratio": round(mc / base_c, 3),
                         "produce_client_cpu_us_per_record": round(cpu[0], 3),
                         "produce_server_cpu_us_per_record": round(cpu[1], 3),
                         "consume_client_cpu_us_per_record": round(cpu[2], 3),
                         "consume_server_cpu_us_per_record": round(cpu[3], 3),
                         "runs": {k: [asdict(x) | {"records_per_s": round(x.records_per_s)} for x in v]
                                  for k, v in ph.items()}}
        print(f"{name:<13}{mp:>11,.0f}{mc:>11,.0f}{mp / base_p:>10.0%}{mc / base_c:>10.0%}"
              f"{cpu[0]:>13.2f}{cpu[1]:>6.2f}{cpu[2]:>13.2f}{cpu[3]:>6.2f}")
    if json_path:
        with open(json_path, "w") as f:
            json.dump({"meta": meta, "results": summary}, f, indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
