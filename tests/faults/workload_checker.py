"""The fault suite's workload, nemesis helpers and checker.

Workload: one idempotent producer with acks=all writes unique values (``v<seq>``) keyed over a
3-partition RF 3 topic at a bounded rate, for a bounded count and time, recording every
acknowledgement -- or, with a ``RecordMix``, stretches of records sent otherwise: keyless (the
sticky partition, kept in the producer as runs of values), some with a header, some without a
delivery callback (their outcome read from the future), with timestamps that stay put for a
few dozen records or are now. Every value is unique, so that the checker matches records by
value, keyed or not, and then checks what else was sent with it (``contents``). Observer: a thread that polls metadata and records which broker led each
(partition, epoch). Checker: after healing, every replica's log is read from disk and checked:

- every acknowledged value is present exactly once, at the acknowledged offset;
- the producer's order per partition is preserved;
- one value per (partition, offset) across all replicas: replicas byte-identical up to the HW;
- at most one leader per (partition, epoch);
- no value that was never sent;
- every record holds the key, the headers and the timestamp sent with its value (the time of
  the send when none was given).

With retention (``check(..., retention=True)``) replicas are compared from the largest log
start among them, and an acknowledged value below it counts as retained, not lost; without,
nothing may be retained.
"""

from __future__ import annotations

import os
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable

from engines import batch as B
from engines.api import EngineConfig
from engines.registry import open_engine
from fabric.client import Admin, Producer
from fabric.records import Record, decode_batches
from tests.harness import Cluster, wait_until

TOPIC = "jepsen"
PARTITIONS = 3


BLOCK_RECORDS = 40  # records of one kind in a row (RecordMix): runs form in the producer


