"""The producer's record accumulator: records in, batches per partition out.

``append`` (any application thread) adds a record to its partition's open batch and returns a
``RecordFuture``; a batch closes when it holds ``batch_records_max`` records or
``batch_bytes_max`` bytes, at ``flush``, or once it is ``linger_ms`` old (``take_ready``). The
bytes of records not yet finished are bounded by ``buffer_bytes_max``: ``append`` waits up to
``max_block_ms`` for space and then raises ``BufferExhaustedError``. The sender's I/O thread
takes ready batches (``take_ready``) and hands each back when it is finished (``release``).

Keyless records without a partition stick to one partition until its batch closes (Kafka's
sticky partitioner): full batches, spread round-robin over time.

Thread-safety: every method is thread-safe (one lock; ``append`` may block only for space).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable

from fabric.clock import Clock
from fabric.errors import BufferExhaustedError, ClientTimeoutError, RemoteError

log = logging.getLogger(__name__)

DeliveryCallback = Callable[["RecordMetadata | None", "Exception | None"], None]


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
                except Exception:  # the application's callback: logged, the other callbacks still run
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
        """Raises ``ClientTimeoutError`` if the outcome is not known within ``timeout`` seconds
        (the record may still be delivered), else the delivery's error, if any."""
        b = self._batch
        if not b.event.wait(timeout):
            raise ClientTimeoutError("no acknowledgement yet")
        if b.error is not None:
            raise b.error
        return RecordMetadata(b.topic, b.partition, _offset(b.base_offset, self._index))

    def exception(self, timeout: float | None = None) -> Exception | None:
        self._batch.event.wait(timeout)
        return self._batch.error


@dataclass(frozen=True)
class AccumulatorSettings:
    linger_ms: int = 5
    batch_records_max: int = 1000
    batch_bytes_max: int = 1024 * 1024
    buffer_bytes_max: int = 64 * 1024 * 1024
    max_block_ms: int = 60_000


class RecordAccumulator:
    def __init__(self, settings: AccumulatorSettings, clock: Clock, wake: Callable[[], None]) -> None:
        """``wake``: tells the sender that a batch is ready (called outside the lock)."""
        self.settings = settings
        self.clock = clock
        self._wake = wake
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._open: dict[tuple[str, int], BatchState] = {}
        self._closed_batches: deque[BatchState] = deque()
        self._buffered_bytes = 0
        # topic -> partition of its keyless records; read without the lock on the hot path (a
        # stale read only starts a new batch), written under it
        self.sticky: dict[str, int] = {}
        self._round_robin = 0
        self._unfinished: set[BatchState] = set()
        self._closed = False

    @property
    def buffered_bytes(self) -> int:
        return self._buffered_bytes

    def sticky_partition(self, topic: str, partition_count: int) -> int:
        """The partition keyless records of ``topic`` go to now: kept until its batch closes
        (``sticky.get(topic)`` first is the cheap path when the count is not needed)."""
        p = self.sticky.get(topic)
        if p is None or p >= partition_count:
            with self._lock:
                p = self.sticky.get(topic)
                if p is None or p >= partition_count:
                    self._round_robin += 1
                    p = self.sticky[topic] = self._round_robin % partition_count
        return p

    def append(self, topic: str, partition: int, timestamp_ms: int, key: bytes | None, value: bytes,
               headers: list | None, size_bytes: int, on_delivery: DeliveryCallback | None = None) -> RecordFuture:
        """Add one record (``size_bytes`` counted against the buffer). Raises
        ``BufferExhaustedError`` when no space frees within ``max_block_ms``."""
        s = self.settings
        with self._lock:
            if self._buffered_bytes + size_bytes > s.buffer_bytes_max:
                self._wait_for_space(size_bytes)
            b = self._open.get((topic, partition))
            if b is None:
                b = self._open[(topic, partition)] = BatchState(topic, partition, self.clock.now_ms())
                self._unfinished.add(b)
            records = b.records
            index = len(records)
            records.append((timestamp_ms, key, value, headers))
            b.size_bytes += size_bytes
            self._buffered_bytes += size_bytes
            if on_delivery is not None:
                if b.callbacks is None:
                    b.callbacks = []
                b.callbacks.append((index, on_delivery))
            full = index + 1 >= s.batch_records_max or b.size_bytes >= s.batch_bytes_max
            if full:
                self._close_batch(b)
        if full:
            self._wake()  # outside the lock: the woken I/O thread takes it at once
        return RecordFuture(b, index)

    def _close_batch(self, b: BatchState) -> None:
        """The batch is full: ready for the sender. Caller holds the lock."""
        del self._open[(b.topic, b.partition)]
        self._closed_batches.append(b)
        if self.sticky.get(b.topic) == b.partition:
            del self.sticky[b.topic]

    def _wait_for_space(self, size_bytes: int) -> None:
        """Caller holds the lock."""
        deadline = time.monotonic() + self.settings.max_block_ms / 1000
        self._wake()
        while self._buffered_bytes + size_bytes > self.settings.buffer_bytes_max:
            left = deadline - time.monotonic()
            if left <= 0 or self._closed:
                raise BufferExhaustedError(f"producer buffer of {self.settings.buffer_bytes_max} bytes is full")
            self._space.wait(left)

    def close_all(self) -> list[BatchState]:
        """Close every open batch (``flush``); returns every batch not yet finished."""
        with self._lock:
            self._closed_batches.extend(self._open.values())
            self._open.clear()
            self.sticky.clear()
            return list(self._unfinished)

    def take_ready(self, now_ms: int) -> list[BatchState]:
        """Closed batches, plus open ones whose linger has passed (all of them once closed)."""
        with self._lock:
            for tp, b in list(self._open.items()):
                if now_ms - b.created_ms >= self.settings.linger_ms or self._closed:
                    del self._open[tp]
                    self._closed_batches.append(b)
                    self.sticky.pop(tp[0], None)
            out = list(self._closed_batches)
            self._closed_batches.clear()
        return out

    def release(self, batch: BatchState) -> None:
        """The batch is finished (acknowledged or failed): free its buffer space."""
        with self._lock:
            self._buffered_bytes -= batch.size_bytes
            self._unfinished.discard(batch)
            self._space.notify_all()

    def close(self) -> None:
        """No more appends wait for space; ``take_ready`` hands out every open batch."""
        with self._lock:
            self._closed = True
            self._space.notify_all()


def _offset(base_offset: int, index: int) -> int:
    """-1 when the broker did not say (acks=0)."""
    return base_offset + index if base_offset >= 0 else -1
