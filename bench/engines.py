"""Storage-engine benchmark: append / read throughput per engine and fsync mode against a plain
Python file baseline written and read in the same run, plus reopen (recovery) time of a large
log.

    python -m bench.engines [--quick] [--json out.json] [--chart out.html (--html)] [--runs 3 (--repeat)]
                            [--engine segment,lmdb,memory (--engines)] [--fsync never,interval,always]
                            [--record-size B] [--batch-size N] [--records N | --duration S]

Rows: every engine x fsync mode x records per batch (1, 100, 1000; ``--batch-size`` picks one)
x record size (100, 1024 bytes; ``--record-size`` picks one). Each row appends up to 256 MiB
or for 4 s (``--quick``: 16 MiB, 1 s), ``--records`` records (in whole batches) or for
``--duration`` seconds (at most ROW_BYTES_MAX_ASKED either way), then reads it all back. Key
rows (fsync never, 1000 x 100-byte records, or the batch and size given; segment and lmdb) are
run ``--runs`` times and their medians reported. One append in TIMED_EVERY is timed: the
``--json`` document's ``latency_ms`` is the first key row's append latency, its
``records_per_s``/``mb_per_s`` that row's appends and ``cpu_us_per_record.client`` this
process's CPU per appended record (``cluster`` is null: there is none).

The flags that only mean something through a cluster (-c, --bootstrap, --self-contained,
--topic, --partitions, --replication-factor, --acks, --producers, --consumers, --linger-ms,
--compression, --rate) run the end-to-end engine comparison instead: ``loom bench produce
--engine <the engines> --fsync <the modes>`` with the other flags given.

Every loop is bounded by a count and a time limit; all data lives in a temp directory that is
removed at the end.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace

from bench import options, runner
from bench.options import BenchOptions, OptionError, UsageParser
from bench.stats import LatencyHistogram
from engines import registry
from engines.api import EngineConfig
from engines.batch import build, split_headers

READ_MAX_BYTES = 1024 * 1024
RECORD_SIZES_BYTES = (100, 1024)
BATCH_RECORDS = (1, 100, 1000)
KEY_ROW = (1000, 100)  # records per batch, record bytes
TIMED_EVERY = 16       # one append in this many is timed (and the time bound checked)
ROW_BYTES_MAX_ASKED = 1024**3       # a row of --records or --duration appends at most this
BATCH_BYTES_MAX = 64 * 1024**2      # --batch-size x --record-size
DEFAULTS = {**options.DEFAULTS, "engine": "segment,lmdb,memory", "fsync": "never,interval,always", "runs": 3}
ENGINE_ONLY = {"quick": "--quick", "key_only": "--key-only", "no_recovery": "--no-recovery"}


@dataclass(frozen=True)
class Limits:
    row_bytes_max: int  # bytes appended per row at most
    row_seconds_max: float  # time per phase at most
    recovery_log_bytes: int
    row_records_max: int | None = None  # records appended per row (whole batches), instead of the bytes


FULL = Limits(row_bytes_max=256 * 1024**2, row_seconds_max=4.0, recovery_log_bytes=1024**3)
QUICK = Limits(row_bytes_max=16 * 1024**2, row_seconds_max=1.0, recovery_log_bytes=64 * 1024**2)


@dataclass
class Row:
    engine: str
    fsync: str
    records_per_batch: int
    record_bytes: int
    batches: int
    append_records_per_s: float
    append_mb_per_s: float
    read_records_per_s: float
    read_mb_per_s: float
    baseline_append_mb_per_s: float
    baseline_read_mb_per_s: float
    append_ratio: float
    read_ratio: float
    runs: int = 1
    append_latency_ms: dict = field(default_factory=dict)  # {p50, p99, p999, samples}: one append in TIMED_EVERY
    append_cpu_us_per_record: float | None = None           # this process's CPU over the append phase


def _config(fsync: str) -> EngineConfig:
    return EngineConfig(fsync=fsync, fsync_interval_ms=100, options={"map_size_bytes": 64 * 1024**2})


def _batch(records: int, record_bytes: int) -> bytes:
    return build(os.urandom(records * record_bytes), records, 1_700_000_000_000, 1_700_000_000_001)


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


@dataclass
class Appended:
    """What the append phase of one row measured."""

    batches: int
    append_s: float
    read_s: float
    read_bytes: int
    cpu_s: float
    latency: LatencyHistogram


def _bench_engine(name: str, fsync: str, batch: bytes, records: int, count_max: int,
                  seconds_max: float, directory: str) -> Appended:
    """Append up to count_max batches (or for seconds_max), timing one in TIMED_EVERY, then
    read them all back sequentially."""
    engine = registry.open_engine(name, directory, _config(fsync))
    os.sync()  # start each timed phase with no writeback pending from the previous one
    latency = LatencyHistogram()
    try:
        interval = fsync == "interval"
        cpu0, start = time.process_time(), time.perf_counter()
        deadline = start + seconds_max
        n = 0
        while n < count_max:
            if n % TIMED_EVERY:
                engine.append(batch)
                n += 1
            else:
                t = time.perf_counter()
                engine.append(batch)
                now = time.perf_counter()
                latency.record_us((now - t) * 1e6)
                n += 1
                if now > deadline:
                    break
            if interval:
                engine.maybe_flush(_now_ms())
        if fsync != "never":
            engine.flush()
        append_s = time.perf_counter() - start
        cpu_s = time.process_time() - cpu0
        start = time.perf_counter()
        offset, end, read_bytes = 0, engine.log_end_offset, 0
        for _ in range(n + 1):  # bounded: each read returns at least one batch
            if offset >= end:
                break
            data = engine.read(offset, READ_MAX_BYTES)
            read_bytes += len(data)
            offset += (len(data) // len(batch)) * records
        read_s = time.perf_counter() - start
        return Appended(n, append_s, read_s, read_bytes, cpu_s, latency)
    finally:
        engine.close()


def _bench_baseline(fsync: str, batch: bytes, count: int, path: str) -> tuple[float, float]:
    """Plain buffered file writes of the same bytes (fsync per write under always, every
    100 ms under interval), then reads in READ_MAX_BYTES chunks. Returns (append s, read s)."""
    os.sync()
    start = time.perf_counter()
    last_sync_ms = _now_ms()
    with open(path, "wb") as f:
        for _ in range(count):
            f.write(batch)
            if fsync == "always":
                f.flush()
                os.fsync(f.fileno())
            elif fsync == "interval" and _now_ms() - last_sync_ms >= 100:
                f.flush()
                os.fsync(f.fileno())
                last_sync_ms = _now_ms()
        if fsync != "never":
            f.flush()
            os.fsync(f.fileno())
    append_s = time.perf_counter() - start
    start = time.perf_counter()
    with open(path, "rb") as f:
        for _ in range(count * len(batch) // READ_MAX_BYTES + 2):
            if not f.read(READ_MAX_BYTES):
                break
    read_s = time.perf_counter() - start
    os.unlink(path)
    return append_s, read_s


def run_row(name: str, fsync: str, records: int, record_bytes: int, limits: Limits, work: str,
            runs: int) -> Row:
    batch = _batch(records, record_bytes)
    if limits.row_records_max is not None:
        count_max = -(-limits.row_records_max // records)  # whole batches
    else:
        count_max = max(limits.row_bytes_max // len(batch), 1)
    samples, latency = [], LatencyHistogram()
    for run in range(runs):
        directory = os.path.join(work, f"{name}-{fsync}-{records}-{record_bytes}-{run}")
        a = _bench_engine(name, fsync, batch, records, count_max, limits.row_seconds_max, directory)
        shutil.rmtree(directory, ignore_errors=True)
        n = a.batches
        base_append_s, base_read_s = _bench_baseline(fsync, batch, n, os.path.join(work, "baseline.dat"))
        mb = n * len(batch) / 1e6
        latency.merge(a.latency)
        samples.append(Row(
            name, fsync, records, record_bytes, n,
            n * records / a.append_s, mb / a.append_s, n * records / a.read_s, a.read_bytes / 1e6 / a.read_s,
            mb / base_append_s, mb / base_read_s, base_append_s / a.append_s, base_read_s / a.read_s,
            append_cpu_us_per_record=round(1e6 * a.cpu_s / (n * records), 3)))
    if runs == 1:
        return replace(samples[0], append_latency_ms=latency.summary_ms())
    med = lambda attr: statistics.median(getattr(s, attr) for s in samples)  # noqa: E731
    return Row(name, fsync, records, record_bytes, samples[0].batches,
               *(med(a) for a in ("append_records_per_s", "append_mb_per_s", "read_records_per_s",
                                  "read_mb_per_s", "baseline_append_mb_per_s", "baseline_read_mb_per_s",
                                  "append_ratio", "read_ratio")), runs=runs,
               append_latency_ms=latency.summary_ms(), append_cpu_us_per_record=med("append_cpu_us_per_record"))


def bench_recovery(name: str, log_bytes: int, work: str) -> dict:
    """Build a log of about log_bytes (1000 x 100-byte batches, fsync never), close it, and time
    reopening it; for segment also time a full scan (checkpoint removed, i.e. worst-case crash)."""
    directory = os.path.join(work, f"recovery-{name}")
    batch = _batch(*KEY_ROW)
    config = EngineConfig(fsync="never", options={"map_size_bytes": 256 * 1024**2})
    engine = registry.open_engine(name, directory, config)
    count = log_bytes // len(batch)
    for i in range(0, count, 100):
        engine.append_many([batch] * min(100, count - i))
    stored = engine.size_bytes
    engine.close()
    result = {"engine": name, "log_bytes": stored}
    start = time.perf_counter()
    engine = registry.open_engine(name, directory, config)
    result["clean_reopen_s"] = time.perf_counter() - start
    result["clean_report"] = str(engine.recovery)
    engine.close()
    result.update(_read_memory(name, directory))
    if name == "segment":
        os.unlink(os.path.join(directory, "recovery.checkpoint"))
        start = time.perf_counter()
        engine = registry.open_engine(name, directory, config)
        result["full_scan_reopen_s"] = time.perf_counter() - start
        result["full_scan_report"] = str(engine.recovery)
        engine.close()
    shutil.rmtree(directory, ignore_errors=True)
    return result


def _rss_anon_bytes() -> int:
    """Anonymous resident memory of this process (Linux): heap and buffers, not page cache or
    file-backed mmap pages (LMDB's reads show up there and are reclaimable)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return -1


def read_whole_log(name: str, directory: str) -> dict:
    """Read every batch of the log in READ_MAX_BYTES chunks, sampling anonymous memory: the
    target is that reading a 1 GiB log does not load it into memory."""
    engine = registry.open_engine(name, directory, EngineConfig(fsync="never", options={"map_size_bytes": 256 * 1024**2}))
    before = peak = _rss_anon_bytes()
    offset, read_bytes = engine.log_start_offset, 0
    try:
        while offset < engine.log_end_offset:
            data = engine.read(offset, READ_MAX_BYTES)
            read_bytes += len(data)
            offset = split_headers(data)[-1].next_offset
            peak = max(peak, _rss_anon_bytes())
    finally:
        engine.close()
    return {"read_bytes": read_bytes, "rss_anon_before_bytes": before, "rss_anon_peak_bytes": peak}


def _read_memory(name: str, directory: str) -> dict:
    """Run read_whole_log in a fresh process, so earlier rows' allocations do not count."""
    code = ("import json,sys; from bench.engines import read_whole_log; "
            "print(json.dumps(read_whole_log(sys.argv[1], sys.argv[2])))")
    out = subprocess.run([sys.executable, "-c", code, name, directory], capture_output=True, text=True,
                         timeout=600, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if out.returncode != 0:
        return {"read_memory_error": out.stderr.strip().splitlines()[-1:]}
    r = json.loads(out.stdout)
    r["read_rss_growth_bytes"] = r["rss_anon_peak_bytes"] - r["rss_anon_before_bytes"]
    return r


def _print_table(rows: list[Row], recovery: list[dict]) -> None:
    head = (f"{'engine':8} {'fsync':8} {'rec/b':>5} {'B/rec':>5} {'app rec/s':>11} {'app MB/s':>9} "
            f"{'read rec/s':>11} {'read MB/s':>9} {'base app':>9} {'base rd':>8} {'app%':>6} {'rd%':>6} runs "
            f"{'app p99 ms':>10} {'cpu us/rec':>10}")
    print(head)
    for r in rows:
        p99 = r.append_latency_ms.get("p99")
        print(f"{r.engine:8} {r.fsync:8} {r.records_per_batch:5} {r.record_bytes:5} "
              f"{r.append_records_per_s:11.0f} {r.append_mb_per_s:9.1f} {r.read_records_per_s:11.0f} "
              f"{r.read_mb_per_s:9.1f} {r.baseline_append_mb_per_s:9.1f} {r.baseline_read_mb_per_s:8.1f} "
              f"{100 * r.append_ratio:5.0f}% {100 * r.read_ratio:5.0f}% {r.runs:4} "
              f"{'-' if p99 is None else f'{p99:.4f}':>10} {r.append_cpu_us_per_record or 0:10.3f}")
    for rec in recovery:
        extra = f", full scan {rec['full_scan_reopen_s']:.3f} s" if "full_scan_reopen_s" in rec else ""
        print(f"recovery {rec['engine']}: {rec['log_bytes'] / 1024**2:.0f} MiB, clean reopen "
              f"{rec['clean_reopen_s']:.3f} s{extra}")
        if "read_rss_growth_bytes" in rec:
            print(f"read all {rec['engine']}: {rec['read_bytes'] / 1024**2:.0f} MiB read, anonymous memory "
                  f"grew {rec['read_rss_growth_bytes'] / 1024**2:.1f} MiB (peak {rec['rss_anon_peak_bytes'] / 1024**2:.1f} MiB)")


CHART_BAR_PX = 14
CHART_WIDTH_PX = 520


def _svg_chart(rows: list[Row], metric: str, title: str) -> str:
    """A horizontal bar chart (inline SVG, no dependencies) of ``metric`` (MB/s) per row, with
    the same-run plain-file baseline drawn as a tick on each bar's line."""
    base_metric = "baseline_" + metric
    top = max([getattr(r, metric) for r in rows] + [getattr(r, base_metric) for r in rows] + [1e-9])
    label_px, lines = 260, []
    for i, r in enumerate(rows):
        y = 24 + i * (CHART_BAR_PX + 6)
        w = CHART_WIDTH_PX * getattr(r, metric) / top
        bx = label_px + CHART_WIDTH_PX * getattr(r, base_metric) / top
        label = f"{r.engine} {r.fsync} {r.records_per_batch}x{r.record_bytes}B"
        lines.append(
            f'<text x="{label_px - 6}" y="{y + CHART_BAR_PX - 3}" text-anchor="end">{html.escape(label)}</text>'
            f'<rect x="{label_px}" y="{y}" width="{w:.1f}" height="{CHART_BAR_PX}" fill="#4a7bd0"/>'
            f'<line x1="{bx:.1f}" x2="{bx:.1f}" y1="{y - 2}" y2="{y + CHART_BAR_PX + 2}" stroke="#d04a4a" stroke-width="2"/>'
            f'<text x="{label_px + w + 4:.1f}" y="{y + CHART_BAR_PX - 3}">{getattr(r, metric):.0f}</text>')
    height = 34 + len(rows) * (CHART_BAR_PX + 6)
    return (f'<h2>{html.escape(title)}</h2><svg xmlns="http://www.w3.org/2000/svg" width="{label_px + CHART_WIDTH_PX + 80}" '
            f'height="{height}" font-family="sans-serif" font-size="11"><text x="{label_px}" y="12">MB/s '
            f'(red tick: plain file I/O in the same run)</text>{"".join(lines)}</svg>')


def _write_html(path: str, rows: list[Row], recovery: list[dict], meta: dict) -> None:
    cols = list(asdict(rows[0]).keys()) if rows else []
    body = "".join("<tr>" + "".join(f"<td>{html.escape(f'{v:.4g}' if isinstance(v, float) else str(v))}</td>"
                                    for v in asdict(r).values()) + "</tr>" for r in rows)
    rec = "".join(f"<li>{html.escape(json.dumps(x))}</li>" for x in recovery)
    charts = (_svg_chart(rows, "append_mb_per_s", "Append throughput")
              + _svg_chart(rows, "read_mb_per_s", "Sequential read throughput")) if rows else ""
    with open(path, "w") as f:
        f.write(f"<!doctype html><meta charset=utf-8><title>Loom engine bench</title>"
                f"<pre>{html.escape(json.dumps(meta, indent=1))}</pre>{charts}<h2>All rows</h2><table border=1><tr>"
                + "".join(f"<th>{c}</th>" for c in cols) + f"</tr>{body}</table><ul>{rec}</ul>")


@dataclass(frozen=True)
class Plan:
    """The rows of an engine-level run."""

    limits: Limits
    batch_records: tuple[int, ...]
    record_sizes: tuple[int, ...]
    key_row: tuple[int, int]  # records per batch, record bytes
    quick: bool
    key_only: bool
    recovery: bool


def build_parser() -> UsageParser:
    p = UsageParser(prog="loom bench engines", description=__doc__.split("\n\n")[0],
                    epilog=f"{', '.join(options.CLUSTER_FLAGS.values())}: any of these only means something through a "
                           "cluster and runs the end-to-end engine comparison instead (loom bench produce --engine "
                           "<the engines> --fsync <the modes> with the other flags given)")
    options.add_common_arguments(p, DEFAULTS, aliases={"--engine": ("--engines",), "--runs": ("--repeat",),
                                                       "--chart": ("--html",)}, helps={
        "--records": "records each row appends, in whole batches (default: up to 256 MiB, --quick 16 MiB)",
        "--duration": "seconds each row appends (default: at most 4 s, --quick 1 s)",
        "--record-size": "only rows of this record size (default: 100 and 1024)",
        "--batch-size": "only rows of this many records per batch (default: 1, 100 and 1000)",
        "--engine": "storage engines (comma list)", "--fsync": "fsync modes (comma list): never, interval, always",
        "--runs": "runs of the key rows (median reported)",
        "--chart": "write the results as an HTML page with bar charts to this file"})
    p.add_argument("--quick", action="store_true", default=None, help="small sizes (CI smoke run)")
    p.add_argument("--key-only", action="store_true", default=None, help="only the key rows and recovery")
    p.add_argument("--no-recovery", action="store_true", default=None)
    return p


def plan(ns: argparse.Namespace, o: BenchOptions) -> Plan:
    """The rows the flags ask for; raises OptionError for a batch or a row too large."""
    limits = QUICK if ns.quick else FULL
    if o.records is not None:
        limits = replace(limits, row_bytes_max=ROW_BYTES_MAX_ASKED, row_seconds_max=options.DURATION_S_MAX,
                         row_records_max=o.records)
    elif o.duration is not None:
        limits = replace(limits, row_bytes_max=ROW_BYTES_MAX_ASKED, row_seconds_max=o.duration)
    batches = (ns.batch_size,) if ns.batch_size is not None else BATCH_RECORDS
    sizes = (ns.record_size,) if ns.record_size is not None else RECORD_SIZES_BYTES
    if max(batches) * max(sizes) > BATCH_BYTES_MAX:
        raise OptionError(f"--batch-size {max(batches)} x --record-size {max(sizes)} is a batch of more than "
                          f"{BATCH_BYTES_MAX // 2**20} MiB")
    if o.records is not None and (o.records + max(batches)) * max(sizes) > ROW_BYTES_MAX_ASKED:
        raise OptionError(f"--records {o.records:,} x --record-size {max(sizes)} is more than "
                          f"{ROW_BYTES_MAX_ASKED // 2**30} GiB a row")
    key = (batches[0] if ns.batch_size is not None else KEY_ROW[0],
           sizes[0] if ns.record_size is not None else KEY_ROW[1])
    return Plan(limits, batches, sizes, key, bool(ns.quick), bool(ns.key_only), not ns.no_recovery)


def parse(argv: list[str] | None) -> tuple[BenchOptions, Plan | None, list[str]]:
    """The options, the engine-level plan and the cluster flags given; with any of those, the
    options of ``loom bench produce`` (the end-to-end comparison) and no plan. A usage error
    exits with status 2 (one line)."""
    ap = build_parser()
    ns = ap.parse_args(argv)
    through = [flag for dest, flag in options.CLUSTER_FLAGS.items() if getattr(ns, dest) is not None]
    try:
        if not through:
            o = options.options_from("engines", ns, DEFAULTS)
            return o, plan(ns, o), through
        own = [flag for dest, flag in ENGINE_ONLY.items() if getattr(ns, dest)]
        if own:
            raise OptionError(f"{own[0]} is for the engine-level benchmark, and {through[0]} runs the end-to-end "
                              "comparison through a cluster: drop one of them")
        # a running cluster has its config's engine: the lists then only if given
        lists = {k: DEFAULTS[k] for k in ("engine", "fsync")} if ns.config is None and ns.bootstrap is None else {}
        return options.options_from("produce", ns, {**options.DEFAULTS, **lists}), None, through
    except OptionError as e:
        ap.error(str(e))


def main(argv: list[str] | None = None) -> int:
    o, rows_plan, through = parse(argv)
    if rows_plan is None:
        print(f"loom bench engines: {', '.join(through)} only mean{'s' if len(through) == 1 else ''} something "
              f"through a cluster: running the end-to-end engine comparison, loom bench produce --engine "
              f"{','.join(o.engines)} --fsync {','.join(o.fsyncs)} with the other flags given")
        return runner.publish(o, runner.run_all)
    return run_engines(o, rows_plan)


def run_engines(o: BenchOptions, p: Plan) -> int:
    limits = p.limits
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": p.quick,
            "limits": asdict(limits), "python": platform.python_version(), "platform": platform.platform(),
            "cpus": os.cpu_count(), "read_max_bytes": READ_MAX_BYTES}
    work = tempfile.mkdtemp(prefix="loom-bench-")
    rows: list[Row] = []
    recovery: list[dict] = []

    def is_key(name: str, fsync: str, records: int, record_bytes: int) -> bool:
        return (records, record_bytes) == p.key_row and fsync == "never" and name != "memory"
    try:
        for name in o.engines:
            for fsync in (["never"] if name == "memory" else o.fsyncs):
                for records in p.batch_records:
                    for record_bytes in p.record_sizes:
                        key = is_key(name, fsync, records, record_bytes)
                        if p.key_only and not key:
                            continue
                        rows.append(run_row(name, fsync, records, record_bytes, limits, work, o.runs if key else 1))
                        print(".", end="", flush=True)
        print()
        if p.recovery:
            recovery = [bench_recovery(n, limits.recovery_log_bytes, work) for n in o.engines if n != "memory"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print_table(rows, recovery)
    if o.json:
        first = next((r for r in rows if is_key(r.engine, r.fsync, r.records_per_batch, r.record_bytes)),
                     rows[0] if rows else None)
        with open(o.json, "w") as f:
            json.dump({**_top(first), "meta": meta, "rows": [asdict(r) for r in rows], "recovery": recovery}, f, indent=1)
    if o.chart:
        _write_html(o.chart, rows, recovery, meta)
    return 0


def _top(row: Row | None) -> dict:
    """The keys every ``loom bench --json`` has, from one row's appends."""
    if row is None:
        return {"records_per_s": None, "mb_per_s": None, "latency_ms": {"p50": None, "p99": None, "p999": None},
                "cpu_us_per_record": {"client": None, "cluster": None}}
    return {"records_per_s": round(row.append_records_per_s), "mb_per_s": round(row.append_mb_per_s, 2),
            "latency_ms": {k: row.append_latency_ms.get(k) for k in ("p50", "p99", "p999")},
            "cpu_us_per_record": {"client": row.append_cpu_us_per_record, "cluster": None},
            "row": f"{row.engine} {row.fsync} {row.records_per_batch}x{row.record_bytes}B appends"}


if __name__ == "__main__":
    raise SystemExit(main())
