"""``loom bench rtt``: this machine's floor for a request/reply between two processes -- a bare
pyzmq DEALER sending to a ROUTER that echoes, on loopback, with a pause between round trips
(an idle process is slower to wake than a busy one, which is what a latency run at a low
offered rate meets). Run it beside a latency run to tell Loom's milliseconds from the machine's.
Besides the latency it reports the CPU each side spent per round trip (what waking costs here).

With ``--loom`` the same closed loop goes through a self-contained Loom cluster instead: one
record per ``send()`` (``linger_ms`` 0, ``acks=all``, one partition of replication factor
``--replication-factor``), waited for before the next, and the CPU every process spent per
request (its idle CPU over the same time subtracted: the lower of its idle rates measured
before and after the requests) -- where a produce's hops cost.

With ``--loom --hops`` every process also marks the points a produce passes
(``fabric.hoptrace``): the client's application and I/O threads, the leader, the followers. One
request is in flight at a time, so each request's points line up on the machine's one monotonic
clock, and the run prints the time between consecutive points (p50/p90/p99 over the requests):
which thread, which wire hop, which piece of work the milliseconds go to.

With ``--loom --calls`` every broker counts the Python calls its reactor thread makes over the
measured requests (``fabric.callcount``: cProfile, started and stopped by signals after the
warm-up and after the last request) and the run prints the calls per request of the leader and
of each follower, and the functions called most per request. A count, unlike a time, does not
move with the machine's load: the measure of a change to the per-message Python. (The profiler
slows the Python down ~4x: that run's latency and CPU figures are not comparable.)

    python -m bench.rtt --pause-ms 0.5 --count 3000 --runs 3
    python -m bench.rtt --loom --count 3000 --runs 3
    python -m bench.rtt --loom --hops --count 3000 --runs 3
    python -m bench.rtt --loom --calls --count 3000 --runs 1

Every process started here is stopped (joined, then killed by its pid). Not thread-safe.
"""

from __future__ import annotations

import bisect
import json
import multiprocessing
import os
import pstats
import statistics
import tempfile
import time
from pathlib import Path
from typing import Iterable

import zmq

from bench.options import UsageParser
from bench.stats import LatencyHistogram, nearest_rank, process_cpu_s
from fabric import callcount, hoptrace
from nodes.local_cluster import free_ports, running_cluster

COUNT_MAX = 1_000_000
ECHO_STOP = b"stop"
RECV_TIMEOUT_MS = 5000  # a round trip this slow means the echo process is gone
PAYLOAD_BYTES = 100
IDLE_S = 2.0                # --loom: each process's idle CPU is measured over this long first
WARM_UP_REQUESTS = 200      # --loom: connections, metadata and the producer id settled first
LOOM_FSYNC_INTERVAL_MS = 1000
LOOM_TOPIC = "bench-rtt"
HOP_FOUND_SHARE_MIN = 0.5   # --hops: a point found in fewer of the requests is one this run does not pass (RF 1: the followers')
CALLS_FILE_WAIT_S = 30.0    # --calls: a broker that has not started or written its count by then is gone
CALLS_TOP = 25              # --calls: the functions shown per process

# --hops: the points one acks=all produce passes, in order: (process, point, what the time
# since the previous point went to, its kind: "work" in a thread, or "hop" -- a wake-up or the
# wire between threads and processes). Points a run never passes (RF 1: the followers') drop out.
HOPS = (
    ("client", "app.send", "", ""),
    ("client", "producer.queued", "client app thread: send() queues the record", "work"),
    ("client", "sender.pass", "client app thread wakes the I/O thread, which runs", "hop"),
    ("client", "sender.request", "client I/O thread: takes the batch, builds and sends the request", "work"),
    ("leader", "port.chunk", "wire client -> leader (TCP, no I/O thread at either end), the leader's reactor wakes", "hop"),
    ("leader", "produce.request", "leader: ZMTP framing, request decoding", "work"),
    ("leader", "produce.append", "leader: produce decoding, the rest of the drain, group commit", "work"),
    ("leader", "produce.appended", "leader: validate and write the batch", "work"),
    ("leader", "produce.publish", "leader: stamp and encode for the followers", "work"),
    ("follower", "replica.batch", "publish (the reactor writes each follower's socket), wire leader -> follower, the follower wakes", "hop"),
    ("follower", "replica.ack", "follower: decode, append", "work"),
    ("leader", "ack.received", "ack out, wire follower -> leader, ZMTP and request decoding", "hop"),
    ("leader", "ack.received", "until the other follower's ack", "hop"),
    ("leader", "produce.answer", "leader: high watermark, the parked produce ready", "work"),
    ("client", "sender.reply", "reply out, wire leader -> client I/O thread, reply decoding", "hop"),
    ("client", "sender.decoded", "client I/O thread: decode the results", "work"),
    ("client", "app.acked", "client I/O thread completes the future, the app thread wakes: result() returns", "hop"),
)


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


