"""``loom bench produce|consume|e2e``: every combination of ``--engine`` x ``--fsync`` x
``--api`` on a fresh self-contained cluster (or the one running cluster), interleaved over
``--runs``; medians, ratios to the first combination, an optional peer figure, then the table,
``--json`` and ``--chart``.

    python -m bench.runner produce --records 200000 --engine segment,lmdb --runs 3

Every process started here is stopped by its pid; each self-contained cluster's data lives in
a temp directory removed after its run. Not thread-safe.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterator

from bench import peer, report
from bench.options import BenchOptions, Combination, OptionError, parse, usage_error
from bench.stats import (LatencyHistogram, disk_figures, find_node_pids, growth_mb_per_min, peak_rss_mb, reset_peak_rss,
                         us_per_record)
from bench.workload import (PhaseCost, Run, Target, check_room_before_run, create_topic, delete_run_topic, record_shares,
                            tell)
from fabric.config import ConfigError
from fabric.errors import FabricError
from nodes.local_cluster import Cluster, make_config

MB = 1e6


def cluster_overrides(o: BenchOptions, combo: Combination | None = None) -> dict:
    """The self-contained cluster's config: the defaults of a real deployment where the test
    harness is faster (fsync interval 1 s, replica lag 10 s), a patient session; and the
    combination's direct-write threshold when it names one."""
    storage: dict = {"fsync_interval_ms": o.fsync_interval_ms}
    if combo is not None and combo.direct_write_min_bytes is not None:
        storage["direct_write_min_bytes"] = combo.direct_write_min_bytes
    return {"storage": storage,
            "liveness": {"heartbeat_interval_ms": 200, "session_timeout_ms": 6000},
            "replication": {"replica_lag_time_max_ms": 10_000}}


@contextmanager
def cluster_for(o: BenchOptions, combo: Combination) -> Iterator[Target]:
    """A fresh cluster for one run (self-contained), or the running one named by -c/--bootstrap."""
    if not o.self_contained:
        from fabric.client.bootstrap import parse_bootstrap
        pids = find_node_pids(o.config) if o.config else {}
        yield Target(parse_bootstrap(o.bootstrap, o.config), pids, False)
        return
    work = Path(tempfile.mkdtemp(prefix="loom-bench-"))
    try:
        check_room_before_run(str(work))
    except RuntimeError:
        shutil.rmtree(work, ignore_errors=True)
        raise
    cluster = Cluster(make_config(work, o.brokers, engine=combo.engine, fsync=combo.fsync,
                                  overrides=cluster_overrides(o, combo)))
    try:
        try:
            cluster.start()
        except AssertionError as e:  # local_cluster's wait_until: a node did not answer in time
            raise RuntimeError(f"the self-contained cluster did not start: {e}") from e
        yield Target([f"tcp://{a}" for a in cluster.bootstrap.split(",")],
                     {n: p.pid for n, p in cluster.procs.items()}, True, data_dir=str(work))
    finally:
        cluster.stop_all()
        shutil.rmtree(work, ignore_errors=True)


