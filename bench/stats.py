"""Measurements for ``loom bench``: a mergeable latency histogram, the CPU time and peak memory of
node processes (Linux /proc), finding the nodes of a running cluster, and following the
processes a script starts below it (``ProcessTreeSampler``: the peer scripts' servers; and
``kill_tree`` to stop them all by pid).

The histogram keeps counts in logarithmic buckets (``BUCKETS_PER_E`` per factor of e, i.e. a
relative error under 1 %), so one interval's or one worker's latencies are a small dict that
merges exactly with another's and crosses a process boundary as JSON.

Pure functions and small classes; ``LatencyHistogram`` and ``ProcessTreeSampler`` are not
thread-safe (one owner each).
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

BUCKETS_PER_E = 100          # log buckets per factor e: bucket width ~1 %
LATENCY_FLOOR_US = 1.0       # latencies under 1 µs count as 1 µs
PROC_SCAN_PIDS_MAX = 100_000  # /proc entries looked at when finding a cluster's nodes
RSS_TREND_SAMPLES_MIN = 4    # samples in a run's second half to speak of a memory trend
RSS_TREND_SPAN_S_MIN = 10.0  # and seconds it must span (runs of at least ~20 s)
TAIL_SAMPLES_ABOVE_MIN = 10   # samples above a tail percentile's rank for it to be reported


class LatencyHistogram:
    """Latencies in µs, bucketed logarithmically. ``record`` costs one log and one dict update."""

    __slots__ = ("counts", "count")

    def __init__(self, counts: dict[int, int] | None = None) -> None:
        self.counts: dict[int, int] = dict(counts or {})
        self.count = sum(self.counts.values())

    def record_us(self, latency_us: float) -> None:
        b = int(math.log(max(latency_us, LATENCY_FLOOR_US)) * BUCKETS_PER_E)
        self.counts[b] = self.counts.get(b, 0) + 1
        self.count += 1

    def merge(self, other: "LatencyHistogram") -> "LatencyHistogram":
        for b, n in other.counts.items():
            self.counts[b] = self.counts.get(b, 0) + n
        self.count += other.count
        return self

    def percentile_ms(self, q: float) -> float | None:
        """The q-th percentile (0 < q <= 100) in ms, None when empty. Reports the bucket's
        upper edge (a latency is never understated by more than the bucket width)."""
        if not self.count:
            return None
        rank = math.ceil(self.count * q / 100.0)
        seen = 0
        for b in sorted(self.counts):
            seen += self.counts[b]
            if seen >= rank:
                return math.exp((b + 1) / BUCKETS_PER_E) / 1000.0
        raise AssertionError("rank beyond the histogram's count")  # unreachable: rank <= count

    def summary_ms(self) -> dict:
        """``{p50, p99, p999, samples}`` in ms: None when empty, and a tail percentile None
        unless at least TAIL_SAMPLES_ABOVE_MIN samples lie above its rank (p99 from 1,000
        samples, p99.9 from 10,000): below that it is one of the few largest values, not a p99."""
        n = self.count
        return {"p50": _round(self.percentile_ms(50)),
                "p99": _round(self.percentile_ms(99)) if n * 0.01 >= TAIL_SAMPLES_ABOVE_MIN else None,
                "p999": _round(self.percentile_ms(99.9)) if n * 0.001 >= TAIL_SAMPLES_ABOVE_MIN else None,
                "samples": n}

    def to_json(self) -> dict[str, int]:
        return {str(b): n for b, n in self.counts.items()}

    @classmethod
    def from_json(cls, data: dict[str, int] | None) -> "LatencyHistogram":
        return cls({int(b): int(n) for b, n in (data or {}).items()})


def nearest_rank(ordered: list[float], fraction: float) -> float | None:
    """The ``fraction`` percentile (0.99: p99) of ascending ``ordered`` values by nearest rank
    (the smallest value with at least that fraction at or below it); None when empty."""
    if not ordered:
        return None
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _round(ms: float | None) -> float | None:
    return None if ms is None else round(ms, 3)


def us_per_record(cpu_s: float | None, records: int) -> float | None:
    """CPU microseconds per record (None when the CPU is unknown or there were no records)."""
    return None if cpu_s is None or not records else round(1e6 * cpu_s / records, 3)


def process_write_bytes(pids: list[int]) -> int | None:
    """Bytes the processes have caused to be written to storage (``write_bytes`` of
    /proc/PID/io: counted when a page is dirtied, or at a direct write; every thread of the
    process). None when no pid's figure can be read (a cluster elsewhere, no task I/O
    accounting): unknown, not 0."""
    total, known = 0, False
    for pid in pids:
        try:
            with open(f"/proc/{pid}/io") as f:
                for line in f:
                    if line.startswith("write_bytes:"):
                        total += int(line.split()[1])
                        known = True
                        break
        except (OSError, ValueError, IndexError):
            continue
    return total if known else None


MEMORY_FILE_SYSTEMS = frozenset({"tmpfs", "ramfs"})  # their pages are never written back


def fs_type(path: str) -> str | None:
    """The type of the file system ``path`` is on (the longest mount point above it in
    /proc/self/mounts); None when unknown."""
    try:
        with open("/proc/self/mounts") as f:
            mounts = [line.split()[1:3] for line in f]
    except OSError:
        return None
    real = os.path.realpath(path)
    best, kind = "", None
    for point, fs in mounts:
        point = point.replace("\\040", " ")
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fs
    return kind


def counts_writes(path: str) -> bool:
    """Whether /proc/PID/io's write_bytes counts what is written under ``path``: not on a
    memory file system (tmpfs: 0 bytes however much is written)."""
    return fs_type(path) not in MEMORY_FILE_SYSTEMS


def disk_figures(write_bytes: int | None, records: int, seconds: float) -> dict:
    """What a phase wrote to storage: bytes per record (the engine's and the replication
    factor's write amplification) and MB/s (against the disk's ceiling); None when unknown."""
    if write_bytes is None or not records or seconds <= 0:
        return {"bytes_per_record": None, "mb_per_s": None}
    return {"bytes_per_record": round(write_bytes / records, 1), "mb_per_s": round(write_bytes / 1e6 / seconds, 1)}


def process_cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of processes (Linux /proc; 0 for a pid that is gone)."""
    return sum(s.cpu_s for s in map(proc_stat, pids) if s is not None)


