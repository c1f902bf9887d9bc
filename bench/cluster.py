"""Cluster benchmark: produce and consume throughput through the client library on a 3-broker
cluster (plus coordinator) it starts on free ports, or a running one (-c/--bootstrap), for each
scenario (replication factor x acks), with a raw pyzmq baseline in the same invocation.

    python -m bench.cluster [--records N | --duration S] [--runs 3] [--json out.json] [--chart out.html]
                            [--scenarios rf1-acks1,rf3-acksall | --replication-factor R --acks A]
                            [--engine segment] [--fsync interval] [--record-size 100 (--value-bytes)]
                            [--partitions 3] [--producers 1] [--consumers 1] [--batch-size 1000]
                            [--linger-ms 5] [--compression none] [--rate N] [--topic T]
                            [-c CONFIG | --bootstrap HOST:PORT,... | --self-contained]

Scenarios: rf1-acks1 (replication factor 1, acks=1) and rf3-acksall (3, acks=all,
min.insync.replicas 2) unless ``--scenarios`` names others of the form rf<R>-acks<0|1|all>, or
``--replication-factor``/``--acks`` make the one scenario rf<R>-acks<A>. Every scenario run is a
``loom bench consume`` run on the one cluster of the invocation: a fresh topic of
``--partitions`` (``--topic`` names it, for one scenario), ``--producers`` processes write
``--records`` records (or for ``--duration`` seconds, or at ``--rate``) with the producer
options given, then ``--consumers`` processes drain them; produce and drain are measured apart,
with the produce-ack latency, CPU per record and each broker's peak RSS, and every record
produced must be consumed.
Baseline (before the cluster starts): one DEALER -> ROUTER process pair moving the same record
bytes as msgpack frames of ``--batch-size`` records (produce: client packs and sends, server
answers each frame; consume: server sends pre-packed frames, client unpacks every record).
Ratios = Loom / baseline.

Every loop is bounded by a count and a time limit; every process started here is stopped by
its pid; a self-contained cluster's data lives in a temp directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Callable

import msgpack
import zmq

from bench import options, report, runner
from bench.options import BenchOptions, Combination, OptionError, UsageParser
from bench.stats import process_cpu_s
from bench.worker import payload
from bench.workload import Target, delete_run_topic
from fabric.client.accumulator import AccumulatorSettings
from fabric.client.producer import RECORD_OVERHEAD_BYTES
from fabric.zmq_context import context as zmq_context
from nodes.local_cluster import free_ports

BASELINE_WINDOW = 16          # frames in flight in the baseline (the producer pipelines too)
PHASE_SECONDS_MAX = 120.0     # a baseline produce or consume phase of a --records run
SERVER_LIFETIME_S_MAX = 900   # the baseline server exits on its own after this
SCENARIOS = ("rf1-acks1", "rf3-acksall")
SCENARIO_NAME = re.compile(r"rf([0-9]+)-acks(0|1|all)")
DEFAULTS = {**options.DEFAULTS, "runs": 3}


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
    ctx = zmq_context()
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


def baseline(records: int | None, value: bytes, frame_records: int, seconds_max: float | None,
             rate: int | None = None) -> tuple[Phase, Phase]:
    """Produce and consume the same records over raw DEALER -> ROUTER (one process pair), in
    frames of ``frame_records``: ``records`` of them (None: as many as ``seconds_max`` allows),
    offered at ``rate`` records/s when given (as the scenarios are), else as fast as it goes."""
    port = free_ports(1)[0]
    proc = subprocess.Popen([sys.executable, "-m", "bench.cluster", "--baseline-server", str(port)],
                            cwd=str(Path(__file__).resolve().parent.parent))
    sock = zmq_context().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    phase_s = seconds_max if seconds_max is not None else PHASE_SECONDS_MAX
    try:
        sock.send_multipart([b"P"])
        if not sock.poll(10_000):
            raise RuntimeError("baseline server did not answer")
        sock.recv()
        frames = max(1, (records if records is not None else options.RECORDS_MAX) // frame_records)
        # produce: build each frame from records (as a producer does), keep a window in flight
        cpu = CpuMeter([proc.pid])
        t0 = time.perf_counter()
        sent = acked = 0
        while acked < frames and time.perf_counter() - t0 < phase_s:
            while sent < frames and sent - acked < BASELINE_WINDOW and (
                    rate is None or t0 + sent * frame_records / rate <= time.perf_counter()):  # paced
                recs = [(time.time_ns() // 1_000_000, None, value, None) for _ in range(frame_records)]
                sock.send_multipart([b"P", msgpack.packb(recs, use_bin_type=True)], copy=False)
                sent += 1
            if sock.poll(1000 if rate is None else 1):  # paced: back to the schedule within 1 ms
                sock.recv()
                acked += 1
        while acked < sent and sock.poll(10_000):  # the frames in flight when the time was up
            sock.recv()
            acked += 1
        produce = cpu.phase(acked * frame_records, time.perf_counter() - t0)
        # consume: fetch pre-packed frames, unpack every record (as a consumer does)
        sock.send_multipart([b"S", msgpack.packb([(0, None, value, None)] * frame_records, use_bin_type=True)])
        sock.poll(10_000)
        sock.recv()
        cpu = CpuMeter([proc.pid])
        t0 = time.perf_counter()
        asked = got = total = 0
        while got < acked and time.perf_counter() - t0 < PHASE_SECONDS_MAX:
            while asked < acked and asked - got < BASELINE_WINDOW:
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


# -- the scenarios ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scenario:
    """A replication factor and acks setting (or, with neither, the raw pyzmq baseline)."""

    name: str
    replication_factor: int | None = None
    acks: str | None = None

    @property
    def label(self) -> str:
        return self.name

    def as_dict(self) -> dict:
        return {"scenario": self.name, "replication_factor": self.replication_factor, "acks": self.acks}


BASELINE = Scenario("baseline")


def scenario(name: str) -> Scenario:
    """``rf<R>-acks<0|1|all>`` as a Scenario; raises OptionError for another name."""
    m = SCENARIO_NAME.fullmatch(name)
    if m is None:
        raise OptionError(f"--scenarios: {name!r} is not rf<R>-acks<0|1|all> (e.g. {', '.join(SCENARIOS)})")
    return Scenario(name, int(m.group(1)), m.group(2))


def build_parser() -> UsageParser:
    ap = UsageParser(prog="loom bench cluster", description=__doc__.split("\n\n")[0])
    options.add_common_arguments(ap, DEFAULTS, aliases={"--record-size": ("--value-bytes",)}, helps={
        "--topic": "topic name, for one scenario (default: a fresh bench-cluster-... topic per scenario run)",
        "--replication-factor": "run the one scenario rf<R>-acks<A> (instead of --scenarios) with this R",
        "--acks": "run the one scenario rf<R>-acks<A> (instead of --scenarios) with this A",
        "--consumers": "consumer processes draining each scenario's topic",
        "--rate": "fixed offered rate of each produce phase, records/s over all producers (open loop)",
        "--engine": "storage engine of the self-contained cluster",
        "--fsync": "fsync mode of the self-contained cluster: always, interval, never",
        "--runs": "runs of every scenario and of the baseline (medians reported)"})
    ap.add_argument("--scenarios", help=f"comma list of rf<R>-acks<0|1|all> (default {','.join(SCENARIOS)})")
    ap.add_argument("--baseline-server", type=int, help=argparse.SUPPRESS)
    return ap


def configure(ns: argparse.Namespace) -> tuple[BenchOptions, list[Scenario]]:
    """The options and the scenarios to run; raises OptionError."""
    o = options.options_from("cluster", ns, DEFAULTS)
    own = ns.replication_factor is not None or ns.acks is not None
    if own and ns.scenarios is not None:
        raise OptionError("--scenarios names the scenarios and --replication-factor/--acks make one: give one or the other")
    names = [f"rf{o.replication_factor}-acks{o.acks}"] if own else options.comma_list(ns.scenarios or ",".join(SCENARIOS))
    scenarios = list(dict.fromkeys(scenario(n) for n in names))
    if not scenarios:
        raise OptionError("--scenarios: name at least one")
    for s in scenarios:  # the shared checks (a replication factor the cluster can hold) for each
        options.validate(replace(o, replication_factor=s.replication_factor, acks=s.acks))
    if o.topic is not None and len(scenarios) > 1:
        raise OptionError(f"--topic names one topic, and the scenarios {', '.join(s.name for s in scenarios)} need one "
                          "each: pick one with --scenarios or --replication-factor/--acks")
    return o, scenarios


def parse(argv: list[str]) -> tuple[BenchOptions, list[Scenario]]:
    """Parse and validate; a usage error exits with status 2 (one line)."""
    ap = build_parser()
    ns = ap.parse_args(argv)
    try:
        return configure(ns)
    except OptionError as e:
        ap.error(str(e))


def frame_records(o: BenchOptions) -> int:
    """Records per baseline frame: what the producer puts in a batch (``--batch-size`` records
    within its byte bound), and no more than the run's records."""
    records = min(o.batch_size, max(1, AccumulatorSettings().batch_bytes_max // (o.record_size + RECORD_OVERHEAD_BYTES)))
    target = o.record_target()
    return records if target is None else max(1, min(records, target))


def baseline_run(o: BenchOptions, run: int) -> dict:
    """One baseline run as the report's run figures (no latency, no brokers)."""
    p, c = baseline(o.record_target(), payload(o.record_size), frame_records(o), o.duration, o.rate)

    def figures(ph: Phase) -> dict:
        return {"records": ph.records, "seconds": ph.seconds, "records_per_s": round(ph.records_per_s),
                "mb_per_s": round(ph.records * o.record_size / 1e6 / ph.seconds, 2) if ph.seconds > 0 else 0,
                "cpu_us_per_record": {"client": round(ph.client_cpu_us_per_record, 3),
                                      "cluster": round(ph.server_cpu_us_per_record, 3)},
                "cpu_s": {"client": ph.client_cpu_s, "cluster": ph.server_cpu_s}}
    drained = figures(c)
    return {"label": BASELINE.label, "combination": BASELINE.as_dict(), "run": run + 1, **figures(p), "errors": 0,
            "latency_ms": {"p50": None, "p99": None, "p999": None, "samples": 0},
            "consumed_records": c.records, "consume_seconds": c.seconds,
            "consume_records_per_s": drained["records_per_s"], "consume_mb_per_s": drained["mb_per_s"],
            "consume_cpu_us_per_record": drained["cpu_us_per_record"], "consume_cpu_s": drained["cpu_s"],
            "broker_peak_rss_mb": {}, "broker_rss_growth_mb_per_min": {}, "timeline": []}


def scenario_run(o: BenchOptions, s: Scenario, combo: Combination, target: Target, run: int,
                 on_tick: Callable[[dict], None] | None = None) -> dict:
    """One scenario run (``loom bench consume``'s produce, then drain) as produce-led figures:
    the produce phase at the top, the drain in ``consume_*``."""
    so = replace(o, command="consume", replication_factor=s.replication_factor, acks=s.acks,
                 topic=o.topic or f"bench-cluster-{s.name}-{run}-{uuid.uuid4().hex[:8]}")
    try:
        r = runner.run_once(so, combo, target, run, on_tick)
    finally:
        if not target.self_contained and o.topic is None and not o.keep_topics:  # a topic made here
            delete_run_topic(target.bootstrap, so.topic, None)
    p = r["produce"]
    if p["errors"] == 0 and r["records"] != p["records"]:
        raise RuntimeError(f"{r['topic']}: produced {p['records']} records, consumed {r['records']}")
    return {"label": s.label, "combination": s.as_dict() | combo.as_dict(), "run": r["run"], "topic": r["topic"], **p,
            "consumed_records": r["records"], "expected_records": r["expected_records"],
            "consume_seconds": r["seconds"], "consume_records_per_s": r["records_per_s"],
            "consume_mb_per_s": r["mb_per_s"], "consume_cpu_us_per_record": r["cpu_us_per_record"],
            "consume_cpu_s": r["cpu_s"], "broker_peak_rss_mb": r["broker_peak_rss_mb"],
            "broker_rss_growth_mb_per_min": r["broker_rss_growth_mb_per_min"], "timeline": r["timeline"],
            **({"stopped_early": r["stopped_early"]} if "stopped_early" in r else {})}


def run_all(o: BenchOptions, scenarios: list[Scenario], out: Callable[[str], None] = print) -> dict:
    """The baseline runs, then every scenario once per run on one cluster (started here unless
    -c/--bootstrap name one). Returns the result document."""
    runs: dict[Scenario, list[dict]] = {s: [] for s in [*scenarios, BASELINE]}
    for run in range(o.runs):
        r = baseline_run(o, run)
        runs[BASELINE].append(r)
        out(report.run_line(f"run {run + 1}/{o.runs} baseline", r))
    bar = report.Progress(o, enabled=o.progress if o.progress is not None else sys.stdout.isatty())
    combo = Combination(o.engines[0], o.fsyncs[0])
    with runner.cluster_for(o, combo) as target:
        for run in range(o.runs):
            for s in scenarios:
                label = f"run {run + 1}/{o.runs} {s.name}"
                try:
                    r = scenario_run(o, s, combo, target, run, on_tick=partial(bar.tick, label))
                finally:
                    bar.clear()
                runs[s].append(r)
                out(report.run_line(label, r))
    doc = report.document(o, [*scenarios, BASELINE], runs, ratio_to=BASELINE.label)
    doc["meta"].update(records=o.record_target(), duration_s=o.duration, runs=o.runs, engine=combo.engine,
                       fsync=combo.fsync, value_bytes=o.record_size)
    doc["results"] = results(runs)
    return doc


def results(runs: dict[Scenario, list[dict]]) -> dict:
    """The document's older ``results``: per scenario (baseline first) the medians, the ratios
    to the baseline and every run's produce and consume phase."""
    med = report.median_at
    base_p, base_c = med(runs[BASELINE], "records_per_s"), med(runs[BASELINE], "consume_records_per_s")
    out = {}
    for s in [BASELINE, *(s for s in runs if s != BASELINE)]:
        rs = runs[s]
        mp, mc = med(rs, "records_per_s"), med(rs, "consume_records_per_s")
        out[s.name] = {
            "produce_records_per_s": round(mp), "consume_records_per_s": round(mc),
            "produce_ratio": round(mp / base_p, 3), "consume_ratio": round(mc / base_c, 3),
            "produce_client_cpu_us_per_record": med(rs, "cpu_us_per_record", "client"),
            "produce_server_cpu_us_per_record": med(rs, "cpu_us_per_record", "cluster"),
            "consume_client_cpu_us_per_record": med(rs, "consume_cpu_us_per_record", "client"),
            "consume_server_cpu_us_per_record": med(rs, "consume_cpu_us_per_record", "cluster"),
            "runs": {"produce": [_phase(r["records"], r["seconds"], r["cpu_s"], r["records_per_s"]) for r in rs],
                     "consume": [_phase(r["consumed_records"], r["consume_seconds"], r["consume_cpu_s"],
                                        r["consume_records_per_s"]) for r in rs]}}
    return out


def _phase(records: int, seconds: float, cpu_s: dict, records_per_s: float) -> dict:
    return {"records": records, "seconds": seconds, "client_cpu_s": cpu_s["client"],
            "server_cpu_s": cpu_s["cluster"], "records_per_s": round(records_per_s)}


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    ns = ap.parse_args(argv)
    if ns.baseline_server:
        return baseline_server(ns.baseline_server)
    try:
        o, scenarios = configure(ns)
    except OptionError as e:
        ap.error(str(e))
    return runner.publish(o, partial(run_all, scenarios=scenarios))


if __name__ == "__main__":
    raise SystemExit(main())
