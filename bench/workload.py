"""One run of a ``loom bench produce|consume|e2e`` workload against one cluster: create the
topic, start the worker processes (``bench.worker``), drive their phases, and turn their sample
lines into totals, a timeline (one point per ``bench.worker.SAMPLE_INTERVAL_S``) and the
cluster's CPU and memory.

Phases: produce — the producers run; e2e — consumers and producers run together, the consumers
are told to stop once the producers are done; consume — the producers write the backlog, then
the consumers drain it (both phases measured).

Every wait is bounded by a time limit; every worker started here is stopped by its pid.
Not thread-safe (one run at a time, on the caller's thread).
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from bench.options import BenchOptions
from bench.stats import LatencyHistogram, counts_writes, cpu_between, process_cpu_s, process_write_bytes, rss_mb
from bench.worker import PHASE_S_MAX, SAMPLE_INTERVAL_S
from fabric import protocol as P
from fabric.errors import FabricError, RemoteError
from nodes.local_cluster import SOURCE_ROOT, wait_until

READY_S_MAX = 120.0          # workers connected and positioned
TOPIC_READY_S_MAX = 120.0    # every partition led (1,000 partitions take a while on 2 cores)
READ_BYTES_MAX = 1 << 20     # one read of a worker's pipe
RSS_SAMPLES_MAX = 100_000    # per broker and run (one per SAMPLE_INTERVAL_S)
WORKER_STOP_S_MAX = 10.0
# A self-contained cluster's producers stop below this much free under its data, or this share
# of the file system if that is more: at ~1 GB/s and a check every pump pass (<= 0.25 s) plus
# the producers' buffers, a margin for the system, small enough that a machine with a few GB
# free still runs the small benchmarks of the test suite
DISK_FREE_MIN_BYTES = 1 << 30
DISK_FREE_MIN_SHARE = 0.02
MEMORY_AVAILABLE_MIN_BYTES = 1 << 30  # ... or below this much of the machine's memory available
MEMORY_AVAILABLE_MIN_SHARE = 0.05     # ... or this share of it, if that is more (the memory engine)


class PhaseCost(NamedTuple):
    """What one phase of a run cost the cluster (None: its processes are unknown)."""
    cpu_s: float | None
    wall_s: float
    write_bytes: int | None  # written to storage by the node processes (/proc/PID/io)


@dataclass
class Target:
    """The cluster a run talks to; ``node_pids`` is empty when the processes are unknown."""

    bootstrap: list[str]
    node_pids: dict[str, int]
    self_contained: bool
    data_dir: str | None = None  # a self-contained cluster's data: the disk guard watches its file system

    @property
    def broker_pids(self) -> dict[str, int]:
        return {n: p for n, p in self.node_pids.items() if n.startswith("broker")}


@dataclass
class Worker:
    role: str
    index: int
    proc: subprocess.Popen
    stderr_path: str
    buffer: bytes = b""
    ready: bool = False
    going: bool = False  # sent "go" (a worker reads "go" before any other word)
    done: dict | None = None
    last: dict = field(default_factory=lambda: {"acked": 0, "consumed": 0})


class Timeline:
    """Samples of every worker merged into buckets of SAMPLE_INTERVAL_S from ``origin``. A
    sample's counters grew over its own ``dt``: its rates are growth / dt, a worker's rates in
    one bucket are averaged, and the workers' averages are summed (so the points do not
    zig-zag when a worker's sampling drifts against the buckets)."""

    def __init__(self) -> None:
        self.origin = time.time()
        self.buckets: dict[int, dict] = {}

    def add(self, w: Worker, sample: dict) -> None:
        b = self.buckets.setdefault(int((sample["t"] - self.origin) / SAMPLE_INTERVAL_S),
                                    {"rates": {}, "lat": LatencyHistogram(), "e2e": LatencyHistogram()})
        dt = max(sample.get("dt", SAMPLE_INTERVAL_S), 1e-3)
        rates = []
        for counter in ("acked", "consumed"):
            rates.append((sample[counter] - w.last[counter]) / dt)
            w.last[counter] = sample[counter]
        b["rates"].setdefault((w.role, w.index), []).append(rates)
        b["lat"].merge(LatencyHistogram.from_json(sample["lat"]))
        b["e2e"].merge(LatencyHistogram.from_json(sample["e2e"]))

    @staticmethod
    def _rate(b: dict, i: int) -> int:
        return round(sum(sum(r[i] for r in rs) / len(rs) for rs in b["rates"].values()))

    def points(self) -> list[dict]:
        out = []
        for i in sorted(self.buckets):
            b = self.buckets[i]
            out.append({"t_s": round((i + 1) * SAMPLE_INTERVAL_S, 2),
                        "produced_per_s": self._rate(b, 0), "consumed_per_s": self._rate(b, 1),
                        "p50_ms": b["lat"].percentile_ms(50), "p99_ms": b["lat"].percentile_ms(99),
                        "e2e_p99_ms": b["e2e"].percentile_ms(99)})
        return out