def cpu_between(before_s: float, after_s: float) -> float | None:
    """The CPU seconds between two ``process_cpu_s`` readings of the same processes; None when
    no clock tick was counted in between (/proc counts whole ticks, 10 ms here: 0 would be a
    wrong figure for a short phase) or the reading went back (a process restarted meanwhile)."""
    spent = after_s - before_s
    return spent if spent > 0 else None


def _status_kib(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def rss_mb(pid: int) -> float | None:
    """Resident memory now (VmRSS), MB; None when unreadable."""
    kib = _status_kib(pid, "VmRSS")
    return None if kib is None else kib * 1024 / 1e6


def reset_peak_rss(pid: int) -> None:
    """Start the process's VmHWM over from its current RSS (Linux's ``clear_refs`` 5), so that
    a run on a cluster that earlier runs used reads its own peak; nothing when not allowed."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory over the process's life (VmHWM), MB; None when unreadable."""
    kib = _status_kib(pid, "VmHWM")
    return None if kib is None else kib * 1024 / 1e6


def growth_mb_per_min(samples: list[tuple[float, float]]) -> float | None:
    """The trend of a memory series: the least-squares slope, MB per minute, of the samples
    ``(t_s, mb)`` in the second half of their time span (the first half holds start-up and the
    buffers filling to their bounds). None with fewer than RSS_TREND_SAMPLES_MIN there, or a
    second half shorter than RSS_TREND_SPAN_S_MIN (a few seconds of buffers filling say
    nothing of a trend)."""
    if not samples:
        return None
    t0, t1 = samples[0][0], samples[-1][0]
    tail = [(t, mb) for t, mb in samples if t >= (t0 + t1) / 2]
    if len(tail) < RSS_TREND_SAMPLES_MIN or (t1 - t0) / 2 < RSS_TREND_SPAN_S_MIN:
        return None
    n = len(tail)
    mt = sum(t for t, _ in tail) / n
    mm = sum(mb for _, mb in tail) / n
    var = sum((t - mt) ** 2 for t, _ in tail)
    if var <= 0:
        return None
    return round(60 * sum((t - mt) * (mb - mm) for t, mb in tail) / var, 2)


def find_node_pids(config_path: str) -> dict[str, int]:
    """Node name -> pid of the process running ``python -m nodes.run -c CONFIG --node NAME``
    for this config (as ``loom up`` and the local cluster start them; of a node that forked,
    like the gateway's gunicorn, the first). Empty when none is found or /proc is unreadable:
    the caller reports the cluster's CPU as unknown."""
    return {name: pids[0] for name, pids in find_node_processes(config_path).items()}


def find_node_processes(config_path: str) -> dict[str, list[int]]:
    """Node name -> every pid running it, ascending (a forked worker shares its parent's
    command line)."""
    wanted = {os.path.abspath(config_path), config_path}
    found: dict[str, list[int]] = {}
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()][:PROC_SCAN_PIDS_MAX]
    except OSError:
        return found
    for entry in entries:
        try:
            args = Path(f"/proc/{entry}/cmdline").read_bytes().decode(errors="replace").split("\0")
            cwd = os.readlink(f"/proc/{entry}/cwd")
        except OSError:
            continue
        if "nodes.run" not in args or "-c" not in args or "--node" not in args:
            continue
        cfg = args[args.index("-c") + 1] if args.index("-c") + 1 < len(args) else ""
        if cfg in wanted or os.path.normpath(os.path.join(cwd, cfg)) in wanted:
            found.setdefault(args[args.index("--node") + 1], []).append(int(entry))
    return {name: sorted(pids) for name, pids in found.items()}


