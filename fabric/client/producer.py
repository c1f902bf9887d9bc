"""The producer client: partitions, batches, sends, retries.

``send()`` (any thread) appends the record to its partition's open batch and returns a
``RecordFuture``; a batch closes at ``batch_records_max`` / ``batch_bytes_max`` or after
``linger_ms``. One I/O thread (a reactor) packs closed batches, sends them to partition
leaders -- at most one request in flight per partition, carrying every batch queued for it, so
order holds and retries cannot reorder -- and resolves futures. Retriable errors
(not_leader, timeouts, not_enough_replicas…) refresh metadata and retry until
``delivery_timeout_ms``. With ``idempotent=True`` (default) every batch carries the producer
id and a per-partition sequence, so a retried batch is never written twice.

Thread-safety: ``send``, ``flush`` and ``close`` are thread-safe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any, Callable


from fabric import protocol as P
from fabric.client.bootstrap import parse_bootstrap
from fabric.client.sender import Sender
from fabric.errors import FabricError, RemoteError
from fabric.records import COMPRESSION_CODECS, partition_for_key

log = logging.getLogger(__name__)

ACKS = {"0": 0, "1": 1, "all": -1, "-1": -1, 0: 0, 1: 1, -1: -1}
RECORD_OVERHEAD_BYTES = 24


class RecordMetadata(tuple):
    """(topic, partition, offset)."""

    __slots__ = ()

    def __new__(cls, topic: str, partition: int, offset: int) -> "RecordMetadata":
        return tuple.__new__(cls, (topic, partition, offset))

    topic = property(lambda self: self[0])
    partition = property(lambda self: self[1])
    offset = property(lambda self: self[2])


class BatchState:
    """One closed (or open) batch: its records and the waiters on its result."""

    __slots__ = ("topic", "partition", "records", "size_bytes", "created_ms", "event", "base_offset",
                 "error", "sequence", "data", "attempts", "deadline_ms", "callbacks", "last_error")

    def __init__(self, topic: str, partition: int, created_ms: int) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list[tuple] = []
        self.size_bytes = 0
        self.created_ms = created_ms
        self.event = threading.Event()
        self.base_offset = -1
        self.error: Exception | None = None
        self.sequence = -1
        self.data: bytes | None = None
        self.attempts = 0
        self.deadline_ms = 0
        self.callbacks: list | None = None
        self.last_error: RemoteError | None = None  # the last retriable error: reported if it never lands

    def complete(self, base_offset: int, error: Exception | None) -> None:
        self.base_offset = base_offset
        self.error = error
        self.records = []  # free the memory; the packed data goes too
        self.data = None
        self.event.set()
        if self.callbacks:
            for index, cb in self.callbacks:
                try:
                    cb(None if error else RecordMetadata(self.topic, self.partition, _offset(base_offset, index)), error)
                except Exception:
                    log.exception("delivery callback failed")


class RecordFuture:
    """The future result of one ``send``: ``result()`` returns RecordMetadata or raises."""

    __slots__ = ("_batch", "_index")

    def __init__(self, batch: BatchState, index: int) -> None:
        self._batch = batch
        self._index = index

    def done(self) -> bool:
        return self._batch.event.is_set()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        b = self._batch
        if not b.event.wait(timeout):
            raise RemoteError(P.REQUEST_TIMED_OUT, "no acknowledgement yet")
        if b.error is not None:
            raise b.error
        return RecordMetadata(b.topic, b.partition, _offset(b.base_offset, self._index))

    def exception(self, timeout: float | None = None) -> Exception | None:
        self._batch.event.wait(timeout)
        return self._batch.error


class Producer:
    def __init__(self, bootstrap: str | list[str] | None = None, *, config_path: str | None = None,
                 acks: int | str = "all", linger_ms: int = 5, batch_records_max: int = 1000,
                 batch_bytes_max: int = 1024 * 1024, buffer_bytes_max: int = 64 * 1024 * 1024,
                 max_block_ms: int = 60_000, delivery_timeout_ms: int = 120_000,
                 request_timeout_ms: int = 30_000, idempotent: bool = True, compression: str = "none",
                 record_bytes_max: int = 1024 * 1024) -> None:
        if acks not in ACKS:
            raise FabricError(f"acks must be 0, 1 or all, not {acks!r}")
        if compression not in COMPRESSION_CODECS:
            raise FabricError(f"compression must be one of {', '.join(COMPRESSION_CODECS)}")
        self.acks = ACKS[acks]
        self.linger_ms = linger_ms
        self.batch_records_max = batch_records_max
        self.batch_bytes_max = batch_bytes_max
        self.buffer_bytes_max = buffer_bytes_max
        self.max_block_ms = max_block_ms
        self.record_bytes_max = record_bytes_max
        self.compression = COMPRESSION_CODECS[compression]
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._open: dict[tuple[str, int], BatchState] = {}
        self._closed_batches: deque[BatchState] = deque()
        self._buffered_bytes = 0
        self._sticky: dict[str, int] = {}
        self._round_robin = 0
        self._unfinished: set[BatchState] = set()
        self._closed = False
        self._flush_requested = False
        self.sender = Sender(self, parse_bootstrap(bootstrap, config_path), idempotent=idempotent and self.acks != 0,
                             delivery_timeout_ms=delivery_timeout_ms, request_timeout_ms=request_timeout_ms)
        self.sender.start()

    # -- the application side -------------------------------------------------------------
    def send(self, topic: str, value: bytes, key: bytes | None = None, headers: list | None = None,
             partition: int | None = None, timestamp_ms: int | None = None,
             on_delivery: Callable[[RecordMetadata | None, Exception | None], None] | None = None) -> RecordFuture:
        """Queue one record. Blocks (up to max_block_ms) while the buffer is full, then raises
        RemoteError(buffer_full). Raises RemoteError(record_too_large) for an oversized record."""
        # the hot path of every application: kept to a few dict and attribute operations
        if value.__class__ is not bytes and not isinstance(value, (bytes, bytearray)):
            raise FabricError("value must be bytes")
        size = len(value) + RECORD_OVERHEAD_BYTES if key is None else len(value) + len(key) + RECORD_OVERHEAD_BYTES
        if size > self.record_bytes_max:
            raise RemoteError(P.RECORD_TOO_LARGE, f"record of {size} bytes is over {self.record_bytes_max}")
        if self._closed:
            raise FabricError("producer is closed")
        if partition is None and key is None:
            # sticky: valid until the open batch closes (a racing close only starts a new batch)
            partition = self._sticky.get(topic)
            if partition is None:
                partition = self._sticky_partition(topic, self._partition_count(topic))
        else:
            nparts = self._partition_count(topic)
            if partition is None:
                partition = partition_for_key(key, nparts)  # type: ignore[arg-type]
            elif not 0 <= partition < nparts:
                raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"{topic} has no partition {partition}")
        ts = timestamp_ms if timestamp_ms is not None else time.time_ns() // 1_000_000
        with self._lock:
            if self._buffered_bytes + size > self.buffer_bytes_max:
                self._wait_for_space(size)
            b = self._open.get((topic, partition))
            if b is None:
                b = self._open_batch(topic, partition)
            records = b.records
            index = len(records)
            records.append((ts, key, value, headers))
            b.size_bytes += size
            self._buffered_bytes += size
            if on_delivery is not None:
                (b.callbacks if b.callbacks is not None else _init_callbacks(b)).append((index, on_delivery))
            full = index + 1 >= self.batch_records_max or b.size_bytes >= self.batch_bytes_max
            if full:
                self._close_batch(b)
        if full:
            self.sender.wake()  # outside the lock: the woken I/O thread takes it at once
        return RecordFuture(b, index)

    def _partition_count(self, topic: str) -> int:
        t = self.sender.metadata.topics.get(topic)
        return len(t.partitions) if t is not None else self.sender.partition_count(topic, self.max_block_ms)

    def _open_batch(self, topic: str, partition: int) -> BatchState:
        """Caller holds the lock."""
        b = self._open[(topic, partition)] = BatchState(topic, partition, self.sender.clock.now_ms())
        self._unfinished.add(b)
        return b

    def _close_batch(self, b: BatchState) -> None:
        """The batch is full: hand it to the sender. Caller holds the lock."""
        del self._open[(b.topic, b.partition)]
        self._closed_batches.append(b)
        if self._sticky.get(b.topic) == b.partition:
            del self._sticky[b.topic]

    def _sticky_partition(self, topic: str, nparts: int) -> int:
        """Keyless records stick to one partition until its batch closes (Kafka's sticky
        partitioner): full batches, spread round-robin over time."""
        p = self._sticky.get(topic)
        if p is None or p >= nparts:
            self._round_robin += 1
            p = self._sticky[topic] = self._round_robin % nparts
        return p

    def _wait_for_space(self, size: int) -> None:
        deadline = time.monotonic() + self.max_block_ms / 1000
        self.sender.wake()
        while self._buffered_bytes + size > self.buffer_bytes_max:
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                raise RemoteError(P.BUFFER_FULL, f"producer buffer of {self.buffer_bytes_max} bytes is full")
            self._space.wait(left)

    def flush(self, timeout: float | None = None) -> None:
        """Send everything buffered and wait until every batch is acknowledged or failed."""
        with self._lock:
            self._close_all_open()
            pending = list(self._unfinished)
        self.sender.wake()
        deadline = None if timeout is None else time.monotonic() + timeout
        for b in pending:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not b.event.wait(left):
                raise RemoteError(P.REQUEST_TIMED_OUT, "flush timed out")

    def _close_all_open(self) -> None:
        for b in self._open.values():
            self._closed_batches.append(b)
        self._open.clear()
        self._sticky.clear()

    # -- the sender's side (called on the I/O thread) -------------------------------------------
    def take_ready(self, now_ms: int) -> list[BatchState]:
        """Closed batches, plus open ones whose linger has passed."""
        with self._lock:
            for tp, b in list(self._open.items()):
                if now_ms - b.created_ms >= self.linger_ms or self._closed:
                    del self._open[tp]
                    self._closed_batches.append(b)
                    self._sticky.pop(tp[0], None)
            out = list(self._closed_batches)
            self._closed_batches.clear()
        return out

    def release(self, batch: BatchState) -> None:
        """The batch is finished (acknowledged or failed): free its buffer space."""
        with self._lock:
            self._buffered_bytes -= batch.size_bytes
            self._unfinished.discard(batch)
            self._space.notify_all()

    def close(self, timeout: float | None = 30.0) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout)
        finally:
            self._closed = True
            self.sender.stop()

    def __enter__(self) -> "Producer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _offset(base_offset: int, index: int) -> int:
    """-1 when the broker did not say (acks=0)."""
    return base_offset + index if base_offset >= 0 else -1


def _init_callbacks(b: BatchState) -> list:
    b.callbacks = []
    return b.callbacks