def _idle_cpu_per_s(pids: dict[str, int]) -> tuple[dict[str, float], dict[str, float], float]:
    """Each process's CPU seconds per second over ``IDLE_S`` of nothing asked of it; also the
    CPU times and the clock at the end (where a measured stretch starts)."""
    before, t0 = _cpu_s(pids), time.perf_counter()
    time.sleep(IDLE_S)  # measuring the idle CPU, not synchronisation
    after, t1 = _cpu_s(pids), time.perf_counter()
    return {n: (after[n] - before[n]) / (t1 - t0) for n in after}, after, t1


def above_idle(busy_cpu_s: float, idle_cpu_per_s: float, elapsed_s: float) -> float:
    """The CPU a process spent over ``elapsed_s`` beyond its idle rate, never below zero. The
    rate is the lower of two measures, before the requests and after them: one taken right
    after the warm-up can hold a node's start-up work (the coordinator's first checks), and
    subtracting it printed a negative CPU per request for a process that does almost nothing
    per request."""
    return max(0.0, busy_cpu_s - idle_cpu_per_s * elapsed_s)


def _per_request_us(cpu_s: float, count: int) -> float:
    return round(cpu_s / count * 1e6, 1)


def measure_loom(count: int, pause_s: float, replication_factor: int, hops: bool = False,
                 calls: bool = False) -> dict:
    """``count`` one-record produces through a fresh self-contained cluster, each waited for,
    with ``pause_s`` between them: latency summary in ms and, per process, CPU µs per request
    above its idle CPU; with ``hops``, also the time between the points each request passed
    (``hop_table``); with ``calls``, the Python calls per request of each broker's reactor
    thread (``calls_table``). The cluster is stopped by its pids and its directory removed."""
    with tempfile.TemporaryDirectory(prefix="loom-bench-rtt-", ignore_cleanup_errors=True) as work:
        if calls:
            counts = Path(work) / "calls"
            counts.mkdir()
            os.environ[callcount.ENV] = str(counts)  # the node processes inherit it
            try:
                out = _measure_loom(Path(work), count, pause_s, replication_factor, counts)
            finally:
                del os.environ[callcount.ENV]
            return out
        if not hops:
            out = _measure_loom(Path(work), count, pause_s, replication_factor)
            del out["roles"]
            return out
        traces = Path(work) / "hops"
        traces.mkdir()
        os.environ[hoptrace.ENV] = str(traces)  # the node processes inherit it
        hoptrace.enable(traces)
        try:
            out = _measure_loom(Path(work), count, pause_s, replication_factor)
        finally:
            del os.environ[hoptrace.ENV]
            hoptrace.disable()
        roles = out.pop("roles")
        return dict(out, hops=hop_table(hoptrace.read(traces), roles))


