"""``loom bench gateway``: the gateway's targets on a cluster it starts on free ports.

- REST produce: requests of ``--batch`` records (100-byte values, binary format, acks=all)
  from ``--clients`` threads; records/s through the gateway.
- WebSocket consume: every record just produced, from the beginning, over one ``/ws/consume``
  connection; records/s.
- Latency: single-record REST produce (acks=all) offered at ``--rate`` requests/s (open loop:
  a request is sent on schedule whether or not the previous one returned) for ``--seconds``;
  p50/p99/max in ms.

Each phase also reports the CPU its node processes spent (``cpu``: the gateway -- gunicorn's
master and worker --, the producer service, the consumer services, the brokers, the
coordinator), per record for the throughput phases and per request for the latency phase:
on this shared 2-core machine a CPU figure compares two builds far more steadily than a rate.

Every loop is bounded in count and time. Results go to stdout (and ``--json FILE``).
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import requests
import websocket

from bench.options import UsageParser
from bench.stats import find_node_processes, nearest_rank, process_cpu_s
from nodes.local_cluster import GATEWAY_NODES, ROLE_KEYS, Cluster, gateway_overrides, make_config, wait_until

PHASE_SECONDS_MAX = 120
CLIENT_SWITCH_INTERVAL_S = 0.0005   # the latency phase's GIL switch interval (see latency())
AUTH = {"Authorization": f"Bearer {ROLE_KEYS['admin']}"}
BINARY = {"Content-Type": "application/vnd.kafka.binary.v2+json"}


def role_of(node: str) -> str:
    return "brokers" if node.startswith("broker-") else "consumers" if node.startswith("consumer-") else node


class PhaseCpu:
    """CPU seconds each role's processes spend between ``__init__`` and ``per(n)``."""

    def __init__(self, config_path: Path) -> None:
        self.pids: dict[str, list[int]] = {}
        for node, pids in find_node_processes(str(config_path)).items():
            self.pids.setdefault(role_of(node), []).extend(pids)
        self.start = {role: process_cpu_s(pids) for role, pids in self.pids.items()}

    def per(self, n: int, scale: float) -> dict[str, float]:
        """CPU per unit of work (``n`` units) by role, times ``scale`` (1e6: µs; 1e3: ms)."""
        return {role: round((process_cpu_s(pids) - self.start[role]) * scale / max(n, 1), 3)
                for role, pids in sorted(self.pids.items())}


def kept_alive(local: threading.local, url: Any, timeout_s: float) -> http.client.HTTPConnection:
    """This thread's kept-alive connection to ``url`` (made at the first call, TCP_NODELAY)."""
    conn = getattr(local, "conn", None)
    if conn is None:
        conn = local.conn = http.client.HTTPConnection(url.hostname, url.port, timeout=timeout_s)
        conn.connect()
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def rest_produce(base: str, topic: str, requests_n: int, batch: int, clients: int) -> dict:
    """Closed loop: ``clients`` threads, each on one kept-alive ``http.client`` connection,
    answers read with orjson. (``requests`` cost ~2-3 ms of CPU per 500-record request here,
    on the two cores the cluster uses: the benchmark measured itself.)"""
    value = base64.b64encode(b"v" * 100).decode()
    body = orjson.dumps({"records": [{"value": value}] * batch})
    headers = {**AUTH, **BINARY}
    url = urlsplit(base)
    local = threading.local()
    deadline = time.monotonic() + PHASE_SECONDS_MAX

    def one(_: int) -> int:
        conn = kept_alive(local, url, 60)
        if time.monotonic() > deadline:
            return 0
        conn.request("POST", f"/topics/{topic}?acks=all", body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError(f"produce answered {r.status}: {data[:200]!r}")
        return sum(o["error_code"] is None for o in orjson.loads(data)["offsets"])
    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        done = sum(pool.map(one, range(requests_n)))
    seconds = time.perf_counter() - t0
    return {"records": done, "seconds": round(seconds, 3), "records_per_s": round(done / seconds)}


def ws_consume(port: int, topic: str, records: int) -> dict:
    # skip_utf8_validation: websocket-client checks UTF-8 byte by byte in Python unless
    # wsaccel is installed (~0.5 s per 1 MB message: the benchmark measured itself); json.loads
    # of the decoded text still refuses anything that is not UTF-8
    ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/consume?topic={topic}&from=beginning&format=binary",
                                     header=[f"Authorization: Bearer {ROLE_KEYS['admin']}"], timeout=30,
                                     skip_utf8_validation=True)
    got = first = 0
    t0 = time.perf_counter()
    deadline = t0 + PHASE_SECONDS_MAX
    try:
        while got < records and time.perf_counter() < deadline:
            n = len(json.loads(ws.recv()).get("records", []))
            if got == 0:
                t0 = time.perf_counter()  # from the first records: the group join is not streaming
                first = n
            got += n
    finally:
        ws.close()
    seconds = time.perf_counter() - t0
    return {"records": got, "seconds": round(seconds, 3), "records_per_s": round((got - first) / seconds),
            "note": "the records after the first message, timed from its arrival (the group join is not counted)"}


