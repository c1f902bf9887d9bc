"""Failover benchmark: how long writes stop when a partition leader is SIGKILLed.

    python -m bench.failover [--runs 5] [--json out.json] [--chart out.html] [--rate 2000]
                             [--engine segment] [--fsync interval] [--keep]
                             [--records N | --duration S] [--record-size 100] [--topic failover]
                             [--partitions 3] [--replication-factor 3] [--acks all] [--producers 1]
                             [--consumers 0] [--batch-size 1000] [--linger-ms 2] [--compression none]

A fresh cluster of 3 brokers + coordinator on loopback with the DEFAULT liveness settings
(heartbeat 300 ms, session timeout 3000 ms; the test harness's faster values are overridden),
default replica lag (10 s) and interval fsync (1000 ms). One topic of ``--partitions`` (3),
``--replication-factor`` (3; min.insync.replicas 2). Each run:

1. ``--producers`` idempotent producer threads (acks ``--acks``, linger 2 ms unless given) send
   ``--rate`` records/s between them, round-robin over the partitions, noting the send time of
   every record and its acknowledgement time (on_delivery); ``--consumers`` reader threads
   (none by default) read the topic from where the run began, noting when each record was read;
2. once partition P (run % partitions) is acknowledging, its leader gets SIGKILL (time t0);
3. the main thread polls until the first record of P *sent after t0* is acknowledged,
   noting when the coordinator's metadata shows a new leader (observer, like the fault
   suite's LeaderObserver) and when the producer's own metadata cache does;
4. the run goes on until ``--records`` records were sent or ``--duration`` seconds have passed
   since it began, when either is given (never shorter than steps 1-3);
5. the victim restarts and the run waits for healing (full ISR, preferred leaders back).

Reported per run and as medians: kill -> coordinator declares the broker dead (its log),
kill -> observer sees the new leader, kill -> new leader takes over (its log), kill ->
producer's cache points at it, kill -> first acknowledgement of a post-kill record
(the target: <= session_timeout_ms + 1000), the plain gap between the last acknowledgement
before the kill and the first one after it on P, and with readers kill -> first read of a
post-kill record of P. Beside them, the common report of ``loom bench``: records/s, MB/s,
latency from send() to the acknowledgement (and to the read, with readers) over the whole run
with its outage, CPU per acknowledged record of this process and of the cluster, each broker's
peak RSS, and the timeline of the median run with the kill marked (``--chart``).

A running cluster (-c/--bootstrap) is refused: the bench SIGKILLs and restarts brokers it
started itself. Every loop is bounded in count and time; every process is stopped by its pid
(nodes.local_cluster.Cluster.stop_all in a finally); only 127.0.0.1.
"""

from __future__ import annotations

import calendar
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Iterator

from bench import options, report, runner
from bench.failover_load import Load
from bench.options import BenchOptions, Combination, OptionError, UsageParser
from bench.stats import peak_rss_mb, process_cpu_s, us_per_record
from bench.worker import SAMPLE_INTERVAL_S
from fabric.client import LATEST, Admin
from fabric.errors import FabricError
from nodes.local_cluster import Cluster, make_config, wait_until

HEARTBEAT_INTERVAL_MS = 300      # fabric.config.LivenessConfig defaults
SESSION_TIMEOUT_MS = 3000
REPLICA_LAG_TIME_MAX_MS = 10_000  # fabric.config.ReplicationConfig default
FSYNC_INTERVAL_MS = 1000          # fabric.config.StorageConfig default
TARGET_SLACK_MS = 1000            # the issue: failover under session timeout + 1 s
WARMUP_ACKS = 300                 # acknowledgements on the victim partition before the kill
AFTER_ACKS = 100                  # acknowledgements on it after the failover, before the run ends
FAILOVER_S_MAX = 30.0             # kill -> first post-kill acknowledgement, or the run fails
HEAL_S_MAX = 60.0
POLL_S = 0.02                     # the observer's metadata poll interval
WORKLOAD_S_MAX = 120.0            # a run's producers stop after this (plus --duration, or --records' time)
RUN_STEPS = 4                     # warm-up, failover, the rest of the run, healing: the progress bar's quarters
DEFAULTS = {**options.DEFAULTS, "runs": 5, "rate": 2000, "linger_ms": 2, "consumers": 0, "topic": "failover"}