def _measure_loom(work: Path, count: int, pause_s: float, replication_factor: int,
                  counts: Path | None = None) -> dict:
    from fabric.client import Admin, Producer
    overrides = {"storage": {"fsync_interval_ms": LOOM_FSYNC_INTERVAL_MS}}
    with running_cluster(work, 3, overrides=overrides) as cluster:
        cluster.create_topic(LOOM_TOPIC, partitions=1, replication_factor=replication_factor)
        with Admin(cluster.bootstrap) as admin:
            leader = admin.metadata().topics[LOOM_TOPIC].partitions[0].leader
        pids = {n: p.pid for n, p in cluster.procs.items()}
        with Producer(cluster.bootstrap, linger_ms=0, acks="all") as producer:
            payload = b"x" * PAYLOAD_BYTES
            for _ in range(WARM_UP_REQUESTS):
                producer.send(LOOM_TOPIC, payload).result(RECV_TIMEOUT_MS / 1000)
            idle_before, after, t1 = _idle_cpu_per_s(pids)
            brokers = {n: pid for n, pid in pids.items() if n.startswith("broker-")}
            if counts is not None:
                _signal_and_wait(brokers.values(), callcount.START_SIGNAL, counts, callcount.STARTED_SUFFIX)
            lat = LatencyHistogram()
            for _ in range(count):
                t = time.perf_counter()
                hoptrace.mark("app.send")
                producer.send(LOOM_TOPIC, payload).result(RECV_TIMEOUT_MS / 1000)
                hoptrace.mark("app.acked")
                lat.record_us((time.perf_counter() - t) * 1e6)
                if pause_s:
                    time.sleep(pause_s)  # the offered pace, not synchronisation
            if counts is not None:
                _signal_and_wait(brokers.values(), callcount.STOP_SIGNAL, counts, callcount.SUFFIX)
            end, elapsed = _cpu_s(pids), time.perf_counter() - t1
            idle_after = _idle_cpu_per_s(pids)[0]
    cpu = {("leader" if n == f"broker-{leader}" else n):
           _per_request_us(above_idle(end[n] - after[n], min(idle_before[n], idle_after[n]), elapsed), count)
           for n in end}
    cpu["cluster"] = round(sum(v for n, v in cpu.items() if n != "client"), 1)
    roles = {pid: ("leader" if n == f"broker-{leader}" else "follower" if n.startswith("broker-") else n)
             for n, pid in pids.items()}
    roles[os.getpid()] = "client"
    out = dict(lat.summary_ms(), cpu_us_per_request=cpu, roles=roles)
    if counts is not None:
        out["calls"] = calls_table(counts, {n: pids[n] for n in pids if n.startswith("broker-")},
                                   f"broker-{leader}", count)
        del out["roles"]
    return out


def _signal_and_wait(pids: Iterable[int], signum: int, directory: Path, suffix: str) -> None:
    """Send ``signum`` to every pid, then wait until each has written ``<pid><suffix>``."""
    pids = list(pids)
    for pid in pids:
        os.kill(pid, signum)
    deadline = time.monotonic() + CALLS_FILE_WAIT_S
    while not all((directory / f"{pid}{suffix}").exists() for pid in pids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"a broker wrote no {suffix} file within {CALLS_FILE_WAIT_S} s: is it running?")
        time.sleep(0.01)  # polling for files the brokers write, within a deadline


def calls_table(directory: Path, brokers: dict[str, int], leader: str, count: int) -> dict:
    """Per broker (``leader``, ``follower-1``, ``follower-2``): Python calls of its reactor thread
    per request, and the ``CALLS_TOP`` functions called most (calls per request)."""
    out = {}
    followers = 0
    for name, pid in sorted(brokers.items()):
        st = pstats.Stats(str(directory / f"{pid}{callcount.SUFFIX}"))
        if name == leader:
            role = "leader"
        else:
            followers += 1
            role = f"follower-{followers}"
        top = sorted(st.stats.items(), key=lambda kv: -kv[1][1])[:CALLS_TOP]  # type: ignore[attr-defined]
        out[role] = {"calls_per_request": round(st.total_calls / count, 1),  # type: ignore[attr-defined]
                     "top": [(pstats.func_std_string(f), round(v[1] / count, 2)) for f, v in top]}
    return out


def print_calls(calls: dict) -> None:
    print("Python calls per request of each broker's reactor thread (cProfile, the measured requests only):")
    for role, c in calls.items():
        print(f"  {role}: {c['calls_per_request']} calls per request; the most called:")
        for name, n in c["top"]:
            print(f"    {n:8.2f}  {name}")


