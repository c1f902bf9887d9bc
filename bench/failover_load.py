"""The load of ``loom bench failover``: paced acks producer threads that note every record's send
and acknowledgement times, optional reader threads (consumers) that note when each record was
read, and the figures and timeline of a run made from those notes.

A record's value starts with its producer's index and sequence number (``record_value``), so a
reader finds the record's send time. Every loop is bounded by a count and a time limit.

Thread-safety: each thread appends to its own notes under its own lock; the bench's main thread
reads them through ``Load``, which takes the same locks.
"""

from __future__ import annotations

import threading
import time
from functools import partial
from typing import Any

from bench.options import BenchOptions
from bench.stats import LatencyHistogram
from bench.worker import SAMPLE_INTERVAL_S
from bench.workload import record_shares
from fabric.client import Consumer, Producer
from fabric.errors import FabricError

VALUE_HEAD = b"f%02d:%09d"         # producer index, sequence number
VALUE_HEAD_BYTES = 13
POLL_MS = 100
POLL_RECORDS_MAX = 10_000
READY_S_MAX = 30.0                 # a reader assigned and positioned
CATCH_UP_S_MAX = 5.0               # the readers, after the producers stop: reading the last records
DELIVERY_TIMEOUT_MS = 60_000       # a record outlives any failover of the run
MAX_BLOCK_MS = 10_000


def record_value(index: int, seq: int, size: int) -> bytes:
    return (VALUE_HEAD % (index, seq)).ljust(size, b"x")


def parse_value(value: bytes) -> tuple[int, int]:
    """(producer index, sequence number) of a value made by ``record_value``."""
    return int(value[1:3]), int(value[4:VALUE_HEAD_BYTES])


def producer_settings(o: BenchOptions) -> dict:
    """The keywords of each producer's ``Producer``: the common flags, patient timeouts."""
    return {"acks": o.acks, "linger_ms": o.linger_ms, "batch_records_max": o.batch_size,
            "compression": o.compression, "delivery_timeout_ms": DELIVERY_TIMEOUT_MS, "max_block_ms": MAX_BLOCK_MS}


class Producing(threading.Thread):
    """One paced producer sending round-robin over the partitions; notes the send time of every
    record and the acknowledgement time (``on_delivery``) of every acknowledged one."""

    def __init__(self, bootstrap: str, o: BenchOptions, index: int, rate_per_s: int, time_max_s: float) -> None:
        super().__init__(name=f"failover-producer-{index}", daemon=True)
        self.index, self.rate_per_s, self.time_max_s = index, rate_per_s, time_max_s
        self.topic, self.partitions, self.record_size = o.topic, o.partitions, o.record_size
        self.count_max = int(rate_per_s * time_max_s)
        self.producer = Producer(bootstrap, **producer_settings(o))
        self.sent_s: list[float] = []                       # seq -> monotonic send time
        self.acks: dict[int, list[tuple[float, int]]] = {p: [] for p in range(o.partitions)}  # (acked_s, seq)
        self.failed = 0
        self.lock = threading.Lock()
        self._halt = threading.Event()

    def _on_delivery(self, seq: int, partition: int, md: Any, err: Exception | None) -> None:
        now = time.monotonic()
        with self.lock:
            if err is None:
                self.acks[partition].append((now, seq))
            else:
                self.failed += 1

    def run(self) -> None:
        t0 = time.monotonic()
        seq = 0
        while not self._halt.is_set() and seq < self.count_max and time.monotonic() - t0 < self.time_max_s:
            p = seq % self.partitions
            with self.lock:
                self.sent_s.append(time.monotonic())
            try:
                self.producer.send(self.topic, record_value(self.index, seq, self.record_size), partition=p,
                                   on_delivery=partial(self._on_delivery, seq, p))
            except Exception:  # buffer full in a long outage: counted, the run goes on
                with self.lock:
                    self.failed += 1
            seq += 1
            ahead = seq / self.rate_per_s - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(min(ahead, 0.05))  # pacing the offered load, not synchronisation

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        try:
            self.producer.flush(60)
        finally:
            self.producer.close(timeout=10)