# -- the processes below one process -------------------------------------------------------------
@dataclass(frozen=True)
class ProcStat:
    """One line of /proc/PID/stat, the fields used here."""

    pid: int
    comm: str         # the executable's name (15 characters at most)
    ppid: int
    start_ticks: int  # since boot: with the pid, names one process (pids are reused)
    cpu_s: float      # user + system so far


def proc_stat(pid: int) -> ProcStat | None:
    """The fields of /proc/PID/stat used here; None when the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
        head, _, tail = raw.rpartition(b")")
        f = tail.split()  # from field 3 (state) on: ppid 4, utime 14, stime 15, starttime 22
        return ProcStat(pid, head.partition(b"(")[2].decode(errors="replace"), int(f[1]), int(f[19]),
                        (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK"))
    except (OSError, IndexError, ValueError):  # gone, or not a process's entry
        return None


def _proc_stats() -> dict[int, ProcStat]:
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()][:PROC_SCAN_PIDS_MAX]
    except OSError:
        return {}
    return {s.pid: s for s in map(proc_stat, map(int, entries)) if s is not None}


def _below(root_pid: int, stats: dict[int, ProcStat]) -> list[int]:
    children: dict[int, list[int]] = {}
    for s in stats.values():
        children.setdefault(s.ppid, []).append(s.pid)
    found, stack = [], [root_pid]
    while stack:
        kids = children.get(stack.pop(), [])
        found += kids
        stack += kids
    return found


def descendant_pids(root_pid: int) -> list[int]:
    """Every process below ``root_pid`` now: its children, theirs, and so on (by each process's
    parent pid in /proc; an orphan that was reparented is no longer below). Empty when /proc is
    unreadable."""
    return _below(root_pid, _proc_stats())


def kill_tree(root_pid: int) -> None:
    """SIGKILL a process this program started (directly or not) and every process below it, each
    by its pid. The processes below are listed before anything is killed, while they are still
    below (a killed parent's children are reparented)."""
    for pid in [*descendant_pids(root_pid), root_pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclass
class SampledProcess:
    """What the samples saw of one process."""

    pid: int
    name: str
    start_ticks: int
    cpu_s: float                       # user + system at the last sample that saw it
    peak_rss_mb: float | None = None   # VmHWM (its lifetime peak) at the last sample that saw it


class ProcessTreeSampler:
    """The CPU time and peak memory of the processes below ``root_pid`` whose executable name
    (``comm``) is one of ``names``, read from /proc at each ``sample``.

    Only descendants of the root count, so a process of that name that was already running
    elsewhere is never looked at. A process is followed from the first sample that sees it
    until it is gone, even after it is reparented. Its CPU is its lifetime total at the last
    sample that saw it; what it used between that sample and its exit is missed (at most one
    sampling interval of its use, typically its shutdown). Its peak RSS is the kernel's
    high-water mark (VmHWM), so only a peak after the last sample that saw it is missed.
    Reading only: no process is signalled here."""

    def __init__(self, root_pid: int, names: Collection[str]) -> None:
        self.root_pid = root_pid
        self.names = frozenset(names)
        self.samples = 0
        self._seen: dict[tuple[int, int], SampledProcess] = {}

    def sample(self) -> None:
        stats = _proc_stats()
        for pid in _below(self.root_pid, stats):
            s = stats[pid]
            if s.comm in self.names and (pid, s.start_ticks) not in self._seen:
                self._seen[(pid, s.start_ticks)] = SampledProcess(pid, s.comm, s.start_ticks, s.cpu_s)
        for (pid, start), p in self._seen.items():
            s = stats.get(pid)
            if s is None or s.start_ticks != start:
                continue  # gone (or its pid is another process's now): keep what was seen last
            p.cpu_s = s.cpu_s
            hwm = peak_rss_mb(pid)
            if hwm is not None:
                p.peak_rss_mb = max(p.peak_rss_mb or 0.0, hwm)
        self.samples += 1

    def processes(self) -> list[SampledProcess]:
        """Every process seen, in the order they started."""
        return sorted(self._seen.values(), key=lambda p: (p.start_ticks, p.pid))

    def follow(self, proc: subprocess.Popen, interval_s: float, timeout_s: float) -> bool:
        """Sample every ``interval_s`` until ``proc`` (the root) exits: True; or until
        ``timeout_s`` has passed: False, with ``proc`` still running."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.sample()
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                return proc.poll() is not None
            try:
                proc.wait(timeout=min(interval_s, remaining_s))
                return True
            except subprocess.TimeoutExpired:
                pass