def hop_table(marks: dict[int, list[tuple[int, str]]], roles: dict[int, str]) -> dict:
    """Line up each request's points (``HOPS``) from every process's marks: per step, the µs
    since the previous point (p50/p90/p99 over the requests), and per request the sums of
    "work" and "hop" steps. A request is the client's ``app.send``..``app.acked``; a step is
    the first mark of its point, by a process of its role, after the previous step."""
    times: dict[tuple[str, str], list[int]] = {}
    for pid, ms in marks.items():
        role = roles.get(pid)
        for t, point in ms:
            times.setdefault((role, point), []).append(t)  # type: ignore[arg-type]
    for ts in times.values():
        ts.sort()
    client = sorted((t, p) for t, p in marks.get(next(p for p, r in roles.items() if r == "client"), ())
                    if p in ("app.send", "app.acked"))
    windows = [(a[0], b[0]) for a, b in zip(client, client[1:]) if a[1] == "app.send" and b[1] == "app.acked"]
    steps = HOPS[1:-1]

    def walk(start: int, end: int, keep: list[bool]) -> list[int | None]:
        found, t = [], start
        for (role, point, _, _), kept in zip(steps, keep):
            ts = times.get((role, point), [])
            i = bisect.bisect_right(ts, t)  # strictly after: a point may follow itself (two acks)
            if kept and i < len(ts) and ts[i] <= end:
                t = ts[i]
                found.append(t)
            else:
                found.append(None)
        return found

    every = [True] * len(steps)
    counts = [0] * len(steps)
    for start, end in windows:
        for i, t in enumerate(walk(start, end, every)):
            counts[i] += t is not None
    keep = [c >= HOP_FOUND_SHARE_MIN * len(windows) and c > 0 for c in counts]
    rows = [(HOPS[0], None)] + [(h, []) for h, k in zip(steps, keep) if k] + [(HOPS[-1], [])]
    sums: dict[str, list[float]] = {"work": [], "hop": []}
    for start, end in windows:
        found = [t for t, k in zip(walk(start, end, keep), keep) if k]
        if None in found:
            continue  # a request missing a point (a retry, a stray heartbeat pass): left out
        chain = [start, *found, end]
        per_kind = {"work": 0.0, "hop": 0.0}
        for (hop, deltas), a, b in zip(rows[1:], chain, chain[1:]):
            deltas.append((b - a) / 1000)
            per_kind[hop[3]] += (b - a) / 1000
        for kind, v in per_kind.items():
            sums[kind].append(v)
    lined_up = len(sums["work"])
    return {"requests": len(windows), "lined_up": lined_up,
            "steps": [{"process": h[0], "point": h[1], "what": h[2], "kind": h[3], **_percentiles_us(d)}
                      for h, d in rows[1:]],
            "work_us": _percentiles_us(sums["work"]), "hop_us": _percentiles_us(sums["hop"])}


def _median(values: Iterable[float | None]) -> float | None:
    """The median of the runs' figures that are known (a tail percentile of too few samples is
    None: bench/stats.py)."""
    known = [v for v in values if v is not None]
    return round(statistics.median(known), 3) if known else None


def _percentiles_us(values: list[float]) -> dict:
    if not values:
        return {"p50": None, "p90": None, "p99": None}
    v = sorted(values)
    return {q: round(nearest_rank(v, f), 1) for q, f in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))}


def print_hops(hops: dict) -> None:
    print(f"where a produce's time goes: {hops['lined_up']} of {hops['requests']} requests lined up; "
          "us since the previous point, p50 / p90 / p99")
    for s in hops["steps"]:
        print(f"  {s['p50']:8.1f} {s['p90']:8.1f} {s['p99']:8.1f}  {s['kind']:4s}  {s['process']:8s} {s['what']}")
    w, h = hops["work_us"], hops["hop_us"]
    print(f"  per request: work in threads p50 {w['p50']} us, wake-ups and wire p50 {h['p50']} us")


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
    ap.add_argument("--hops", action="store_true",
                    help="with --loom: mark the points each produce passes in every process and print where its time goes")
    ap.add_argument("--calls", action="store_true",
                    help="with --loom: count the Python calls per request of each broker's reactor thread (cProfile)")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    if not 0 < a.count <= COUNT_MAX or not 0 <= a.pause_ms <= 1000 or not 1 <= a.runs <= 20:
        ap.error(f"--count must be 1..{COUNT_MAX:,}, --pause-ms 0..1000, --runs 1..20")
    if not 1 <= a.replication_factor <= 3:
        ap.error("--replication-factor must be 1..3 (the self-contained cluster has 3 brokers)")
    if a.hops and not a.loom:
        ap.error("--hops needs --loom (the bare round trip has no points to mark)")
    if a.calls and (not a.loom or a.hops):
        ap.error("--calls needs --loom and no --hops (the two would count each other)")
    cpu_key = "cpu_us_per_request" if a.loom else "cpu_us_per_round_trip"
    runs = []
    for i in range(a.runs):
        r = (measure_loom(a.count, a.pause_ms / 1000, a.replication_factor, a.hops, a.calls) if a.loom
             else measure(a.count, a.pause_ms / 1000))
        runs.append(r)
        cpu = ", ".join(f"{n} {v}" for n, v in r[cpu_key].items())
        print(f"run {i + 1}/{a.runs}: round trip p50/p99/p99.9 {r['p50']}/{r['p99']}/{r['p999']} ms; CPU us: {cpu}")
        if a.hops:
            print_hops(r["hops"])
        if a.calls:
            print_calls(r["calls"])
    med = {k: _median(r[k] for r in runs) for k in ("p50", "p99", "p999")}
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