class Reading(threading.Thread):
    """One consumer of a share of the partitions, from the offsets the run started at; notes
    when each record was read."""

    def __init__(self, bootstrap: str, topic: str, partitions: list[int], start_offsets: dict[int, int],
                 time_max_s: float) -> None:
        super().__init__(name="failover-reader", daemon=True)
        self.bootstrap, self.topic, self.partitions = bootstrap, topic, partitions
        self.start_offsets, self.time_max_s = start_offsets, time_max_s
        self.reads: list[tuple[float, int, int, int]] = []  # (read_s, partition, producer index, seq)
        self.poll_errors = 0
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self._halt = threading.Event()

    def run(self) -> None:
        # the consumer lives on this thread only: built, positioned, polled and closed here
        c = Consumer(self.bootstrap, auto_offset_reset="earliest")
        try:
            c.assign([(self.topic, p) for p in self.partitions])
            for p in self.partitions:
                c.seek((self.topic, p), self.start_offsets.get(p, 0))
            c.partitions_for(self.topic)
            self.ready.set()
            t0 = time.monotonic()
            while not self._halt.is_set() and time.monotonic() - t0 < self.time_max_s:
                try:
                    records = c.poll(timeout_ms=POLL_MS, max_records=POLL_RECORDS_MAX)
                except FabricError:  # a leader gone mid-fetch: the consumer finds the new one
                    self.poll_errors += 1
                    continue
                now = time.monotonic()
                with self.lock:
                    self.reads += [(now, r.partition, *parse_value(r.value)) for r in records]
        finally:
            self.ready.set()
            c.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