def latency(base: str, topic: str, rate: float, seconds: float) -> dict:
    """Open-loop single-record produce. The client is http.client on one kept-alive
    connection per sender thread: requests' Session cost ~1.9 ms of CPU per request on this
    machine, as much as the gateway itself, on the same two cores as the cluster."""
    body = json.dumps({"records": [{"value": base64.b64encode(b"x" * 100).decode()}]}).encode()
    headers = {**AUTH, **BINARY}
    url = urlsplit(base)
    n = int(rate * seconds)
    lat_ms: list[float] = []
    lock = threading.Lock()
    local = threading.local()

    def one(at: float) -> None:
        conn = kept_alive(local, url, 30)
        delay = at - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        t = time.perf_counter()
        try:
            conn.request("POST", f"/topics/{topic}?acks=all", body=body, headers=headers)
            r = conn.getresponse()
            r.read()
        except (OSError, http.client.HTTPException):
            local.conn = None  # counted as not ok; the next request reconnects
            conn.close()
            return
        took = (time.perf_counter() - t) * 1000
        if r.status == 200:
            with lock:
                lat_ms.append(took)
    start = time.perf_counter() + 0.5
    # the sender threads must wake on schedule: with the default 5 ms switch interval a thread
    # waiting for this process's GIL (held by one parsing a response) adds up to 5 ms to the
    # latency it then measures
    switch_s = sys.getswitchinterval()
    sys.setswitchinterval(CLIENT_SWITCH_INTERVAL_S)
    try:
        with ThreadPoolExecutor(32) as pool:
            list(pool.map(one, [start + i / rate for i in range(n)]))
    finally:
        sys.setswitchinterval(switch_s)
    lat_ms.sort()  # of the answered requests: "ok" says how many of the n that is

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v, 2)
    return {"requests": n, "ok": len(lat_ms), "p50_ms": ms(nearest_rank(lat_ms, 0.5)),
            "p99_ms": ms(nearest_rank(lat_ms, 0.99)), "max_ms": ms(lat_ms[-1] if lat_ms else None)}


