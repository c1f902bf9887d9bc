"""The checker of tests/faults/test_faults_gateway_consume.py: clients of one consumer group
through the gateway -- ``/ws/consume`` sockets (``Reader``) and a REST consumer instance
(``RestReader``) that confirm or commit only what they read and come back after every fault --,
the producer of records with unique values, and the ``Ledger`` of what was produced, given,
confirmed, and what broke the rules:

- a record given is the one produced at its offset;
- within a socket, a partition's offsets go on one by one, except at a new assignment (the
  first fetch of a rebalance, which a ``ready`` follows): back to the committed offset;
- the group's committed offset of a partition is never past what a client confirmed (sampled
  throughout: ``CommitSampler``).

Thread-safe: the ledger has one lock; each client is a thread of its own.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter

import websocket

from tests.gateway_client import ROLE_KEYS, Http
from tests.harness import Cluster, wait_until

TOPIC, PARTITIONS, GROUP = "gwcons", 3, "g-hunt"
BATCH_RECORDS, PRODUCE_INTERVAL_S = 6, 0.05
PROGRESS_RECORDS = 150  # acknowledged after each fault, and then everything delivered, before the next one
REST_SESSION_TIMEOUT_MS = "3000"  # the REST member killed with its service leaves its group soon
RECV_TIMEOUT_S = 0.5  # a reader's wait for a message, between its checks of stop and retries


class Ledger:
    """What every socket was given, and the order faults in it. Thread-safe (one lock)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.produced: dict[tuple[int, int], int] = {}   # (partition, offset) -> value
        self.delivered: set[int] = set()                  # values given to any socket
        self.delivered_end: dict[int, int] = {}           # per partition, the offset after the highest given
        self.confirmed_end: dict[int, int] = {}           # ... the highest a client confirmed (through)
        self.violations: list[str] = []
        self.messages = 0

    def given(self, socket_id: str, seq: int, records: list[dict], last: dict[int, int] | None = None,
              resets: list[str] | None = None) -> None:
        """Records message ``seq`` reached ``socket_id``; ``last`` and ``resets``: its offsets'
        order is checked (a socket's; a REST instance made again elsewhere goes back unseen)."""
        with self.lock:
            self.messages += 1
            for r in records:
                p, o = r["partition"], r["offset"]
                if self.produced.get((p, o), r["value"]) != r["value"]:
                    self.violations.append(f"{socket_id}: {p}-{o} is {r['value']}, produced as {self.produced[(p, o)]}")
                if last is None or resets is None:
                    pass
                elif p in last and o != last[p] + 1:  # back or ahead: only a new assignment's first fetch may
                    resets.append(f"{socket_id}: partition {p} went from {last[p]} to {o} in message {seq} "
                                  f"at {time.time():.3f}")
                if last is not None:
                    last[p] = o
                self.delivered.add(r["value"])
                self.delivered_end[p] = max(self.delivered_end.get(p, 0), o + 1)


class Socket:
    """One socket of a reader: what it was given, in order, and what its client confirmed.
    The client confirms a message only once the next one came (one read message is always
    unconfirmed: a commit past what was confirmed shows), and the rest when the stream is idle."""

    def __init__(self, ws: websocket.WebSocket, socket_id: str, ledger: Ledger) -> None:
        self.ws, self.socket_id, self.ledger = ws, socket_id, ledger
        self.last: dict[int, int] = {}  # per partition, the last offset given
        self.resets: list[str] = []     # offsets that went back or skipped ahead, each to be followed by a ready
        self.ends: dict[int, dict[int, int]] = {}  # seq -> per partition the offset after its records
        self.read_seq = self.confirmed_seq = 0
        self.refused = False  # the last commit was refused: confirm again when idle

    def records(self, msg: dict) -> None:
        self.ledger.given(self.socket_id, msg["seq"], msg["records"], self.last, self.resets)
        self.ends[msg["seq"]] = {r["partition"]: r["offset"] + 1 for r in msg["records"]}
        self.read_seq = msg["seq"]
        if self.read_seq - 1 > self.confirmed_seq:
            self.confirm(self.read_seq - 1)

    def ready(self, msg: dict) -> None:
        # a new assignment, after the records of its first fetch: from here on each partition
        # goes on from the offset it names, one record after another
        self.resets.clear()
        self.last = {x["partition"]: x["offset"] - 1 for x in msg["assignment"]}

    def idle(self) -> None:
        if self.read_seq > self.confirmed_seq:
            self.confirm(self.read_seq)
        elif self.refused and self.confirmed_seq:
            self.refused = False
            self.ws.send(json.dumps({"commit": "all", "through": self.confirmed_seq}))

    def confirm(self, seq: int) -> None:
        """Commit through ``seq``: in the ledger before it goes out (the sampler reads both)."""
        with self.ledger.lock:
            for s in sorted(x for x in self.ends if x <= seq):
                for p, end in self.ends.pop(s).items():
                    self.ledger.confirmed_end[p] = max(self.ledger.confirmed_end.get(p, 0), end)
        self.confirmed_seq = seq
        self.ws.send(json.dumps({"commit": "all", "through": seq}))

    def close(self) -> None:
        self.ws.close()
        with self.ledger.lock:
            self.ledger.violations += [f"{r} with no new assignment after it" for r in self.resets]