def build_parser() -> UsageParser:
    ap = UsageParser(prog="loom bench failover", description=__doc__.split("\n\n")[0])
    options.add_common_arguments(ap, DEFAULTS, helps={
        "--records": "a run goes on until this many records were sent (and at least until its failover is measured)",
        "--duration": "a run goes on for this many seconds (and at least until its failover is measured)",
        "--topic": "topic name",
        "--producers": "producer threads (sharing --rate)",
        "--consumers": "reader threads reading the topic through the failover",
        "--rate": "records per second offered (all partitions)",
        "--engine": "storage engine", "--fsync": "fsync mode: always, interval, never",
        "--runs": "failovers (medians reported)",
        "--cluster-config": "refused: the bench SIGKILLs brokers it started itself",
        "--bootstrap": "refused: the bench SIGKILLs brokers it started itself",
        "--self-contained": "start a cluster on free ports (always)"})
    ap.add_argument("--keep", action="store_true", help="keep the cluster's directory (logs) for inspection")
    return ap


def parse(argv: list[str] | None) -> tuple[BenchOptions, bool]:
    """The options and ``--keep``; a usage error exits with status 2 (one line)."""
    ap = build_parser()
    ns = ap.parse_args(argv)
    try:
        return options.options_from("failover", ns, DEFAULTS), ns.keep
    except OptionError as e:
        ap.error(str(e))


@dataclass
class Run:
    """One failover, times in ms from the kill (None: not seen)."""

    run: int
    partition: int
    victim: str
    new_leader: str = ""
    coordinator_declared_dead_ms: float | None = None
    observer_new_leader_ms: float | None = None
    new_leader_took_over_ms: float | None = None
    producer_metadata_ms: float | None = None
    first_post_kill_ack_ms: float | None = None
    ack_gap_ms: float | None = None
    first_post_kill_read_ms: float | None = None
    heal_s: float | None = None
    failed_records: int = 0
    acknowledged_records: int = 0


# -- node logs: "2026-11-27 20:41:46,123 LEVEL logger: message" in UTC (nodes.base.setup_logging)
_LOG_TIME = re.compile(r"^(\d{4})-(\d\d)-(\d\d) (\d\d):(\d\d):(\d\d),(\d{3}) ")


def log_time_s(path: Path, needle: str, after_wall_s: float, suffix: str = "") -> float | None:
    """Wall-clock time of the first line of ``path`` containing ``needle`` (and ending with
    ``suffix``) at or after ``after_wall_s`` (one read of the file; None when absent)."""
    try:
        lines = path.read_text(errors="replace").splitlines()[-20_000:]
    except OSError:
        return None
    for line in lines:
        m = _LOG_TIME.match(line)
        if m is None or needle not in line or not line.endswith(suffix):
            continue
        y, mo, d, h, mi, s, ms = (int(g) for g in m.groups())
        t = calendar.timegm((y, mo, d, h, mi, s)) + ms / 1000
        if t >= after_wall_s - 0.001:
            return t
    return None


def _leader(admin: Admin, topic: str, partition: int) -> tuple[int, int]:
    p = admin.metadata().topics[topic].partitions[partition]
    return p.leader, p.leader_epoch


def _ms(t: float | None, t0: float) -> float | None:
    return None if t is None else round((t - t0) * 1000, 1)


def watch_failover(admin: Admin, load: Load, r: Run, topic: str, victim_id: int, epoch: int,
                   t_kill: float) -> dict[str, float]:
    """Poll (bounded by FAILOVER_S_MAX) until a record sent after the kill is acknowledged;
    returns the monotonic times at which each step was first seen."""
    seen: dict[str, float] = {}
    deadline = t_kill + FAILOVER_S_MAX
    producer = load.producers[0].producer
    while time.monotonic() < deadline:
        now = time.monotonic()
        pm = producer.sender.metadata.partition(topic, r.partition)
        if "producer" not in seen and pm is not None and pm.leader_epoch > epoch and pm.leader >= 0:
            seen["producer"] = now
        if "observer" not in seen:
            try:
                leader, e = _leader(admin, topic, r.partition)
                if e > epoch and leader >= 0 and leader != victim_id:
                    seen["observer"] = time.monotonic()
                    r.new_leader = f"broker-{leader}"
            except FabricError:
                pass  # the coordinator is busy or electing: poll again (a bug still stops the bench)
        ack = load.first_ack_sent_after(r.partition, t_kill)
        if ack is not None:
            seen["ack"] = ack
            return seen
        time.sleep(POLL_S)
    raise RuntimeError(f"run {r.run}: no acknowledgement on partition {r.partition} within {FAILOVER_S_MAX}s of the kill")


