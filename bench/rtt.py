"""``loom bench rtt``: this machine's floor for a request/reply between two processes -- a bare
pyzmq DEALER sending to a ROUTER that echoes, on loopback, with a pause between round trips
(an idle process is slower to wake than a busy one, which is what a latency run at a low
offered rate meets). Run it beside a latency run to tell Loom's milliseconds from the machine's.

    python -m bench.rtt --pause-ms 0.5 --count 3000 --runs 3

Every process started here is stopped (joined, then killed by its pid). Not thread-safe.
"""

from __future__ import annotations

import json
import multiprocessing
import statistics
import time
from pathlib import Path

import zmq

from bench.options import UsageParser
from bench.stats import LatencyHistogram
from nodes.local_cluster import free_ports

COUNT_MAX = 1_000_000
ECHO_STOP = b"stop"
RECV_TIMEOUT_MS = 5000  # a round trip this slow means the echo process is gone
PAYLOAD_BYTES = 100


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
        for _ in range(count):
            t0 = time.perf_counter()
            d.send_multipart([b"", payload])
            d.recv_multipart()
            lat.record_us((time.perf_counter() - t0) * 1e6)
            if pause_s:
                time.sleep(pause_s)  # the offered pace, not synchronisation
        d.send_multipart([b"", ECHO_STOP])
    finally:
        d.close(0)
        ctx.term()
        echo.join(timeout=RECV_TIMEOUT_MS / 1000)
        if echo.is_alive():
            echo.kill()
    return lat.summary_ms()


def main(argv: list[str] | None = None) -> int:
    ap = UsageParser(prog="loom bench rtt", description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=3000, help="round trips per run (default 3000)")
    ap.add_argument("--pause-ms", type=float, default=0.5, help="pause between round trips (default 0.5: 2,000/s)")
    ap.add_argument("--runs", type=int, default=3, help="runs; medians reported (default 3)")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    if not 0 < a.count <= COUNT_MAX or a.pause_ms < 0 or a.runs < 1:
        ap.error(f"--count must be 1..{COUNT_MAX:,}, --pause-ms >= 0, --runs >= 1")
    runs = []
    for i in range(a.runs):
        r = measure(a.count, a.pause_ms / 1000)
        runs.append(r)
        print(f"run {i + 1}/{a.runs}: round trip p50/p99/p99.9 {r['p50']}/{r['p99']}/{r['p999']} ms")
    med = {k: round(statistics.median(r[k] for r in runs), 3) for k in ("p50", "p99", "p999")}
    print(f"loom bench rtt: bare pyzmq DEALER/ROUTER round trip, {a.pause_ms} ms pause, medians of {a.runs}: "
          f"p50 {med['p50']} ms, p99 {med['p99']} ms, p99.9 {med['p999']} ms")
    if a.json:
        Path(a.json).write_text(json.dumps({"latency_ms": med, "runs": runs, "pause_ms": a.pause_ms, "count": a.count}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