def run_once(o: BenchOptions, combo: Combination, target: Target, run: int,
             on_tick: Callable[[dict], None] | None = None) -> dict:
    """One run of the workload; returns its figures (see ``report`` for the shape)."""
    topic = create_topic(target.bootstrap, o, run)
    for pid in target.broker_pids.values():  # the peak is this run's on a cluster used before too
        reset_peak_rss(pid)
    work = tempfile.mkdtemp(prefix="loom-bench-workers-")
    r = Run(o, target, topic, work, on_tick)
    try:
        producers_n = o.producers
        shares = record_shares(o.record_target(), producers_n)
        rates = record_shares(o.rate, producers_n) if o.rate else [None] * producers_n
        consumers: list = []
        if o.command != "produce":
            n = min(o.consumers, o.partitions)
            group = f"bench-group-{topic}" if o.group else None
            consumers = r.start([r.spec("consumer", i, partitions=list(range(i, o.partitions, n)), group=group,
                                        mode="drain" if o.command == "consume" else "follow", api=combo.api)
                               for i in range(n)])

        def stop_consumers() -> None:
            if o.group:
                r.stop_when_read(consumers)
            else:
                tell(consumers, "stop")
        producers = r.start([r.spec("producer", i, records=shares[i], duration=o.duration, rate=rates[i] or None,
                                    api=combo.api, max_in_flight=combo.max_in_flight) for i in range(producers_n)])
        out: dict = {"label": combo.label, "combination": combo.as_dict(), "run": run + 1, "topic": topic}
        if o.command == "produce":
            cost = r.phase(producers)
            out.update(_produce_figures(o, producers, cost))
        elif o.command == "e2e":
            cost = r.phase(producers + consumers, then=stop_consumers)
            out.update(_produce_figures(o, producers, cost, consumers))
            out.update(_consume_figures(o, consumers, cost.cpu_s, r.group_expected, key="consume"))
        else:
            cost = r.phase(producers)
            drain = r.phase(consumers, then=stop_consumers if o.group else None)
            out["produce"] = _produce_figures(o, producers, cost)
            out.update(_consume_figures(o, consumers, drain.cpu_s, r.group_expected, key=None))
            out["latency_ms"] = out["produce"]["latency_ms"]
            out["disk_write"] = out["produce"]["disk_write"]  # the backlog's writing
        out["broker_peak_rss_mb"] = _peak_rss(target, r.rss_peak_mb)
        out["broker_rss_growth_mb_per_min"] = {n: growth_mb_per_min(s) for n, s in r.rss_samples_mb.items()}
        out["timeline"] = r.timeline.points()
        if r.stopped_early is not None:
            out["stopped_early"] = r.stopped_early
        return out
    finally:
        r.close()
        shutil.rmtree(work, ignore_errors=True)
        if not target.self_contained and o.topic is None and not o.keep_topics:
            delete_run_topic(target.bootstrap, topic, f"bench-group-{topic}" if o.group else None)


def _span(done: list[dict]) -> float:
    return max(d["t_end"] for d in done) - min(d["t_start"] for d in done)


def _produce_figures(o: BenchOptions, producers: list, cost: PhaseCost, consumers: list | None = None) -> dict:
    cluster_cpu_s = cost.cpu_s
    done = [w.done for w in producers]
    records, seconds = sum(d["records"] for d in done), _span(done)
    lat, delay = LatencyHistogram(), LatencyHistogram()
    for d in done:
        lat.merge(LatencyHistogram.from_json(d["lat"]))
        delay.merge(LatencyHistogram.from_json(d.get("send_delay")))
    client_s = sum(d["cpu_s"] for d in done) + sum(w.done["cpu_s"] for w in consumers or [])
    figures = {"records": records, "errors": sum(d["errors"] for d in done), "seconds": round(seconds, 3),
            "records_per_s": round(records / seconds) if seconds > 0 else 0,
            "mb_per_s": round(records * o.record_size / MB / seconds, 2) if seconds > 0 else 0,
            "offered_per_s": o.rate, "latency_ms": lat.summary_ms(),
            "cpu_us_per_record": {"client": us_per_record(client_s, records), "cluster": us_per_record(cluster_cpu_s, records)},
            "cpu_s": {"client": client_s, "cluster": cluster_cpu_s},
            # over the producers' span, as records/s (an e2e phase lasts on while consumers catch up)
            "disk_write": disk_figures(cost.write_bytes, records, seconds)}
    if o.rate:  # open loop: how late the sends went out against their schedule (the
        #         OpenMessaging Benchmark's publish delay; the ack latency counts from the send)
        figures["send_delay_ms"] = delay.summary_ms()
    return figures