def healed(admin: Admin, topic: str) -> bool:
    """Every partition led by its preferred replica with a full ISR, and that leader serving."""
    t = admin.metadata().topics[topic]
    if any(p.leader != p.replicas[0] or len(p.isr) < len(p.replicas) for p in t.partitions):
        return False
    admin.list_offsets(topic)  # raises until every leader has taken over
    return True


def _wait(predicate: Callable[[], object], timeout_s: float, what: str, interval_s: float = 0.05) -> None:
    """``wait_until``, its timeout an operating error (one line, exit status 1), not an assertion."""
    try:
        wait_until(predicate, timeout_s, interval_s=interval_s, what=what)
    except AssertionError as e:
        raise RuntimeError(str(e)) from e


def budget_done(o: BenchOptions, sent: int, elapsed_s: float) -> bool:
    """Whether a run has sent its --records or lasted its --duration (true when neither is given:
    the failover alone sets a run's length)."""
    return (o.records is None or sent >= o.records) and (o.duration is None or elapsed_s >= o.duration)


def workload_s_max(o: BenchOptions) -> float:
    """How long a run's producers may go on: the failover's bound plus the run's budget."""
    return WORKLOAD_S_MAX + (o.duration or 0.0) + (o.records / o.rate if o.records else 0.0)