class Load:
    """The producers and readers of one run, and what their notes say."""

    def __init__(self, bootstrap: str, o: BenchOptions, time_max_s: float, start_offsets: dict[int, int]) -> None:
        self.producers = [Producing(bootstrap, o, i, rate, time_max_s)
                          for i, rate in enumerate(record_shares(o.rate, o.producers))]
        n = min(o.consumers, o.partitions)
        self.readers = [Reading(bootstrap, o.topic, list(range(i, o.partitions, n)), start_offsets, time_max_s)
                        for i in range(n)]
        self.t0_s = self.t1_s = 0.0  # monotonic: the producers started, stopped (flushed)

    def start(self) -> None:
        for r in self.readers:
            r.start()
        for r in self.readers:
            if not r.ready.wait(READY_S_MAX) or not r.is_alive():
                raise RuntimeError(f"a reader of {r.topic} did not start within {READY_S_MAX:.0f} s")
        self.t0_s = time.monotonic()
        for p in self.producers:
            p.start()

    def stop(self) -> None:
        """Stop the producers (flushing), give the readers CATCH_UP_S_MAX to read what was
        acknowledged (acks=1 may have lost some in the failover), then stop them."""
        try:
            for p in self.producers:
                p.stop()
            self.t1_s = time.monotonic()
            deadline = self.t1_s + CATCH_UP_S_MAX
            while self.readers and self.read() < self.acked() and time.monotonic() < deadline:
                time.sleep(POLL_MS / 1000)  # the readers poll on their threads; this only waits for them
        finally:
            for r in self.readers:
                r.stop()

    def ack_count(self, partition: int) -> int:
        return sum(self._locked(p, lambda p: len(p.acks[partition])) for p in self.producers)

    def acked(self) -> int:
        return sum(self._locked(p, lambda p: sum(map(len, p.acks.values()))) for p in self.producers)

    def sent(self) -> int:
        return sum(self._locked(p, lambda p: len(p.sent_s)) for p in self.producers)

    def read(self) -> int:
        return sum(self._locked(r, lambda r: len(r.reads)) for r in self.readers)

    def failed(self) -> int:
        return sum(self._locked(p, lambda p: p.failed) for p in self.producers)

    def first_ack_sent_after(self, partition: int, t_s: float) -> float | None:
        """Acknowledgement time of the first record of ``partition`` sent at or after t_s."""
        firsts = [self._locked(p, lambda p: next((a for a, seq in p.acks[partition] if p.sent_s[seq] >= t_s), None))
                  for p in self.producers]
        return min((t for t in firsts if t is not None), default=None)

    def first_read_sent_after(self, partition: int, t_s: float) -> float | None:
        """When a reader first read a record of ``partition`` sent at or after t_s."""
        sent = [self._locked(p, lambda p: list(p.sent_s)) for p in self.producers]
        reads = [read for r in self.readers for read in self._locked(r, lambda r: list(r.reads))]
        return min((t for t, part, index, seq in reads if part == partition and sent[index][seq] >= t_s), default=None)

    def ack_gap_s(self, partition: int, t_from_s: float, t_to_s: float) -> float | None:
        """The longest interval between consecutive acknowledgements on ``partition`` within
        [t_from_s, t_to_s] (None with fewer than two). Replies already on their way when the
        leader died arrive just after the kill, so "last ack before the kill" is not enough."""
        times = sorted(a for p in self.producers for a in self._locked(p, lambda p: [a for a, _ in p.acks[partition]])
                       if t_from_s <= a <= t_to_s)
        return max((b - a for a, b in zip(times, times[1:])), default=None)

    @staticmethod
    def _locked(owner: Producing | Reading, read: Any) -> Any:
        with owner.lock:
            return read(owner)

    def figures(self, t0_s: float, t1_s: float, record_size: int) -> dict:
        """The run's figures over [t0_s, t1_s] (monotonic): acknowledged records and their
        latency from send() to the acknowledgement, read records and their end-to-end latency
        (with readers), and the timeline in SAMPLE_INTERVAL_S buckets from t0_s."""
        sent = [self._locked(p, lambda p: list(p.sent_s)) for p in self.producers]
        acks = [(a, a - sent[p.index][seq]) for p in self.producers
                for a, seq in self._locked(p, lambda p: [x for xs in p.acks.values() for x in xs])]
        reads = [(t, t - sent[index][seq]) for r in self.readers
                 for t, _, index, seq in self._locked(r, lambda r: list(r.reads))]
        seconds = t1_s - t0_s
        out = {"records": len(acks), "errors": self.failed(), "seconds": round(seconds, 3),
               "records_per_s": round(len(acks) / seconds) if seconds > 0 else 0,
               "mb_per_s": round(len(acks) * record_size / 1e6 / seconds, 2) if seconds > 0 else 0,
               "latency_ms": _histogram(acks).summary_ms(), "consumed_records": len(reads),
               "timeline": _timeline(acks, reads, t0_s)}
        if self.readers:
            out["e2e_latency_ms"] = _histogram(reads).summary_ms()
            in_window = sum(1 for t, _ in reads if t <= t1_s)  # not the catch-up after the window
            out["consume_records_per_s"] = round(in_window / seconds) if seconds > 0 else 0
        return out


def _histogram(events: list[tuple[float, float]]) -> LatencyHistogram:
    h = LatencyHistogram()
    for _, latency_s in events:
        h.record_us(latency_s * 1e6)
    return h


def _timeline(acks: list[tuple[float, float]], reads: list[tuple[float, float]], t0_s: float) -> list[dict]:
    """Points of the report's timeline shape from (time, latency) events."""
    buckets: dict[int, tuple[list, list]] = {}
    for events, i in ((acks, 0), (reads, 1)):
        for t, latency_s in events:
            buckets.setdefault(int((t - t0_s) / SAMPLE_INTERVAL_S), ([], []))[i].append(latency_s)
    points = []
    for b in sorted(buckets):
        acked, read = buckets[b]
        lat, e2e = _histogram([(0.0, x) for x in acked]), _histogram([(0.0, x) for x in read])
        points.append({"t_s": round((b + 1) * SAMPLE_INTERVAL_S, 2),
                       "produced_per_s": round(len(acked) / SAMPLE_INTERVAL_S),
                       "consumed_per_s": round(len(read) / SAMPLE_INTERVAL_S),
                       "p50_ms": lat.percentile_ms(50), "p99_ms": lat.percentile_ms(99),
                       "e2e_p99_ms": e2e.percentile_ms(99)})
    return points
