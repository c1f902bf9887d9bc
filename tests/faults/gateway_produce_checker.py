"""Clients of the gateway's produce path and the checker of what they were answered, for the
gateway produce fault tests (``test_faults_gateway_produce.py``).

Clients: ``RestClient`` threads POST batches of unique values (binary format, base64) to
``/topics/{t}`` (keyless, keyed, or records naming their partition) and to
``/topics/{t}/partitions/{p}``; ``WsClient`` keeps a few ``/ws/produce`` messages in flight
and checks that their answers come back in the order they were sent (one socket's messages are
produced and answered one after the other). Nothing is ever sent twice: a value's fate is
exactly what its one answer says. Each answer is sorted into

- ``acked``: value -> (partition, offset) the answer gave;
- ``not_written``: an answer saying nothing was written (a 4xx but 408, 503 / 50301, a
  per-record ``not sent:``, a producer error that does not say an earlier send may have been
  written);
- ``maybe``: an answer saying the record may have been written, or none (a dropped connection,
  the client's own timeout);
- ``unclassified``: a failure whose answer says neither: the client cannot tell whether to
  send it again.

Checker (``check``): with the cluster healed and its brokers stopped, every replica's log is
read from disk: replicas agree below the HW, every acknowledged value is in the log once at
its acknowledged (partition, offset), no value is in the log twice, none answered "not written"
is in it, and none that was never sent.
"""

from __future__ import annotations

import base64
import json
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import requests
import websocket

from fabric.client import Admin
from tests.faults import workload_checker as J
from tests.gateway_client import BINARY, ROLE_KEYS
from tests.harness import Cluster, wait_until

CLIENT_TIMEOUT_S = 50  # above the gateway's wait for the producer service (PRODUCE_TIMEOUT_MS, 40 s)
MAYBE_MARKS = ("may have been written", "may be written")


@dataclass
class Ledger:
    """What every client was answered, shared by the clients of one scenario (thread-safe)."""

    sent: set[bytes] = field(default_factory=set)
    acked: dict[bytes, tuple[int, int]] = field(default_factory=dict)
    not_written: dict[bytes, str] = field(default_factory=dict)
    maybe: dict[bytes, str] = field(default_factory=dict)
    unclassified: dict[bytes, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)  # answers that break the protocol itself
    answer_s: list[float] = field(default_factory=list)  # how long each request took to be answered
    acked_at_s: list[float] = field(default_factory=list)  # when (monotonic s) each answer acknowledging records came
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record_answer(self, values: list[bytes], status: int | None, body: Any, elapsed_s: float) -> None:
        """Sort one answer (``status`` None: no answer -- ``body`` says why)."""
        with self._lock:
            self.answer_s.append(elapsed_s)
            if status is None:
                for v in values:
                    self.maybe[v] = f"no answer: {body}"
                return
            if status != 200:
                text = json.dumps(body)
                where = self.not_written if _refused_unwritten(status, body) else \
                    self.maybe if _says_maybe(text) else self.unclassified
                for v in values:
                    where[v] = f"{status} {text}"
                return
            offsets = body.get("offsets") if isinstance(body, dict) else None
            if not isinstance(offsets, list) or len(offsets) != len(values):
                self.problems.append(f"{len(values)} records answered {body!r}")
                for v in values:
                    self.maybe[v] = "malformed answer"
                return
            if any(o.get("error_code") is None for o in offsets):
                self.acked_at_s.append(time.monotonic())
            for v, o in zip(values, offsets):
                if o.get("error_code") is None:
                    self.acked[v] = (o["partition"], o["offset"])
                elif o.get("error", "").find("not sent:") >= 0 or not _says_maybe(o.get("error", "")):
                    self.not_written[v] = o["error"]
                else:
                    self.maybe[v] = o["error"]

    def unacked_windows_s(self, since_s: float, until_s: float) -> tuple[float, float, float]:
        """Between ``since_s`` and ``until_s`` (monotonic s): how long until the first answer
        acknowledging records, the longest time with none, and when (from ``since_s``) that
        began -- measured, not asserted. A window still open at ``until_s`` counts to it."""
        with self._lock:
            at = sorted(t for t in self.acked_at_s if since_s <= t <= until_s)
        edges = [since_s, *at, until_s]
        gap, begun = max((b - a, a) for a, b in zip(edges, edges[1:]))
        return (at[0] if at else until_s) - since_s, gap, begun - since_s

    def summary(self) -> dict:
        with self._lock:
            return {"sent": len(self.sent), "acked": len(self.acked), "not_written": len(self.not_written),
                    "maybe": len(self.maybe), "unclassified": len(self.unclassified),
                    "slowest_answer_s": round(max(self.answer_s, default=0.0), 2)}