@contextmanager
def ticking(bar: report.Progress, label: str, progress: Callable[[], dict]) -> Iterator[None]:
    """Redraw the progress bar every SAMPLE_INTERVAL_S on a thread of its own while the run's
    thread waits (only that thread writes to stdout meanwhile; the bar is cleared on exit)."""
    if not bar.enabled:
        yield
        return
    halt = threading.Event()

    def loop() -> None:
        while not halt.wait(SAMPLE_INTERVAL_S):
            bar.tick(label, progress())
    ticker = threading.Thread(target=loop, name="failover-progress", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        halt.set()
        ticker.join(timeout=5)
        bar.clear()


def one_run(cluster: Cluster, admin: Admin, o: BenchOptions, run: int, bar: report.Progress) -> tuple[Run, dict]:
    """One failover: the Run (steps) and the run's figures for the common report."""
    topic, partition = o.topic, run % o.partitions
    pids = {name: proc.pid for name, proc in cluster.procs.items()}
    cap_s = workload_s_max(o)
    load = Load(cluster.bootstrap, o, cap_s, admin.list_offsets(topic, LATEST))
    step = [0]

    def progress() -> dict:
        return {"produced": load.acked(), "consumed": load.read(), "elapsed_s": time.monotonic() - load.t0_s,
                "fraction": (run + step[0] / RUN_STEPS) / o.runs}
    rss: dict[str, float] = {}
    cpu0, client0 = process_cpu_s(list(pids.values())), time.process_time()
    with ticking(bar, f"run {run + 1}/{o.runs}", progress):
        load.start()
        try:
            _wait(lambda: load.ack_count(partition) >= WARMUP_ACKS, 30, f"{WARMUP_ACKS} acks on partition {partition}")
            victim_id, epoch = _leader(admin, topic, partition)
            r = Run(run + 1, partition, f"broker-{victim_id}")
            rss[r.victim] = peak_rss_mb(pids[r.victim]) or 0.0  # its last chance to be read
            victim_cpu_s = process_cpu_s([pids[r.victim]])
            wall_kill, t_kill = time.time(), time.monotonic()
            cluster.kill(r.victim, signal.SIGKILL)
            step[0] = 1
            seen = watch_failover(admin, load, r, topic, victim_id, epoch, t_kill)
            acked = load.ack_count(partition)
            _wait(lambda: load.ack_count(partition) >= acked + AFTER_ACKS, 30, "acknowledgements after the failover")
            if load.readers:  # a consumer fails over on its own (its fetch to the dead leader times out)
                _wait(lambda: load.first_read_sent_after(partition, t_kill) is not None, FAILOVER_S_MAX,
                      f"a reader to read a record of partition {partition} sent after the kill", interval_s=POLL_S)
            step[0] = 2
            _wait(lambda: budget_done(o, load.sent(), time.monotonic() - load.t0_s), cap_s,
                  "the run's --records or --duration", interval_s=0.1)
        finally:
            load.stop()
        cluster_cpu_s = process_cpu_s([pid for name, pid in pids.items() if name != r.victim]) + victim_cpu_s - cpu0
        client_cpu_s = time.process_time() - client0
        rss |= {n: peak_rss_mb(pid) or 0.0 for n, pid in pids.items() if n.startswith("broker-") and n != r.victim}
        r.first_post_kill_ack_ms = _ms(seen["ack"], t_kill)
        r.observer_new_leader_ms = _ms(seen.get("observer"), t_kill)
        r.producer_metadata_ms = _ms(seen.get("producer"), t_kill)
        gap = load.ack_gap_s(partition, t_kill - 1.0, seen["ack"])
        r.ack_gap_ms = None if gap is None else round(gap * 1000, 1)
        if load.readers:
            r.first_post_kill_read_ms = _ms(load.first_read_sent_after(partition, t_kill), t_kill)
        r.failed_records, r.acknowledged_records = load.failed(), load.acked()
        figures = load.figures(load.t0_s, load.t1_s, o.record_size)
        figures |= {"cpu_us_per_record": {"client": us_per_record(client_cpu_s, figures["records"]),
                                          "cluster": us_per_record(cluster_cpu_s, figures["records"])},
                    "broker_peak_rss_mb": {n: round(mb, 1) for n, mb in sorted(rss.items())},
                    "broker_rss_growth_mb_per_min": {},
                    "markers": [{"t_s": round(t_kill - load.t0_s, 3), "label": "SIGKILL"},
                                {"t_s": round(seen["ack"] - load.t0_s, 3), "label": "first ack"}]}
        # log lines are written with millisecond wall-clock stamps: convert to ms after the kill
        logs = cluster.log_dir
        # "broker N missed its session (…): dead" or, with crash detection, "broker N disconnected (…): dead"
        dead = log_time_s(logs / "coordinator.log", f"broker {victim_id} ", wall_kill, suffix="): dead")
        took = (log_time_s(logs / f"{r.new_leader}.log", f"{topic}-{partition}: leader at epoch", wall_kill)
                if r.new_leader else None)
        r.coordinator_declared_dead_ms = _ms(dead, wall_kill)
        r.new_leader_took_over_ms = _ms(took, wall_kill)
        step[0] = 3
        t_heal = time.monotonic()
        cluster.start_node(r.victim)
        _wait(partial(healed, admin, topic), HEAL_S_MAX, "full ISR and preferred leaders", interval_s=0.2)
        r.heal_s = round(time.monotonic() - t_heal, 2)
    return r, figures


# -- reporting ---------------------------------------------------------------------------------
STEPS = (("coordinator_declared_dead_ms", "dead", "coordinator declares the leader dead (its log)"),
         ("observer_new_leader_ms", "observer", "observer sees the new leader in metadata"),
         ("new_leader_took_over_ms", "took over", "new leader takes over (its log)"),
         ("producer_metadata_ms", "producer md", "producer's metadata cache points at it"),
         ("first_post_kill_ack_ms", "first ack", "first ack of a record sent after the kill"),
         ("ack_gap_ms", "ack gap", "longest gap between acks on the partition (1 s before the kill on)"),
         ("first_post_kill_read_ms", "first read", "first read (a reader) of a record sent after the kill"))


def _median(runs: list[Run], attr: str) -> float | None:
    values = [getattr(r, attr) for r in runs if getattr(r, attr) is not None]
    return round(statistics.median(values), 1) if values else None


def document(o: BenchOptions, runs: list[Run], figures: list[dict], meta: dict) -> dict:
    """The common report's document of the runs, with the failover's own keys (``target_ms``,
    ``target_met``, ``medians``, ``worst_first_post_kill_ack_ms``; each run's steps in
    ``runs``, its meta in ``meta``)."""
    combo = Combination(o.engines[0], o.fsyncs[0])
    merged = [asdict(r) | f | {"label": combo.label, "combination": combo.as_dict()} for r, f in zip(runs, figures)]
    doc = report.document(o, [combo], {combo: merged})
    target_ms = meta["session_timeout_ms"] + TARGET_SLACK_MS
    medians = {k: _median(runs, k) for k, _, _ in STEPS}
    doc["meta"].update(meta)
    doc.update(target_ms=target_ms, medians=medians,
               target_met=medians["first_post_kill_ack_ms"] is not None and medians["first_post_kill_ack_ms"] <= target_ms,
               worst_first_post_kill_ack_ms=max((r.first_post_kill_ack_ms or 0) for r in runs))
    return doc


def print_steps(runs: list[Run], doc: dict) -> None:
    """The table of every run's steps, their medians and the target."""
    steps = [s for s in STEPS if s[0] != "first_post_kill_read_ms" or doc["medians"][s[0]] is not None]
    print(f"\n{'run':>3} {'part':>4} {'victim':>9} {'new':>9}" + "".join(f"{short:>12}" for _, short, _ in steps))
    for r in runs:
        cells = "".join(f"{getattr(r, k) if getattr(r, k) is not None else '-':>12}" for k, _, _ in steps)
        print(f"{r.run:>3} {r.partition:>4} {r.victim:>9} {r.new_leader:>9}{cells}")
    print(f"\nmedians of {len(runs)} runs (ms after the SIGKILL):")
    for k, _, label in steps:
        print(f"  {label:<66} {doc['medians'][k]}")
    print(f"target: first ack on the new leader <= session_timeout_ms + {TARGET_SLACK_MS} = {doc['target_ms']} ms: "
          f"{'MET' if doc['target_met'] else 'MISSED'} (median {doc['medians']['first_post_kill_ack_ms']} ms, "
          f"worst {doc['worst_first_post_kill_ack_ms']} ms)")


def run_all(o: BenchOptions, keep: bool = False) -> dict:
    """Every run on one fresh cluster; prints a line per run and the steps' table; returns the
    result document."""
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "runs": o.runs, "rate_per_s": o.rate,
            "engine": o.engines[0], "fsync": o.fsyncs[0], "fsync_interval_ms": FSYNC_INTERVAL_MS,
            "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS, "session_timeout_ms": SESSION_TIMEOUT_MS,
            "replica_lag_time_max_ms": REPLICA_LAG_TIME_MAX_MS, "python": platform.python_version(),
            "platform": platform.platform(), "cpus": os.cpu_count(), "load_avg": os.getloadavg()}
    work = Path(tempfile.mkdtemp(prefix="loom-bench-failover-"))
    cluster = Cluster(make_config(work, 3, engine=o.engines[0], fsync=o.fsyncs[0], overrides={
        "storage": {"fsync_interval_ms": FSYNC_INTERVAL_MS},
        "liveness": {"heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS, "session_timeout_ms": SESSION_TIMEOUT_MS},
        "replication": {"replica_lag_time_max_ms": REPLICA_LAG_TIME_MAX_MS}}))
    bar = report.Progress(o, enabled=o.progress if o.progress is not None else sys.stdout.isatty())
    runs: list[Run] = []
    figures: list[dict] = []
    try:
        try:
            cluster.start()
        except AssertionError as e:  # local_cluster's wait_until: a node did not answer in time
            raise RuntimeError(f"the cluster did not start: {e}") from e
        with Admin(cluster.bootstrap, timeout_ms=1000) as admin:
            admin.create_topic(o.topic, partitions=o.partitions, replication_factor=o.replication_factor)
            try:
                cluster.wait_topic_ready(admin, o.topic, timeout_s=30)
            except AssertionError as e:  # wait_until's timeout: an operating error here
                raise RuntimeError(str(e)) from e
            for run in range(o.runs):
                r, f = one_run(cluster, admin, o, run, bar)
                runs.append(r)
                figures.append(f)
                read = f", first post-kill read {r.first_post_kill_read_ms} ms" if r.first_post_kill_read_ms else ""
                print(f"run {r.run}: partition {r.partition}, killed {r.victim} -> {r.new_leader}: "
                      f"first post-kill ack {r.first_post_kill_ack_ms} ms (dead {r.coordinator_declared_dead_ms}, "
                      f"observer {r.observer_new_leader_ms}, took over {r.new_leader_took_over_ms}, producer "
                      f"{r.producer_metadata_ms}), ack gap {r.ack_gap_ms} ms{read}, healed in {r.heal_s} s, "
                      f"failed records {r.failed_records}", flush=True)
    finally:
        cluster.stop_all()
        if keep:
            print(f"cluster directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta["load_avg_end"] = os.getloadavg()
    doc = document(o, runs, figures, meta)
    print_steps(runs, doc)
    return doc


def main(argv: list[str] | None = None) -> int:
    o, keep = parse(argv)
    return runner.publish(o, partial(run_all, keep=keep))


if __name__ == "__main__":
    raise SystemExit(main())
