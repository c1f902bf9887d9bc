"""Storage-engine benchmark: append / read throughput per engine and fsync mode against a plain
Python file baseline written and read in the same run, plus reopen (recovery) time of a large
log.

    python -m bench.engines [--quick] [--json out.json] [--html out.html] [--repeat 3]
                            [--engines segment,lmdb,memory] [--fsync never,interval,always]

Every loop is bounded by a count and a time limit; all data lives in a temp directory that is
removed at the end. Key rows (fsync never, 1000 x 100-byte records, segment and lmdb) are run
``--repeat`` times and their medians reported.
"""

from __future__ import annotations

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
from dataclasses import asdict, dataclass

from bench.options import UsageParser
from engines import registry
from engines.api import EngineConfig
from engines.batch import build, split_headers

READ_MAX_BYTES = 1024 * 1024
RECORD_SIZES_BYTES = (100, 1024)
BATCH_RECORDS = (1, 100, 1000)
KEY_ROW = (1000, 100)  # records per batch, record bytes


@dataclass
class Limits:
    row_bytes_max: int  # bytes appended per row at most
    row_seconds_max: float  # time per phase at most
    recovery_log_bytes: int


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


def _config(fsync: str) -> EngineConfig:
    return EngineConfig(fsync=fsync, fsync_interval_ms=100, options={"map_size_bytes": 64 * 1024**2})


def _batch(records: int, record_bytes: int) -> bytes:
    return build(os.urandom(records * record_bytes), records, 1_700_000_000_000, 1_700_000_000_001)


def _now_ms() -> int:
    return time.monotonic_ns() // 1_000_000


def _bench_engine(name: str, fsync: str, batch: bytes, records: int, count_max: int,
                  seconds_max: float, directory: str) -> tuple[int, float, float, int]:
    """Append up to count_max batches (or for seconds_max), then read them all back
    sequentially. Returns (batches, append seconds, read seconds, bytes read)."""
    engine = registry.open_engine(name, directory, _config(fsync))
    os.sync()  # start each timed phase with no writeback pending from the previous one
    try:
        interval = fsync == "interval"
        start = time.perf_counter()
        deadline = start + seconds_max
        n = 0
        while n < count_max:
            engine.append(batch)
            n += 1
            if interval:
                engine.maybe_flush(_now_ms())
            if n % 16 == 0 and time.perf_counter() > deadline:
                break
        if fsync != "never":
            engine.flush()
        append_s = time.perf_counter() - start
        start = time.perf_counter()
        offset, end, read_bytes = 0, engine.log_end_offset, 0
        for _ in range(n + 1):  # bounded: each read returns at least one batch
            if offset >= end:
                break
            data = engine.read(offset, READ_MAX_BYTES)
            read_bytes += len(data)
            offset += (len(data) // len(batch)) * records
        read_s = time.perf_counter() - start
        return n, append_s, read_s, read_bytes
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
    count_max = max(limits.row_bytes_max // len(batch), 1)
    samples = []
    for run in range(runs):
        directory = os.path.join(work, f"{name}-{fsync}-{records}-{record_bytes}-{run}")
        n, append_s, read_s, read_bytes = _bench_engine(name, fsync, batch, records, count_max,
                                                        limits.row_seconds_max, directory)
        shutil.rmtree(directory, ignore_errors=True)
        base_append_s, base_read_s = _bench_baseline(fsync, batch, n, os.path.join(work, "baseline.dat"))
        mb = n * len(batch) / 1e6
        samples.append(Row(
            name, fsync, records, record_bytes, n,
            n * records / append_s, mb / append_s, n * records / read_s, read_bytes / 1e6 / read_s,
            mb / base_append_s, mb / base_read_s, base_append_s / append_s, base_read_s / read_s))
    if runs == 1:
        return samples[0]
    med = lambda attr: statistics.median(getattr(s, attr) for s in samples)  # noqa: E731
    return Row(name, fsync, records, record_bytes, samples[0].batches,
               *(med(a) for a in ("append_records_per_s", "append_mb_per_s", "read_records_per_s",
                                  "read_mb_per_s", "baseline_append_mb_per_s", "baseline_read_mb_per_s",
                                  "append_ratio", "read_ratio")), runs=runs)


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
            f"{'read rec/s':>11} {'read MB/s':>9} {'base app':>9} {'base rd':>8} {'app%':>6} {'rd%':>6} runs")
    print(head)
    for r in rows:
        print(f"{r.engine:8} {r.fsync:8} {r.records_per_batch:5} {r.record_bytes:5} "
              f"{r.append_records_per_s:11.0f} {r.append_mb_per_s:9.1f} {r.read_records_per_s:11.0f} "
              f"{r.read_mb_per_s:9.1f} {r.baseline_append_mb_per_s:9.1f} {r.baseline_read_mb_per_s:8.1f} "
              f"{100 * r.append_ratio:5.0f}% {100 * r.read_ratio:5.0f}% {r.runs}")
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


def main(argv: list[str] | None = None) -> int:
    p = UsageParser(prog="loom bench engines", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes (CI smoke run)")
    p.add_argument("--json", help="write results as JSON to this file")
    p.add_argument("--html", "--chart", dest="html", help="write the results as an HTML page with bar charts to this file")
    p.add_argument("--repeat", "--runs", dest="repeat", type=int, default=3, help="runs of the key rows (median reported)")
    p.add_argument("--engines", "--engine", dest="engines", default="segment,lmdb,memory")
    p.add_argument("--fsync", default="never,interval,always")
    p.add_argument("--key-only", action="store_true", help="only the key rows and recovery")
    p.add_argument("--no-recovery", action="store_true")
    args = p.parse_args(argv)
    limits = QUICK if args.quick else FULL
    engines, policies = args.engines.split(","), args.fsync.split(",")
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "quick": args.quick, "limits": asdict(limits),
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "read_max_bytes": READ_MAX_BYTES}
    work = tempfile.mkdtemp(prefix="loom-bench-")
    rows: list[Row] = []
    recovery: list[dict] = []
    try:
        for name in engines:
            for fsync in (["never"] if name == "memory" else policies):
                for records in BATCH_RECORDS:
                    for record_bytes in RECORD_SIZES_BYTES:
                        key = (records, record_bytes) == KEY_ROW and fsync == "never" and name != "memory"
                        if args.key_only and not key:
                            continue
                        rows.append(run_row(name, fsync, records, record_bytes, limits, work,
                                            args.repeat if key else 1))
                        print(".", end="", flush=True)
        print()
        if not args.no_recovery:
            recovery = [bench_recovery(n, limits.recovery_log_bytes, work) for n in engines if n != "memory"]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    _print_table(rows, recovery)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": [asdict(r) for r in rows], "recovery": recovery}, f, indent=1)
    if args.html:
        _write_html(args.html, rows, recovery, meta)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