@dataclass(frozen=True)
class RecordMix:
    """How the records of each block of ``BLOCK_RECORDS`` are sent, drawn from the seed and the
    block's number alone (the same seed, the same records, whatever the timing): keyed as
    without a mix, or (``keyless_share`` of the blocks) keyless, each such block either every
    record with a delivery callback, or none (outcomes read from the futures), or a record in
    eight with a header and a callback; its timestamps now, or one per ten records of the block
    (runs of one timestamp at the workload's low rate)."""

    seed: int
    keyless_share: float

    def block(self, seq: int) -> tuple[bool, str, bool]:
        """(keyless, "callback" | "future" | "headers", fixed timestamps) of ``seq``'s block."""
        rnd = random.Random(self.seed * 1_000_003 + seq // BLOCK_RECORDS)
        keyless = rnd.random() < self.keyless_share
        return keyless, rnd.choice(("callback", "future", "future", "headers")), rnd.random() < 0.7


@dataclass
class Workload:
    bootstrap: str
    rate_per_s: int = 1500
    keys: int = 30  # distinct keys: how many partitions get data
    count_max: int = 200_000
    acked: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # value -> (partition, offset)
    failed: dict[bytes, str] = field(default_factory=dict)
    sent: set[bytes] = field(default_factory=set)
    # value -> (key, headers as read, timestamp_ms given or the (first, last) ms the send took)
    contents: dict[bytes, tuple] = field(default_factory=dict)
    ack_times: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))  # partition -> times
    timestamp_ms_for: Callable[[int], int | None] | None = None  # seq -> record timestamp (None: now)
    producer_options: dict = field(default_factory=dict)  # Producer arguments over the defaults below (linger_ms...)
    mix: RecordMix | None = None  # None: every record keyed, with a callback
    _futures: list = field(default_factory=list)  # (value, future) of records sent without a callback
    _halt: threading.Event = field(default_factory=threading.Event)
    _resumed: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _thread: threading.Thread | None = None

    def start(self) -> "Workload":
        self._block_timestamp_ms = time.time_ns() // 1_000_000
        options = {"acks": "all", "linger_ms": 2, "delivery_timeout_ms": 60_000, "request_timeout_ms": 3000,
                   "max_block_ms": 10_000, **self.producer_options}
        self.producer = Producer(self.bootstrap, **options)
        self._resumed.set()
        self._thread = threading.Thread(target=self._run, name="workload", daemon=True)
        self._thread.start()
        return self

    def _on_delivery(self, value: bytes):  # noqa: ANN202
        def cb(md, err) -> None:  # noqa: ANN001
            with self._lock:
                if err is None:
                    self.acked[value] = (md.partition, md.offset)
                    self.ack_times[md.partition].append(time.monotonic())
                else:
                    self.failed[value] = str(err)
        return cb

    def _run(self) -> None:
        seq = 0
        t0 = time.monotonic()
        while not self._halt.is_set() and seq < self.count_max:
            if not self._resumed.wait(0.05):
                t0 += 0.05  # paused: the rate counts from the resume
                self._take_futures()
                continue
            value = b"v%09d" % seq
            with self._lock:
                self.sent.add(value)
            try:
                self._send(seq, value)
            except Exception as e:  # buffer full during a long outage: counted, not fatal
                with self._lock:
                    self.failed[value] = str(e)
            seq += 1
            if seq % BLOCK_RECORDS == 0:
                self._take_futures()
            ahead = seq / self.rate_per_s - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))  # pacing the offered load, not synchronisation

    def _send(self, seq: int, value: bytes) -> None:
        ts = self.timestamp_ms_for(seq) if self.timestamp_ms_for is not None else None
        key: bytes | None = b"k%d" % (seq % self.keys)
        headers = None
        with_callback = True
        if self.mix is not None:
            keyless, how, fixed_ts = self.mix.block(seq)
            if fixed_ts and ts is None:  # one timestamp per ten records of the block
                ts = self._block_timestamp_ms + seq // 10
            if keyless:
                key = None
            with_callback = not (how == "future" and keyless)
            if how == "headers" and seq % 8 == 0:
                headers = [("seq", b"%d" % seq)]
        first_ms = time.time_ns() // 1_000_000
        try:
            if with_callback:
                self.producer.send(TOPIC, value, key=key, headers=headers, timestamp_ms=ts,
                                   on_delivery=self._on_delivery(value))
            else:
                future = self.producer.send(TOPIC, value, key=key, headers=headers, timestamp_ms=ts)
                with self._lock:
                    self._futures.append((value, future))
        finally:
            when = ts if ts is not None else (first_ms, time.time_ns() // 1_000_000)
            with self._lock:
                self.contents[value] = (key, tuple(headers) if headers else None, when)

    def _take_futures(self, timeout_s: float = 0) -> None:
        """Record the outcomes of the records sent without a callback that are known (all of
        them, waiting up to ``timeout_s`` each, when it is not 0)."""
        with self._lock:
            futures, self._futures = self._futures, []
        waiting = []
        for value, f in futures:
            if not timeout_s and not f.done():
                waiting.append((value, f))
                continue
            try:
                md = f.result(timeout_s or None)
            except Exception as e:  # its delivery failed (or is still unknown: the timeout's error)
                with self._lock:
                    self.failed[value] = str(e)
                continue
            with self._lock:
                self.acked[value] = (md.partition, md.offset)
        with self._lock:
            self._futures[:0] = waiting

    def pause(self) -> None:
        """Stop offering new records (those sent go on being delivered) until resume()."""
        self._resumed.clear()

    def resume(self) -> None:
        self._resumed.set()

    def wait_acks(self, n: int, timeout_s: float = 30) -> None:
        start = len(self.acked)
        wait_until(lambda: len(self.acked) >= start + n, timeout_s, what=f"{n} more acknowledgements")

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.producer.flush(90)
        self.producer.close()
        self._take_futures(timeout_s=1)

    def unavailable_s(self) -> float:
        """The longest gap between two acknowledgements of one partition."""
        gaps = [0.0]
        for times in self.ack_times.values():
            t = sorted(times)
            gaps += [b - a for a, b in zip(t, t[1:])]
        return max(gaps)


class LeaderObserver(threading.Thread):
    """Polls metadata; records the leader of each (partition, epoch)."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(name="observer", daemon=True)
        self.admin = Admin(bootstrap, timeout_ms=1000)
        self.leaders: dict[tuple[int, int], set[int]] = defaultdict(set)
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.05):
            try:
                md = self.admin.metadata()
            except Exception:
                continue
            t = md.topics.get(TOPIC)
            for p in t.partitions if t else ():
                if p.leader >= 0:
                    self.leaders[(p.partition, p.leader_epoch)].add(p.leader)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)
        self.admin.close()


def setup(cluster: Cluster, configs: dict | None = None, partitions: int = PARTITIONS,
          **workload_fields: object) -> tuple[Admin, Workload, LeaderObserver]:
    """Create the topic (``partitions``, topic ``configs``), start the observer and the workload
    (fields of Workload as keyword arguments, e.g. ``keys``) and wait for its first acknowledgements."""
    admin = Admin(cluster.bootstrap)
    admin.create_topic(TOPIC, partitions, 3, configs=configs)
    cluster.wait_topic_ready(admin, TOPIC)
    observer = LeaderObserver(cluster.bootstrap)
    observer.start()
    workload = Workload(cluster.bootstrap, **workload_fields).start()  # type: ignore[arg-type]
    workload.wait_acks(300)
    return admin, workload, observer


def leader_name(admin: Admin, partition: int) -> str:
    def find() -> str | None:
        p = admin.metadata().topics[TOPIC].partitions[partition]
        return f"broker-{p.leader}" if p.leader >= 0 else None
    return wait_until(find, 20, what=f"a leader for partition {partition}")


def follower_name(admin: Admin, partition: int) -> str:
    p = admin.metadata().topics[TOPIC].partitions[partition]
    return f"broker-{[r for r in p.replicas if r != p.leader][0]}"


def wait_healed(cluster: Cluster, admin: Admin, timeout_s: float = 45, topic: str = TOPIC, *,
                while_writing: bool = False) -> dict[int, int]:
    """Every partition led, full ISR, every replica at the leader's LEO; returns HW per partition.

    ``while_writing`` (a producer still writing): every replica at least at the HW its leader
    had at the look before -- an instant with every replica of every partition at one LEO rarely
    comes under a steady load of small batches over many partitions (each broker's stats are
    read one after the other, and records land between), while replicas that keep catching up
    with what their leaders committed are as healed as a cluster under load gets."""
    def replicas() -> dict[int, list[dict]] | None:
        md = admin.metadata()
        by_partition: dict[int, list[dict]] = defaultdict(list)
        for b in cluster.broker_names():
            for r in cluster.stats(b)["partitions"]:
                if r["topic"] == topic:
                    by_partition[r["partition"]].append(r)
        for p in md.topics[topic].partitions:
            rows = by_partition[p.partition]
            if (p.leader < 0 or len(p.isr) < len(p.replicas) or len(rows) != len(p.replicas)
                    or sum(r["role"] == "leader" for r in rows) != 1):
                return None
        return {p.partition: by_partition[p.partition] for p in md.topics[topic].partitions}

    def leader_hw(rows: list[dict]) -> int:
        return next(r["high_watermark"] for r in rows if r["role"] == "leader")

    before: dict[int, int] = {}

    def healed() -> dict[int, int] | None:
        now = replicas()
        if now is None:
            before.clear()
            return None
        hws = {p: leader_hw(rows) for p, rows in now.items()}
        if while_writing:
            caught_up = bool(before) and all(p in before and min(r["log_end_offset"] for r in rows) >= before[p]
                                            for p, rows in now.items())
            before.clear()
            before.update(hws)
            return hws if caught_up else None
        for p, rows in now.items():
            leos = {r["log_end_offset"] for r in rows}
            if len(leos) != 1 or hws[p] != leos.pop():
                return None
        return hws
    return wait_until(healed, timeout_s, interval_s=0.25, what="the cluster to heal")


def read_replica(cluster: Cluster, broker: str, partition: int, topic: str = TOPIC) -> tuple[bytes, list]:
    """(raw batch bytes, records) of one replica, read from disk (the broker must be stopped)."""
    d = cluster.replica_log_dir(broker, topic, partition)
    engine = open_engine(cluster.raw["storage"]["engine"], str(d), EngineConfig(fsync="never"))
    try:
        chunks, offset = [], engine.log_start_offset
        while offset < engine.log_end_offset:
            data = engine.read(offset, 1 << 22)
            chunks.append(data)
            offset = B.split_headers(data)[-1].next_offset
        data = b"".join(chunks)
        return data, decode_batches(topic, partition, data)
    finally:
        engine.close()


def _batches_between(raw: bytes, start: int, end: int) -> bytes:
    """The bytes of the whole batches of ``raw`` that lie in [start, end)."""
    out, pos = [], 0
    for h in B.split_headers(raw):
        if h.base_offset >= start and h.next_offset <= end:
            out.append(raw[pos:pos + h.size_bytes])
        pos += h.size_bytes
    return b"".join(out)


def check(cluster: Cluster, workload: Workload, observer: LeaderObserver, hws: dict[int, int],
          retention: bool = False) -> dict:
    """Stop the brokers, read every replica, assert the invariants; returns the counts. With
    ``retention`` replicas are compared from their largest log start and acknowledged values
    below it count as retained; without, every replica must start at 0."""
    for b in cluster.broker_names():
        cluster.stop(b)
    report = {"acknowledged": len(workload.acked), "failed": len(workload.failed), "lost": 0,
              "retained": 0, "duplicated": 0, "unavailable_s": round(workload.unavailable_s(), 2)}
    seen: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    starts: dict[int, int] = {}
    for p in sorted(hws):
        hw = hws[p]
        replicas = {b: read_replica(cluster, b, p) for b in cluster.broker_names()}
        start = starts[p] = max((records[0].offset if records else hw) for _, records in replicas.values())
        assert retention or start == 0, f"partition {p}: a replica starts at {start} without retention"
        ref_name, (ref_raw, ref_records) = next(iter(replicas.items()))
        prefix = [r for r in ref_records if start <= r.offset < hw]
        ref_bytes = _batches_between(ref_raw, start, hw)
        for name, (raw, records) in replicas.items():
            assert _batches_between(raw, start, hw) == ref_bytes, \
                f"partition {p}: {name} differs from {ref_name} in [{start}, HW {hw})"
        offsets = [r.offset for r in prefix]
        assert offsets == list(range(prefix[0].offset if prefix else start, hw)), f"partition {p}: offsets not contiguous"
        last_seq = -1
        for r in prefix:
            assert r.value in workload.sent, f"partition {p} offset {r.offset}: value {r.value!r} was never sent"
            problem = content_violation(r, workload.contents)
            assert problem is None, f"partition {p} offset {r.offset}: {problem}"
            seen[r.value].append((p, r.offset))
            seq = int(r.value[1:])
            assert seq > last_seq, f"partition {p}: order broken at offset {r.offset} ({seq} after {last_seq})"
            last_seq = seq
    for value, (p, offset) in workload.acked.items():
        where = seen.get(value, [])
        if not where and 0 <= offset < starts[p]:
            report["retained"] += 1  # deleted by retention (check(retention=True) only)
        elif not where:
            report["lost"] += 1
        elif len(where) > 1:
            report["duplicated"] += 1
        elif offset >= 0 and where[0] != (p, offset):  # -1: acknowledged as a duplicate retry
            raise AssertionError(f"{value!r} acknowledged at {(p, offset)} but found at {where[0]}")
    report["duplicated"] += sum(1 for v, w in seen.items() if len(w) > 1 and v not in workload.acked)
    multi = {k: v for k, v in observer.leaders.items() if len(v) > 1}
    report["epochs_with_two_leaders"] = len(multi)
    print(f"\nfault report: {report}")
    assert report["lost"] == 0, report
    assert report["duplicated"] == 0, report
    assert not multi, f"more than one leader in an epoch: {multi}"
    return report


def content_violation(record: Record, contents: dict[bytes, tuple]) -> str | None:
    """What differs between ``record`` and what was sent with its value (``Workload.contents``):
    its key, its headers, its timestamp (the one given, or within the milliseconds the send
    took); None when nothing does."""
    sent = contents.get(record.value)
    if sent is None:
        return f"{record.value!r}: nothing recorded as sent with it"
    key, headers, when = sent
    got_headers = tuple(map(tuple, record.headers)) if record.headers else None
    if record.key != key or got_headers != headers:
        return f"{record.value!r} holds key {record.key!r} and headers {got_headers!r}, sent with {key!r} and {headers!r}"
    first_ms, last_ms = when if isinstance(when, tuple) else (when, when)
    if not first_ms <= record.timestamp_ms <= last_ms:
        return f"{record.value!r} holds timestamp {record.timestamp_ms}, sent with {when}"
    return None


def finish(cluster: Cluster, admin: Admin, workload: Workload, observer: LeaderObserver,
           retention: bool = False) -> dict:
    """Stop the load, wait for the cluster to heal, check every invariant."""
    workload.stop()
    observer.stop()
    return check(cluster, workload, observer, wait_healed(cluster, admin), retention)


def flip_tail_bytes(cluster: Cluster, broker: str, partition: int, seed: int) -> None:
    """Corrupt a few bytes inside the last batch of the replica's newest segment file."""
    d = cluster.replica_log_dir(broker, TOPIC, partition)
    seg = sorted(d.glob("*.log"))[-1]
    size = seg.stat().st_size
    assert size > 200, f"{seg} is too small to corrupt"
    rng = random.Random(seed)
    with open(seg, "r+b") as f:
        for _ in range(4):
            pos = rng.randrange(max(0, size - 100), size)
            f.seek(pos)
            byte = f.read(1)
            f.seek(pos)
            f.write(bytes([byte[0] ^ 0xFF]))
        f.flush()
        os.fsync(f.fileno())
