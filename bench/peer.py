"""``--peer jetstream``: the peer scripts' figure measured in the same invocation as Loom's.

The scripts (``quick_jetstream.sh``: records/s of NATS JetStream R3 with 100-byte acknowledged
publishes; ``quick_jetstream_latency.sh``: its publish-ack p50/p99/p99.9 in ms at 2,000
messages/s offered) live in the shared peer directory. Both start by running ``setup.sh``, which
installs packages when a peer is missing; so a peer counts as installed only when everything
``setup.sh`` checks is already present, and otherwise it is skipped with a message saying what
is missing — a benchmark never installs software.

While the script runs, its servers (the ``nats-server`` processes below it) are sampled from
/proc: their CPU seconds over the whole script, divided by the records its log says it
published, and each one's peak RSS, to set beside Loom's cluster CPU per record and broker RSS.
The whole script also starts the servers, creates streams and waits for a quiet machine, so
that figure bounds the publish-only cost from above; the script's own JSON gives its servers'
CPU in the publish windows only, reported beside it.

Not thread-safe (runs the script on the caller's thread).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
from pathlib import Path
from typing import Callable

from bench.options import BenchOptions
from bench.stats import ProcessTreeSampler, SampledProcess, kill_tree
from nodes.local_cluster import SOURCE_ROOT

PEER_RUN_S_MAX = 900          # one peer script, including its own 3 runs
PEER_VENV = Path("/tmp/peervenv")  # where the peers' setup.sh puts their clients
SCRIPTS = {"jetstream": ("quick_jetstream.sh", "quick_jetstream_latency.sh")}
SERVERS = {"jetstream": ("nats-server",)}  # the executable names of a peer's server processes
PEER_RATE_PER_S = 2000        # the latency script's fixed offered rate
SAMPLE_INTERVAL_S = 0.2       # CPU a server uses after its last sample is missed: its shutdown
# nats_js_bench.py's log lines and its defaults for the latency phase (--rate, --lat-seconds)
PUBLISHED_LINE = re.compile(r"\] pub (\d+) msgs in ")
LATENCY_LINE = re.compile(r"\] latency @")
LATENCY_DEFAULTS = {"--rate": 2000.0, "--lat-seconds": 10.0}


def peer_dir(o: BenchOptions) -> Path | None:
    """The directory holding the scripts: --peer-dir, $LOOM_PEERS_DIR, or shared/bench/peers
    beside the source tree (or its parent's, for a worktree)."""
    candidates = [o.peer_dir, os.environ.get("LOOM_PEERS_DIR"),
                  SOURCE_ROOT.parent / "shared" / "bench" / "peers",
                  SOURCE_ROOT.parent.parent / "shared" / "bench" / "peers"]
    for c in candidates:
        if c and (Path(c) / SCRIPTS["jetstream"][0]).is_file():
            return Path(c)
    return None


def nats_server() -> str | None:
    """The nats-server the scripts run: the peer venv's, else one on PATH."""
    venv = PEER_VENV / "bin" / "nats-server"
    return str(venv) if venv.exists() else shutil.which("nats-server")


def missing() -> list[str]:
    """What ``setup.sh`` would have to install before the script can run (empty: ready)."""
    gaps = []
    if not (PEER_VENV / "bin" / "python").exists():
        gaps.append(f"{PEER_VENV}/bin/python")
    if nats_server() is None:
        gaps.append("nats-server")
    gaps += [tool for tool in ("redis-server", "rabbitmq-server") if shutil.which(tool) is None]
    return gaps


def run(o: BenchOptions, out: Callable[[str], None] = print) -> dict:
    """The peer's figure: ``{"name", "records_per_s"}`` or ``{"name", "latency_ms"}`` (with
    ``--rate``), with its servers' CPU and memory (``server_figures``); or ``{"name",
    "skipped": why}``."""
    name = o.peer or "jetstream"
    latency = o.rate is not None
    here = peer_dir(o)
    if here is None:
        return _skip(name, "its scripts were not found: give --peer-dir or $LOOM_PEERS_DIR", out)
    gaps = missing()
    if gaps:
        return _skip(name, f"not installed (missing {', '.join(gaps)}); run {here / 'setup.sh'} first", out)
    script = here / SCRIPTS[name][1 if latency else 0]
    out(f"peer {name}: running {script} (this takes a minute or two)")
    given = os.environ.get("PEER_RESULTS_DIR")  # where the script writes its log and JSON
    results = Path(given or tempfile.mkdtemp(prefix="loom-peer-"))
    try:
        return _run_sampled(name, script, results, latency, o.rate, out)
    finally:
        if not given:
            shutil.rmtree(results, ignore_errors=True)


def _run_sampled(name: str, script: Path, results: Path, latency: bool, rate: int | None,
                 out: Callable[[str], None]) -> dict:
    results.mkdir(parents=True, exist_ok=True)
    stdout, stderr = results / f"{script.stem}.stdout", results / f"{script.stem}.stderr"
    with open(stdout, "wb") as fo, open(stderr, "wb") as fe:
        p = subprocess.Popen(["bash", str(script)], stdout=fo, stderr=fe, stdin=subprocess.DEVNULL,
                             env=dict(os.environ, PEER_RESULTS_DIR=str(results)))
    sampler = ProcessTreeSampler(p.pid, SERVERS[name])
    try:
        if not sampler.follow(p, SAMPLE_INTERVAL_S, PEER_RUN_S_MAX):
            return _skip(name, f"{script.name} took over {PEER_RUN_S_MAX} s", out)
    finally:
        _stop(p)
    lines = stdout.read_text().strip().splitlines()
    if p.returncode != 0 or not lines:
        said = (stderr.read_text() or stdout.read_text()).strip()[-300:]
        return _skip(name, f"{script.name} failed ({p.returncode}): {said}", out)
    doc = parse_output(name, lines[-1], latency, rate)
    log, js = results / f"{script.stem}.log", results / f"{script.stem}.json"
    published = published_records(log.read_text() if log.exists() else "", _load(js))
    return doc | server_figures(sampler.processes(), published, publish_window_cpu_us(_load(js)))


def _stop(p: subprocess.Popen) -> None:
    """A script still running (it timed out, or we are interrupted): SIGKILL it and everything
    it started, each by its pid."""
    if p.poll() is None:
        kill_tree(p.pid)
        p.wait()


def _load(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def published_records(log: str, doc: dict) -> int:
    """Records the script published, from nats_js_bench.py's log: the ``pub N msgs`` lines,
    and rate x seconds per latency run (from the command line its JSON saved). Its few
    warm-up publishes (one per stream created) are not counted."""
    records = sum(int(n) for n in PUBLISHED_LINE.findall(log))
    latency_runs = len(LATENCY_LINE.findall(log))
    if latency_runs:
        argv = [str(a) for a in doc.get("argv", [])]
        value = {k: float(argv[argv.index(k) + 1]) if k in argv[:-1] else v for k, v in LATENCY_DEFAULTS.items()}
        records += latency_runs * int(value["--rate"] * value["--lat-seconds"])
    return records


def publish_window_cpu_us(doc: dict) -> float | None:
    """The script's own figure: its servers' CPU per record within each publish run (server
    CPU as a fraction of a core, divided by the run's records/s), the median over its runs."""
    for row in doc.get("rows", []):
        if row.get("unit") == "msg/s" and "throughput" in row.get("metric", ""):
            fracs = (row.get("extra") or {}).get("server_cpu_frac") or []
            per_run = [1e6 * f / r for f, r in zip(fracs, row.get("runs") or []) if r]
            return round(statistics.median(per_run), 3) if per_run else None
    return None


def server_figures(servers: list[SampledProcess], records: int, window_us: float | None = None) -> dict:
    """The peer's servers beside Loom's figures: ``cpu_us_per_record: {cluster}`` (their CPU
    seconds over the whole script / the records it published), ``server_peak_rss_mb`` (each
    server, in the order they started), and the parts of the division."""
    cpu_s = sum(s.cpu_s for s in servers)
    return {"servers": len(servers), "server_cpu_s": round(cpu_s, 3), "records_published": records,
            "cpu_us_per_record": {"cluster": round(1e6 * cpu_s / records, 3) if servers and records else None},
            "publish_window_cpu_us_per_record": window_us,
            "server_peak_rss_mb": {f"{s.name}-{i}": None if s.peak_rss_mb is None else round(s.peak_rss_mb, 1)
                                   for i, s in enumerate(servers, 1)},
            "sample_interval_s": SAMPLE_INTERVAL_S}


def parse_output(name: str, last_line: str, latency: bool, rate: int | None) -> dict:
    """The scripts' last line: one number (records/s) or ``p50 p99 p99.9`` (ms)."""
    fields = last_line.split()
    if latency:
        p50, p99, p999 = (float(x) for x in fields[:3])
        doc = {"name": name, "script": SCRIPTS[name][1], "offered_per_s": PEER_RATE_PER_S,
               "latency_ms": {"p50": p50, "p99": p99, "p999": p999}}
        if rate != PEER_RATE_PER_S:
            doc["note"] = f"the peer script offers {PEER_RATE_PER_S}/s; Loom was offered {rate}/s"
        return doc
    return {"name": name, "script": SCRIPTS[name][0], "records_per_s": round(float(fields[0]))}


def _skip(name: str, why: str, out: Callable[[str], None]) -> dict:
    out(f"peer {name}: skipped: {why}")
    return {"name": name, "skipped": why}