class Reader(threading.Thread):
    """One WebSocket client of GROUP: reads, confirms what it read, reconnects."""

    def __init__(self, port: int, name: str, ledger: Ledger) -> None:
        super().__init__(name=f"reader-{name}", daemon=True)
        self.url = f"ws://127.0.0.1:{port}/ws/consume?topic={TOPIC}&group={GROUP}&from=beginning&auto_commit=false"
        self.name_, self.ledger = name, ledger
        self.stop = threading.Event()
        self.sockets = 0
        self.refused: Counter[str | None] = Counter()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self._socket()
            except (websocket.WebSocketException, OSError):
                pass  # the socket ended (a worker killed): open another
            self.stop.wait(0.2)

    def _socket(self) -> None:
        ws = websocket.create_connection(self.url, header=[f"Authorization: Bearer {ROLE_KEYS['consume']}"],
                                         timeout=RECV_TIMEOUT_S)
        self.sockets += 1
        sock = Socket(ws, f"{self.name_}#{self.sockets}", self.ledger)
        try:
            while not self.stop.is_set():
                try:
                    text = ws.recv()
                except websocket.WebSocketTimeoutException:
                    sock.idle()
                    continue
                if not text:
                    return  # closed by the gateway (1011: no consumer service was up): open another
                msg = json.loads(text)
                if "records" in msg:
                    sock.records(msg)
                elif msg.get("ready"):
                    sock.ready(msg)
                elif msg.get("committed") is False:
                    self.refused[msg.get("error")] += 1
                    sock.refused = True
        finally:
            sock.close()


class RestReader(threading.Thread):
    """A REST consumer instance of GROUP (auto-commit off): fetches, then commits the last
    offset it read of each partition (again while refused, the partitions still assigned), and
    makes its instance again when the gateway lost it (404: a new worker)."""

    def __init__(self, port: int, name: str, ledger: Ledger) -> None:
        super().__init__(name=f"rest-{name}", daemon=True)
        self.http, self.name_, self.ledger = Http(port, role="consume"), name, ledger
        self.base = f"/consumers/{GROUP}/instances/{name}"
        self.stop = threading.Event()
        self.sockets = 0  # instances made
        self.refused: Counter[str | None] = Counter()
        self.to_commit: dict[int, int] = {}  # partition -> the last offset read, not committed yet

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                if self._make():
                    self._read()
            except OSError:
                pass  # the gateway's worker killed with the request
            self.stop.wait(0.2)
        try:
            self.http("DELETE", self.base)  # leaves the group at once
        except OSError:
            pass

    def _make(self) -> bool:
        r = self.http("POST", f"/consumers/{GROUP}", {"name": self.name_, "format": "json",
                                                      "auto.offset.reset": "earliest", "auto.commit.enable": "false",
                                                      "session.timeout.ms": REST_SESSION_TIMEOUT_MS})
        if r.status_code != 200:
            return False  # 409: the previous worker's instance, until the new worker deletes it
        self.sockets += 1
        self.to_commit = {}
        return self.http("POST", self.base + "/subscription", {"topics": [TOPIC]}).status_code == 204

    def _read(self) -> None:
        while not self.stop.is_set():
            r = self.http("GET", self.base + "/records", timeout=500)
            if r.status_code == 404:
                return  # the gateway lost it: make it again
            if r.status_code == 200 and r.json():
                records = r.json()
                self.ledger.given(f"{self.name_}#{self.sockets}", 0, records)
                for x in records:
                    self.to_commit[x["partition"]] = max(x["offset"], self.to_commit.get(x["partition"], -1))
            if self.to_commit:
                self._commit()

    def _commit(self) -> None:
        """Commit what was read: in the ledger before it goes out (the sampler reads both)."""
        r = self.http("GET", self.base + "/assignments")
        if r.status_code != 200:
            return
        owned = {x["partition"] for x in r.json()["partitions"]}
        for p in [p for p in self.to_commit if p not in owned]:
            del self.to_commit[p]  # another member's now: it reads on from the group's committed offset
        if not self.to_commit:
            return
        with self.ledger.lock:
            for p, o in self.to_commit.items():
                self.ledger.confirmed_end[p] = max(self.ledger.confirmed_end.get(p, 0), o + 1)
        r = self.http("POST", self.base + "/offsets", {"offsets": [
            {"topic": TOPIC, "partition": p, "offset": o} for p, o in sorted(self.to_commit.items())]})
        if r.status_code == 204:
            self.to_commit = {}
        else:
            self.refused[str(r.json().get("error_code"))] += 1