def _says_maybe(text: str) -> bool:
    return any(mark in text for mark in MAYBE_MARKS)


def _refused_unwritten(status: int, body: Any) -> bool:
    """A whole-request refusal that says nothing of it was written: a 4xx but 408 (validation,
    auth, rate limit, missing topic), or 50301 (the producer service down or its buffer full:
    nothing sent; 50302 is the answer for a request it took and did not answer)."""
    code = body.get("error_code") if isinstance(body, dict) else None
    return (400 <= status < 500 and status != 408) or code == 50301


class RestClient(threading.Thread):
    """POSTs batches of 1..``batch_max`` unique values until stopped; deterministic per ``seed``."""

    def __init__(self, port: int, topic: str, partitions: int, ledger: Ledger, seed: int, batch_max: int = 8) -> None:
        super().__init__(name=f"rest-client-{seed}", daemon=True)
        self.base, self.topic, self.partitions, self.ledger = f"http://127.0.0.1:{port}", topic, partitions, ledger
        self.rng, self.seed, self.batch_max = random.Random(seed), seed, batch_max
        self.session = requests.Session()
        self.halt = threading.Event()
        self.requests = 0

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            count = self.rng.randint(1, self.batch_max)
            values = [b"r%d-%d-%d" % (self.seed, n, i) for i in range(count)]
            n += 1
            shape = self.rng.choice(("keyless", "keyed", "own_partition", "route_partition"))
            records: list[dict] = [{"value": base64.b64encode(v).decode()} for v in values]
            path = f"/topics/{self.topic}"
            if shape == "keyed":
                for r, v in zip(records, values):
                    r["key"] = base64.b64encode(v[:4] + bytes([v[-1]])).decode()
            elif shape == "own_partition":
                for r in records:
                    r["partition"] = self.rng.randrange(self.partitions)
            elif shape == "route_partition":
                path += f"/partitions/{self.rng.randrange(self.partitions)}"
            with self.ledger._lock:
                self.ledger.sent.update(values)
            t0 = time.monotonic()
            try:
                r = self.session.post(self.base + path, data=json.dumps({"records": records}), timeout=CLIENT_TIMEOUT_S,
                                      headers={"Authorization": f"Bearer {ROLE_KEYS['admin']}", "Content-Type": BINARY})
                status, body = r.status_code, (r.json() if r.content else None)
            except requests.RequestException as e:
                self.session = requests.Session()
                status, body = None, repr(e)
            self.ledger.record_answer(values, status, body, time.monotonic() - t0)
            self.requests += 1
            if status is not None and status >= 500:
                self.halt.wait(0.2)  # a failing gateway is not hammered