def rss_mb(pids: list[int]) -> list[int]:
    """Each process's resident memory in MB (0: gone)."""
    out = []
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            out.append(int(status.split("VmRSS:")[1].split()[0]) // 1024)
        except (OSError, IndexError, ValueError):
            out.append(0)
    return out


def instance_churn(base: str, port: int, topic: str, seconds: float, config_path: Path) -> dict:
    """Consumer instances made, subscribed to ``topic``, read three times (up to 200 KB each)
    and deleted, one after another, beside a ``/ws/consume`` stream of another group opened and
    closed every 3 s, for ``seconds``: each node's resident memory (MB, per process: the
    gateway's master and worker) before and after. A closed consumer that kept what it had
    fetched made a consumer service grow by ~1.3 MB per instance until a full collection."""
    nodes = {n: pids for n, pids in find_node_processes(str(config_path)).items()
             if n.startswith("consumer-") or n == "gateway"}
    before = {n: rss_mb(pids) for n, pids in nodes.items()}
    deadline = time.monotonic() + seconds
    made = 0

    def call(method: str, path: str, body: Any = None) -> None:
        rest_call(base, method, path, body)

    def streams() -> None:
        while time.monotonic() < deadline:
            ws = websocket.create_connection(f"ws://127.0.0.1:{port}/ws/consume?topic={topic}&group=churn-ws"
                                             "&from=beginning&format=binary", header=[f"Authorization: Bearer "
                                             f"{ROLE_KEYS['admin']}"], timeout=3, skip_utf8_validation=True)
            until = time.monotonic() + 3
            try:
                while time.monotonic() < until:
                    ws.recv()
            except (websocket.WebSocketException, OSError):
                pass  # the read timed out: the stream is closed and opened again
            finally:
                ws.close()
    side = threading.Thread(target=streams, daemon=True)
    side.start()
    while time.monotonic() < deadline:
        made += 1
        name = f"churn-{made}"
        call("POST", "/consumers/churn", {"name": name, "format": "binary", "auto.offset.reset": "earliest",
                                          "auto.commit.enable": "false"})
        call("POST", f"/consumers/churn/instances/{name}/subscription", {"topics": [topic]})
        for _ in range(3):
            call("GET", f"/consumers/churn/instances/{name}/records?timeout=500&max_bytes=200000")
        call("DELETE", f"/consumers/churn/instances/{name}")
    side.join(10)
    return {"instances": made, "seconds": round(seconds, 1),
            "rss_mb": {n: {"before": before[n], "after": rss_mb(pids)} for n, pids in sorted(nodes.items())}}


def rest_call(base: str, method: str, path: str, body: Any = None) -> requests.Response:
    r = requests.request(method, base + path, json=body, headers=AUTH, timeout=30)
    if r.status_code >= 300:
        raise RuntimeError(f"{method} {path} answered {r.status_code}: {r.text[:200]}")
    return r


def instances_held(base: str, topic: str, count: int, config_path: Path) -> dict:
    """``count`` consumer instances, each of a group of its own, subscribed to ``topic`` from its
    beginning and read once (one record), then left alone while they fetch ahead: the consumer
    services' resident memory (MB) before, once it stops growing (at most 30 s), and after the
    instances are deleted. What the instances fetch ahead is bounded by
    ``services.consumer_buffer_bytes_max`` (``--consumer-buffer-bytes``)."""
    nodes = {n: pids for n, pids in find_node_processes(str(config_path)).items() if n.startswith("consumer-")}
    before = {n: rss_mb(pids) for n, pids in nodes.items()}
    names = [f"held-{i}" for i in range(count)]
    for name in names:
        rest_call(base, "POST", f"/consumers/{name}", {"name": name, "format": "binary",
                                                      "auto.offset.reset": "earliest", "auto.commit.enable": "false"})
        rest_call(base, "POST", f"/consumers/{name}/instances/{name}/subscription", {"topics": [topic]})
        for _ in range(20):  # the first answers may be empty while the instance joins its group
            if rest_call(base, "GET", f"/consumers/{name}/instances/{name}/records?timeout=1000&max_bytes=1").json():
                break
    held, last, deadline = {}, -1.0, time.monotonic() + 30
    while time.monotonic() < deadline:  # until the services' memory is the same for a second
        held = {n: rss_mb(pids) for n, pids in nodes.items()}
        now = sum(sum(mb) for mb in held.values())
        if now == last:
            break
        last = now
        time.sleep(1)
    for name in names:
        rest_call(base, "DELETE", f"/consumers/{name}/instances/{name}")
    return {"instances": count, "rss_mb": {n: {"before": before[n], "held": held[n], "after": rss_mb(pids)}
                                          for n, pids in sorted(nodes.items())}}


def main(argv: list[str] | None = None) -> int:
    ap = UsageParser(prog="loom bench gateway")
    ap.add_argument("--requests", type=int, default=400, help="REST produce requests")
    ap.add_argument("--batch", type=int, default=500, help="records per request")
    ap.add_argument("--clients", type=int, default=8, help="concurrent REST clients")
    ap.add_argument("--rate", type=float, default=200.0, help="single-record requests/s for the latency phase")
    ap.add_argument("--seconds", type=float, default=10.0, help="length of the latency phase")
    ap.add_argument("--fsync-interval-ms", type=int, default=200,
                    help="the brokers' interval fsync (default 200: config/cluster.yaml's, what `make up` runs)")
    ap.add_argument("--churn-seconds", type=float, default=0.0,
                    help="then consumer instances made, read and deleted for this long: the nodes' memory (0: skip)")
    ap.add_argument("--held-instances", type=int, default=0,
                    help="then this many consumer instances, each of its own group, read the produced records "
                         "once and are left to fetch ahead: the consumer services' memory (0: skip)")
    ap.add_argument("--consumer-buffer-bytes", type=int, default=None,
                    help="services.consumer_buffer_bytes_max: what the consumer services' instances fetch ahead, "
                         "all together (default: the config's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    if not (1 <= args.requests <= 100_000 and 1 <= args.batch <= 100_000 and 1 <= args.clients <= 256
            and 0 < args.rate <= 10_000 and 0 < args.seconds <= 600 and args.rate * args.seconds <= 1_000_000
            and 1 <= args.fsync_interval_ms <= 60_000 and 0 <= args.churn_seconds <= 3600
            and 0 <= args.held_instances <= 1000
            and (args.consumer_buffer_bytes is None or 1 << 20 <= args.consumer_buffer_bytes <= 1 << 40)):
        ap.error("--requests 1..100000, --batch 1..100000, --clients 1..256, --rate 0..10000 (exclusive of 0), "
                 "--seconds 0..600 (exclusive of 0) with rate x seconds <= 1000000, --fsync-interval-ms 1..60000, "
                 "--churn-seconds 0..3600, --held-instances 0..1000, --consumer-buffer-bytes 1 MiB..1 TiB")
    tmp = Path(tempfile.mkdtemp(prefix="loom-bench-gw-"))
    overrides = {**gateway_overrides(), "storage": {"fsync": "interval", "fsync_interval_ms": args.fsync_interval_ms}}
    if args.consumer_buffer_bytes is not None:
        overrides["services"] = {"consumer_buffer_bytes_max": args.consumer_buffer_bytes}
    cluster = Cluster(make_config(tmp, 3, extra_nodes=GATEWAY_NODES, overrides=overrides))
    try:
        cluster.start()
        port = cluster.raw["nodes"]["gateway"]["port"]
        base = f"http://127.0.0.1:{port}"
        for t in ("bench", "latency"):
            requests.post(f"{base}/v3/clusters/test/topics", json={"topic_name": t, "partitions_count": 3},
                          headers=AUTH, timeout=30).raise_for_status()
            wait_until(lambda: all(p["leader"] and len(p["isr"]) == 3 for p in requests.get(
                f"{base}/v3/clusters/test/topics/{t}/partitions", headers=AUTH, timeout=10).json()["data"]), 30)
        cpu = PhaseCpu(cluster.config_path)
        results = {"rest_produce": rest_produce(base, "bench", args.requests, args.batch, args.clients)}
        results["rest_produce"]["cpu_us_per_record"] = cpu.per(results["rest_produce"]["records"], 1e6)
        print("REST produce (acks=all, %d-record requests): %s" % (args.batch, results["rest_produce"]), flush=True)
        cpu = PhaseCpu(cluster.config_path)
        results["ws_consume"] = ws_consume(port, "bench", results["rest_produce"]["records"])
        results["ws_consume"]["cpu_us_per_record"] = cpu.per(results["ws_consume"]["records"], 1e6)
        print("WebSocket consume (one connection): %s" % results["ws_consume"], flush=True)
        cpu = PhaseCpu(cluster.config_path)
        results["latency"] = latency(base, "latency", args.rate, args.seconds)
        results["latency"]["cpu_ms_per_request"] = cpu.per(results["latency"]["requests"], 1e3)
        print("single-record REST produce at %g req/s: %s" % (args.rate, results["latency"]), flush=True)
        if args.churn_seconds > 0:
            results["instance_churn"] = instance_churn(base, port, "bench", args.churn_seconds, cluster.config_path)
            print("consumer instances made and deleted: %s" % results["instance_churn"], flush=True)
        if args.held_instances:
            results["instances_held"] = instances_held(base, "bench", args.held_instances, cluster.config_path)
            print("consumer instances holding what they fetched ahead: %s" % results["instances_held"], flush=True)
        if args.json:
            Path(args.json).write_text(json.dumps({"args": vars(args), **results}, indent=2))
    finally:
        cluster.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