def _consume_figures(o: BenchOptions, consumers: list, cluster_cpu_s: float | None, group_expected: int | None,
                     key: str | None) -> dict:
    done = [w.done for w in consumers]
    records, seconds = sum(d["records"] for d in done), _span(done)
    expected = group_expected if group_expected is not None else sum(d["expected"] or 0 for d in done)
    e2e = LatencyHistogram()
    for d in done:
        e2e.merge(LatencyHistogram.from_json(d["e2e"]))
    figures = {"consumed_records": records, "expected_records": expected, "consume_seconds": round(seconds, 3),
               "consume_records_per_s": round(records / seconds) if seconds > 0 else 0,
               "consume_mb_per_s": round(records * o.record_size / MB / seconds, 2) if seconds > 0 else 0}
    if key == "consume":  # e2e: the produce figures lead; add the consumers' and the end-to-end latency
        return figures | {"e2e_latency_ms": e2e.summary_ms()}
    client_s = sum(d["cpu_s"] for d in done)
    return figures | {"records": records, "seconds": figures["consume_seconds"],
                      "records_per_s": figures["consume_records_per_s"], "mb_per_s": figures["consume_mb_per_s"],
                      "cpu_us_per_record": {"client": us_per_record(client_s, records), "cluster": us_per_record(cluster_cpu_s, records)},
                      "cpu_s": {"client": client_s, "cluster": cluster_cpu_s}}


def _peak_rss(target: Target, sampled: dict[str, float]) -> dict[str, float]:
    """A fresh cluster's brokers: their lifetime peak (VmHWM, exact); a running cluster's: the
    highest of the samples taken during the run."""
    if target.self_contained:
        return {n: round(peak_rss_mb(p) or sampled.get(n, 0.0), 1) for n, p in target.broker_pids.items()}
    return {n: round(v, 1) for n, v in sampled.items()}


def run_all(o: BenchOptions, out: Callable[[str], None] = print) -> dict:
    """Every combination, interleaved over the runs (the order rotates each run, so a drift in
    the machine's load falls on all of them alike). Returns the whole result document."""
    combos = o.combinations()
    runs: dict[Combination, list[dict]] = {c: [] for c in combos}
    bar = report.Progress(o, enabled=o.progress if o.progress is not None else sys.stdout.isatty())
    for run in range(o.runs):
        for combo in combos[run % len(combos):] + combos[:run % len(combos)]:
            label = f"run {run + 1}/{o.runs} {combo.label}"
            with cluster_for(o, combo) as target:
                result = run_once(o, combo, target, run, on_tick=lambda p, label=label: bar.tick(label, p))
            bar.clear()
            runs[combo].append(result)
            out(report.run_line(label, result))
    doc = report.document(o, combos, runs)
    if o.peer:
        doc["peer"] = peer.run(o, out)
    return doc


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("produce", "consume", "e2e"):
        print("usage: python -m bench.runner produce|consume|e2e [options]  (see --help)", file=sys.stderr)
        return 2
    try:
        o = parse(args[0], args[1:])
        o = replace(o, apis=available_apis(o))
    except OptionError as e:
        print(usage_error(f"loom bench {args[0]}", str(e)), file=sys.stderr)
        return 2
    return publish(o, run_all)


def publish(o: BenchOptions, run: Callable[[BenchOptions], dict]) -> int:
    """Run a benchmark (``run(o)`` returns its document), then print the table and write
    ``--json`` and ``--chart``. An operating error (no cluster there, a worker failed, a wait
    timed out) is one line and exit status 1."""
    try:
        doc = run(o)
    except (FabricError, ConfigError, RuntimeError) as e:
        print(f"loom: error: {e}", file=sys.stderr)
        return 1
    report.print_table(doc)
    if o.json:
        report.write_json(o.json, doc)
        print(f"results: {o.json}")
    if o.chart:
        report.write_chart(o.chart, doc)
        print(f"chart: {o.chart}")
    return 0


def available_apis(o: BenchOptions) -> list[str]:
    """The APIs asked for that this client has (``send_many`` only when the Producer has it)."""
    from fabric.client import Producer
    apis = [a for a in o.apis if a != "send_many" or hasattr(Producer, "send_many")]
    if len(apis) < len(o.apis):
        print("note: this client's Producer has no send_many: measuring send only", file=sys.stderr)
    if not apis:
        raise OptionError("--api send_many: this client's Producer has no send_many")
    return apis


if __name__ == "__main__":
    raise SystemExit(main())