class WsClient(threading.Thread):
    """Keeps ``depth`` /ws/produce messages in flight; answers must come back in sending order."""

    def __init__(self, port: int, topic: str, ledger: Ledger, seed: int, depth: int = 4) -> None:
        super().__init__(name=f"ws-client-{seed}", daemon=True)
        self.url, self.topic, self.ledger, self.seed, self.depth = f"ws://127.0.0.1:{port}", topic, ledger, seed, depth
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.messages = 0

    def _connect(self) -> websocket.WebSocket:
        return websocket.create_connection(f"{self.url}/ws/produce?topic={self.topic}&format=binary", timeout=CLIENT_TIMEOUT_S,
                                           header=[f"Authorization: Bearer {ROLE_KEYS['admin']}"])

    def run(self) -> None:
        n = 0
        while not self.halt.is_set():
            try:
                ws = self._connect()
            except (OSError, websocket.WebSocketException) as e:
                self.halt.wait(0.2)
                del e
                continue
            pending: list[tuple[str, list[bytes], float]] = []  # (id, values, sent at), in sending order
            try:
                while not self.halt.is_set() or pending:
                    while len(pending) < self.depth and not self.halt.is_set():
                        values = [b"w%d-%d-%d" % (self.seed, n, i) for i in range(self.rng.randint(1, 4))]
                        mid = f"m{n}"
                        n += 1
                        with self.ledger._lock:
                            self.ledger.sent.update(values)
                        ws.send(json.dumps({"id": mid, "records": [{"value": base64.b64encode(v).decode()} for v in values]}))
                        pending.append((mid, values, time.monotonic()))
                    answer = json.loads(ws.recv())
                    mid, values, t0 = pending.pop(0)
                    if answer.get("id") != mid:
                        self.ledger.problems.append(f"ws answer for {answer.get('id')!r} came when {mid!r} was the oldest unanswered")
                        self.ledger.record_answer(values, None, "answered out of order", time.monotonic() - t0)
                        continue
                    self.messages += 1
                    if "offsets" in answer:
                        self.ledger.record_answer(values, 200, answer, time.monotonic() - t0)
                    else:
                        self.ledger.record_answer(values, answer.get("error_code", 0) // 100, answer, time.monotonic() - t0)
            except (OSError, websocket.WebSocketException, ValueError) as e:
                for _, values, t0 in pending:
                    self.ledger.record_answer(values, None, repr(e), time.monotonic() - t0)
            finally:
                ws.close()


class Clients:
    """A scenario's clients: ``rest`` REST threads and ``ws`` WebSocket threads, seeds from ``seed``."""

    def __init__(self, cluster: Cluster, topic: str, partitions: int, seed: int, rest: int = 3, ws: int = 1) -> None:
        port = cluster.raw["nodes"]["gateway"]["port"]
        self.ledger = Ledger()
        self.threads: list[Any] = [RestClient(port, topic, partitions, self.ledger, seed * 100 + i) for i in range(rest)]
        self.threads += [WsClient(port, topic, self.ledger, seed * 100 + 50 + i) for i in range(ws)]

    def start(self) -> "Clients":
        for t in self.threads:
            t.start()
        return self

    def wait_acked(self, n: int, timeout_s: float = 30) -> None:
        wait_until(lambda: len(self.ledger.acked) >= n, timeout_s, interval_s=0.05, what=f"{n} acknowledged records")

    def stop(self, timeout_s: float = CLIENT_TIMEOUT_S + 5) -> None:
        for t in self.threads:
            t.halt.set()
        for t in self.threads:
            t.join(timeout_s)
            assert not t.is_alive(), f"{t.name} still waits for an answer"


def check(cluster: Cluster, admin: Admin, topic: str, ledger: Ledger) -> dict:
    """Heal, stop the brokers, read every replica and assert the invariants; returns the counts."""
    hws = J.wait_healed(cluster, admin, topic=topic)
    for b in cluster.broker_names():
        cluster.stop(b)
    report = {**ledger.summary(), "lost": [], "misplaced": [], "duplicated": [], "written_after_not_written": [],
              "never_sent": []}
    seen: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for p, hw in sorted(hws.items()):
        replicas = {b: [(r.offset, r.value) for r in J.read_replica(cluster, b, p, topic)[1] if r.offset < hw]
                    for b in cluster.broker_names()}
        reference = next(iter(replicas.values()))
        for b, rows in replicas.items():
            assert rows == reference, f"partition {p}: {b} differs from the other replicas below the HW {hw}"
        assert [o for o, _ in reference] == list(range(hw)), f"partition {p}: offsets not contiguous from 0"
        for offset, value in reference:
            seen[value].append((p, offset))
    for value, where in seen.items():
        if len(where) > 1:
            report["duplicated"].append((value, where))
        if value not in ledger.sent:
            report["never_sent"].append(value)
        if value in ledger.not_written:
            report["written_after_not_written"].append((value, ledger.not_written[value]))
    for value, at in ledger.acked.items():
        where = seen.get(value)
        if not where:
            report["lost"].append((value, at))
        elif at not in where:
            report["misplaced"].append((value, at, where))
    report["maybe_in_log"] = sum(1 for v in ledger.maybe if v in seen)
    print(f"\ngateway produce report: { {k: (v if not isinstance(v, list) else len(v)) for k, v in report.items()} }")
    for key in ("lost", "misplaced", "duplicated", "written_after_not_written", "never_sent"):
        assert not report[key], f"{key}: {report[key][:5]} ({len(report[key])} in all)"
    assert not ledger.problems, ledger.problems[:5]
    return report