class Producer(threading.Thread):
    """Produces BATCH_RECORDS records (unique values, keyed across the partitions) every
    PRODUCE_INTERVAL_S through the gateway, acks=all, throughout the faults; the acknowledged
    ones go to the ledger (one refused or lost is not asked again: its values never count)."""

    def __init__(self, http: Http, ledger: Ledger) -> None:
        super().__init__(name="producer", daemon=True)
        self.http, self.ledger, self.stop, self.next_value, self.failed = http, ledger, threading.Event(), 0, 0

    def run(self) -> None:
        while not self.stop.wait(PRODUCE_INTERVAL_S):
            self.batch()

    def batch(self) -> list[int]:
        values = list(range(self.next_value, self.next_value + BATCH_RECORDS))
        self.next_value += BATCH_RECORDS
        try:
            r = self.http("POST", f"/topics/{TOPIC}", {"records": [{"key": f"k{v}", "value": v} for v in values]},
                          timeout_s=20, acks="all")
        except OSError:  # the gateway's worker killed with the request
            self.failed += 1
            return []
        if r.status_code != 200:
            self.failed += 1
            return []
        acked = [(v, o) for v, o in zip(values, r.json()["offsets"]) if o["error_code"] is None]
        self.failed += len(acked) < len(values)
        with self.ledger.lock:
            for v, o in acked:
                self.ledger.produced[(o["partition"], o["offset"])] = v
        return [v for v, _ in acked]


def committed(http: Http) -> dict[int, int]:
    return {r["partition_id"]: r["current_offset"] for r in
            http.ok("GET", f"/v3/clusters/test/consumer-groups/{GROUP}/lags")["data"] if r["topic_name"] == TOPIC}


class CommitSampler(threading.Thread):
    """Reads the group's committed offsets throughout: none may be past what a client confirmed
    (``through``) -- the messages after it were given, or on their way, but not confirmed."""

    def __init__(self, http: Http, ledger: Ledger) -> None:
        super().__init__(name="commit-sampler", daemon=True)
        self.http, self.ledger, self.stop, self.samples = http, ledger, threading.Event(), 0

    def run(self) -> None:
        while not self.stop.wait(0.3):
            try:
                now = committed(self.http)
            except (AssertionError, OSError):
                continue  # the gateway's worker restarting
            self.samples += 1
            with self.ledger.lock:  # read after the offsets: what was confirmed then is in it
                for p, o in now.items():
                    if o is not None and o > self.ledger.confirmed_end.get(p, 0):
                        self.ledger.violations.append(f"partition {p} committed at {o}, past what was confirmed "
                                                      f"({self.ledger.confirmed_end.get(p, 0)})")


def goes_on(ledger: Ledger, timeout_s: float = 45) -> None:
    """Wait until PROGRESS_RECORDS more records are acknowledged than now, and every record
    acknowledged is delivered: the stream got over the last fault."""
    with ledger.lock:
        target = len(ledger.produced) + PROGRESS_RECORDS
    wait_until(lambda: len(ledger.produced) >= target, timeout_s, what=f"{PROGRESS_RECORDS} more records acknowledged")
    wait_delivered(ledger, timeout_s)


def missing(ledger: Ledger) -> list[tuple[int, int]]:
    """The acknowledged records no socket was given: (partition, offset)."""
    with ledger.lock:
        return sorted(tp for tp, v in ledger.produced.items() if v not in ledger.delivered)


def wait_delivered(ledger: Ledger, timeout_s: float = 30) -> None:
    try:
        wait_until(lambda: not missing(ledger), timeout_s, what="every acknowledged record delivered")
    except Exception:
        raise AssertionError(f"acknowledged records never delivered: {missing(ledger)[:20]}") from None


def gateway_sees_up(c: Cluster, node: str) -> bool:
    """The gateway's health watcher's view of ``node`` (STATS of its control node)."""
    return c.stats("gateway")["nodes_up"].get(node, True)


def log_ends(http: Http) -> dict[int, int]:
    return {p: http.ok("GET", f"/topics/{TOPIC}/partitions/{p}/offsets")["end_offset"] for p in range(PARTITIONS)}