def disk_floor_bytes(total: int) -> int:
    """The free space below which a run's producers stop (``Run.check_room``)."""
    return max(DISK_FREE_MIN_BYTES, int(total * DISK_FREE_MIN_SHARE))


def memory_floor_bytes(total: int) -> int:
    """The available memory below which a run's producers stop (``Run.check_room``)."""
    return max(MEMORY_AVAILABLE_MIN_BYTES, int(total * MEMORY_AVAILABLE_MIN_SHARE))


def machine_memory() -> tuple[int, int] | None:
    """(MemTotal, MemAvailable) of /proc/meminfo in bytes; None when unreadable."""
    fields: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                name, _, rest = line.partition(":")
                if name in ("MemTotal", "MemAvailable"):
                    fields[name] = int(rest.split()[0]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    if len(fields) < 2:
        return None
    return fields["MemTotal"], fields["MemAvailable"]


def room_short(data_dir: str, disk_usage: Callable[[str], Any], memory: Callable[[], tuple[int, int] | None]) -> str | None:
    """Why a self-contained cluster has no room to take more records, or None: the file
    system under its data below ``disk_floor_bytes`` free, or the machine below
    ``memory_floor_bytes`` available (the memory engine keeps every record in RAM)."""
    usage = disk_usage(data_dir)
    floor = disk_floor_bytes(usage.total)
    if usage.free < floor:
        return f"the disk under {data_dir} had {usage.free / 1e9:.1f} GB free (the floor is {floor / 1e9:.1f} GB)"
    mem = memory()
    if mem is not None:
        total, available = mem
        floor = memory_floor_bytes(total)
        if available < floor:
            return (f"the machine had {available / 1e9:.1f} GB of memory available "
                    f"(the floor is {floor / 1e9:.1f} GB)")
    return None


def check_room_before_run(data_dir: str, disk_usage: Callable[[str], Any] | None = None,
                          memory: Callable[[], tuple[int, int] | None] | None = None) -> None:
    """Refuse to start a self-contained cluster with no room already (its producers would be
    stopped at once). Raises RuntimeError saying what is short."""
    short = room_short(data_dir, disk_usage or shutil.disk_usage, memory or machine_memory)
    if short is not None:
        raise RuntimeError(f"{short}: a self-contained run needs more room (free some, or point TMPDIR "
                           "at a larger disk)")


def record_shares(total: int | None, n: int) -> list[int | None]:
    """``total`` split over n workers (the first ones take the remainder)."""
    if total is None:
        return [None] * n
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def create_topic(bootstrap: list[str], o: BenchOptions, run: int) -> str:
    from fabric.client import Admin
    topic = o.topic or f"bench-{o.command}-{run}-{uuid.uuid4().hex[:8]}"
    with Admin(bootstrap) as admin:
        try:
            admin.create_topic(topic, partitions=o.partitions, replication_factor=o.replication_factor)
        except RemoteError as e:
            if e.code != P.TOPIC_ALREADY_EXISTS or o.topic is None:
                raise
        try:
            wait_until(lambda: _topic_ready(admin, topic), TOPIC_READY_S_MAX, interval_s=0.1,
                       what=f"every partition of {topic} led with a full ISR")
        except AssertionError as e:  # wait_until's timeout: an operating error here
            raise RuntimeError(str(e)) from e
    return topic


def delete_run_topic(bootstrap: list[str], topic: str, group: str | None) -> None:
    """Delete the topic (and consumer group) a run made on a running cluster: four short runs
    left nine bench topics and a gigabyte of records behind in the user's cluster. A failure
    is reported, not raised (the run's figures stand)."""
    from fabric.client import Admin
    from fabric.client.group_admin import GroupAdmin
    try:
        with Admin(bootstrap) as admin:
            if group is not None:  # its consumers are gone: the group is empty
                GroupAdmin(admin).delete(group)
            admin.delete_topic(topic)
    except FabricError as e:
        print(f"loom bench: could not delete {topic}{f' or group {group}' if group else ''}: {e}", file=sys.stderr)


def _topic_ready(admin, topic: str) -> bool:  # noqa: ANN001
    t = admin.metadata().topics.get(topic)
    if t is None or any(p.leader < 0 or len(p.isr) < len(p.replicas) for p in t.partitions):
        return False
    admin.list_offsets(topic)  # raises until every leader has taken over
    return True


def _spawn(spec: dict, work: str) -> Worker:
    stderr_path = os.path.join(work, f"{spec['role']}-{spec['index']}.stderr")
    env = dict(os.environ, PYTHONPATH=str(SOURCE_ROOT), PYTHONUNBUFFERED="1")
    with open(stderr_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "bench.worker", json.dumps(spec)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err, cwd=str(SOURCE_ROOT), env=env)
    os.set_blocking(proc.stdout.fileno(), False)
    return Worker(spec["role"], spec["index"], proc, stderr_path)


def tell(workers: list[Worker], word: str) -> None:
    for w in workers:
        try:
            w.proc.stdin.write(word.encode() + b"\n")
            w.proc.stdin.flush()
        except BrokenPipeError as e:  # the worker has died: say why, as pump() would
            raise RuntimeError(f"{w.role} {w.index} exited with {w.proc.poll()}: {_tail(w.stderr_path)}") from e


def _stop(w: Worker) -> None:
    if w.proc.poll() is None:
        os.kill(w.proc.pid, signal.SIGTERM)
        try:
            w.proc.wait(timeout=WORKER_STOP_S_MAX)
        except subprocess.TimeoutExpired:
            os.kill(w.proc.pid, signal.SIGKILL)
            w.proc.wait(timeout=WORKER_STOP_S_MAX)
    for stream in (w.proc.stdin, w.proc.stdout):
        try:
            stream.close()
        except OSError:
            pass


class Run:
    """The worker processes of one run and the loop that reads them."""

    def __init__(self, o: BenchOptions, target: Target, topic: str, work: str,
                 on_tick: Callable[[dict], None] | None,
                 disk_usage: Callable[[str], Any] | None = None,
                 memory: Callable[[], tuple[int, int] | None] | None = None) -> None:
        self.o, self.target, self.topic, self.work = o, target, topic, work
        self.disk_usage = disk_usage or shutil.disk_usage
        self.memory = memory or machine_memory
        self.stopped_early: str | None = None  # why the producers were told to stop, if they were
        self.on_tick = on_tick or (lambda _: None)
        self.workers: list[Worker] = []
        self.timeline = Timeline()
        self.rss_peak_mb: dict[str, float] = {}
        self.rss_samples_mb: dict[str, list[tuple[float, float]]] = {}  # broker -> (t_s, MB), for the trend
        self.group_expected: int | None = None  # group mode: the records the group must read
        self.selector = selectors.DefaultSelector()

    def spec(self, role: str, index: int, **kw: object) -> dict:
        o = self.o
        return {"role": role, "index": index, "bootstrap": self.target.bootstrap, "topic": self.topic,
                "record_size": o.record_size, "acks": o.acks, "batch_size": o.batch_size, "linger_ms": o.linger_ms,
                "compression": o.compression, "e2e": o.command == "e2e", **kw}

    def start(self, specs: list[dict]) -> list[Worker]:
        started = [_spawn(s, self.work) for s in specs]
        for w in started:
            self.selector.register(w.proc.stdout, selectors.EVENT_READ, w)
        self.workers += started
        self.pump(lambda: all(w.ready for w in started), READY_S_MAX, "workers to connect")
        return started

    def pump(self, until: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Read worker lines until ``until()`` (raises on a worker's error or after timeout_s)."""
        deadline = time.monotonic() + timeout_s
        next_rss = 0.0
        while not until():
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")
            for key, _ in self.selector.select(timeout=SAMPLE_INTERVAL_S / 2):
                self._read(key.data)
            self.check_room()
            if time.monotonic() >= next_rss:
                next_rss = time.monotonic() + SAMPLE_INTERVAL_S
                for name, pid in self.target.broker_pids.items():
                    mb = rss_mb(pid)
                    if mb is None:
                        continue
                    self.rss_peak_mb[name] = max(self.rss_peak_mb.get(name, 0.0), mb)
                    samples = self.rss_samples_mb.setdefault(name, [])
                    if len(samples) < RSS_SAMPLES_MAX:
                        samples.append((time.monotonic(), mb))
            for w in self.workers:
                if w.done is None and w.proc.poll() is not None and not self._read(w):
                    raise RuntimeError(f"{w.role} {w.index} exited with {w.proc.returncode} without a result: "
                                       + _tail(w.stderr_path))

    def check_room(self) -> None:
        """A self-contained cluster writes as fast as the disk takes it (1 KiB records at RF 3:
        about 1 GB/s here), and with the memory engine keeps it all in RAM: a long
        ``--duration`` run would fill the disk or the memory. With less room than the floors
        (``room_short``), tell the producers still running to stop (once). The run then ends
        as a shorter one would, and its result says why (``stopped_early``)."""
        if self.stopped_early is not None or not self.target.self_contained or not self.target.data_dir:
            return
        running = [w for w in self.workers
                   if w.role == "producer" and w.going and w.done is None and w.proc.poll() is None]
        if not running:  # nothing to cut short (the producers not started yet, or done)
            return
        short = room_short(self.target.data_dir, self.disk_usage, self.memory)
        if short is None:
            return
        self.stopped_early = short
        print(f"loom bench: {short}: the producers stop here", file=sys.stderr, flush=True)
        tell(running, "stop")

    def _read(self, w: Worker) -> bool:
        try:
            chunk = os.read(w.proc.stdout.fileno(), READ_BYTES_MAX)
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            chunk = b""
        if not chunk:  # end of file: the worker has exited
            try:
                self.selector.unregister(w.proc.stdout)
            except (KeyError, ValueError):
                pass
            return False
        w.buffer += chunk
        *lines, w.buffer = w.buffer.split(b"\n")
        for raw in lines:  # bounded by READ_BYTES_MAX per read
            self._line(w, json.loads(raw))
        return True

    def _line(self, w: Worker, line: dict) -> None:
        if "error" in line:
            raise RuntimeError(line["error"])
        if "ready" in line:
            w.ready = True
        elif "sample" in line:
            self.timeline.add(w, line["sample"])
            self.on_tick(self.progress())
        elif "done" in line:
            w.done = line["done"]

    def progress(self) -> dict:
        return {"produced": sum(w.last["acked"] for w in self.workers if w.role == "producer"),
                "consumed": sum(w.last["consumed"] for w in self.workers if w.role == "consumer"),
                "elapsed_s": time.time() - self.timeline.origin}

    def phase(self, workers: list[Worker], then: Callable[[], None] | None = None) -> PhaseCost:
        """Start ``workers``; returns the cluster's CPU seconds and bytes written to storage
        (None when its processes are unknown: a cluster elsewhere) and the wall seconds until
        they are done (``then`` runs once the producers among them are done)."""
        pids = list(self.target.node_pids.values())
        cpu0, written0, t0 = process_cpu_s(pids), process_write_bytes(pids), time.monotonic()
        if not self.timeline.buckets:
            self.timeline.origin = time.time()  # the chart's zero: the first phase's start
        tell(workers, "go")
        for w in workers:
            w.going = True
        producers = [w for w in workers if w.role == "producer"]
        if then is not None:
            self.pump(lambda: all(w.done for w in producers), PHASE_S_MAX, "the producers to finish")
            then()
        self.pump(lambda: all(w.done for w in workers), PHASE_S_MAX, "the workers to finish")
        cpu = cpu_between(cpu0, process_cpu_s(pids)) if pids else None
        written1 = process_write_bytes(pids)
        written = written1 - written0 if written0 is not None and written1 is not None else None
        if self.target.data_dir and not counts_writes(self.target.data_dir):
            written = None  # a tmpfs is never written back: 0 bytes would be a wrong figure
        return PhaseCost(cpu, time.monotonic() - t0, written)

    def stop_when_read(self, consumers: list[Worker]) -> None:
        """Group mode: once the group has read every record of the topic (the members cannot
        know their shares), tell its members to stop."""
        from fabric.client import EARLIEST, LATEST, Admin
        with Admin(self.target.bootstrap) as admin:
            end, begin = admin.list_offsets(self.topic, LATEST), admin.list_offsets(self.topic, EARLIEST)
        self.group_expected = sum(end.values()) - sum(begin.values())
        self.pump(lambda: self.progress()["consumed"] >= self.group_expected, PHASE_S_MAX,
                  f"the group to read {self.group_expected} records")
        tell(consumers, "stop")

    def close(self) -> None:
        for w in self.workers:
            _stop(w)
        self.selector.close()


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, errors="replace") as f:
            return " | ".join(f.read().strip().splitlines()[-lines:])
    except OSError:
        return ""
