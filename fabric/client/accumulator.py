"""The producer's record accumulator: records in, batches per partition out.

``append`` (any application thread) adds a record to its partition's open batch and returns a
``RecordFuture``; ``append_many`` adds a run of records packed at once (``Producer.send_many``)
and returns where they went. A batch closes when it holds ``batch_records_max`` records or
``batch_bytes_max`` bytes, at ``flush``, or once it is ``linger_ms`` old (``take_ready``). The
bytes of records not yet finished are bounded by ``buffer_bytes_max``: ``append`` waits up to
``max_block_ms`` for space and then raises ``BufferExhaustedError``. The sender's I/O thread
takes ready batches (``take_ready``) and hands each back when it is finished (``release``).

Keyless records without a partition stick to one partition until its batch closes (Kafka's
sticky partitioner): full batches, spread round-robin over time.

A batch holds packed runs of records (``chunks``, from ``append_many``) followed by the records
``append`` added since (tuples, packed when the batch is built or before the next run): its
payload is the same msgpack array either way (``fabric.records``).

A partition with a request in flight keeps its open batch filling (``take_ready``'s ``busy``).
With ``linger_ms`` 0 a batch opened on an idle partition (nothing in flight or queued: the
``idle`` callable, the sender's view) wakes the sender at once, so a record sent after a pause
leaves now and not at the sender's next tick (up to a millisecond later: half the time of an
RF 1 round trip here). A busy partition's batch does not wake it: the request in flight is
answered first, so this sends no more requests than one per round trip per partition. (Waking
it for every batch that opened sent more, smaller requests, whose cost on the brokers outweighed
the half millisecond on a loaded machine.)

Thread-safety: every method is thread-safe (one lock; ``append`` may block only for space).
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from itertools import accumulate, repeat
from operator import add, itemgetter
from typing import Callable, Container, Sequence

from fabric.client.completion import Completion
from fabric.clock import Clock
from fabric.errors import BufferExhaustedError, ClientTimeoutError, RemoteError
from fabric.hoptrace import mark
from fabric.records import build_batch, build_batch_from_chunks, pack_records

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
                 "error", "sequence", "data", "possibly_written", "deadline_ms", "callbacks", "last_error",
                 "chunks", "record_count", "first_timestamp_ms", "max_timestamp_ms", "completions",
                 "pieces", "parent", "parent_lo", "offsets", "errors", "numbered_in")

    def __init__(self, topic: str, partition: int, created_ms: int, first_timestamp_ms: int = -1) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list[tuple] = []  # (timestamp_ms, key, value, headers) appended after the chunks
        self.chunks: list[bytes] = []   # pieces of packed runs of records (fabric.records), in order
        self.record_count = 0           # records in chunks and records together
        self.first_timestamp_ms = first_timestamp_ms
        self.max_timestamp_ms = first_timestamp_ms  # of the chunks; the records' own are taken when packed
        self.size_bytes = 0
        self.created_ms = created_ms
        self.event = threading.Event()
        self.base_offset = -1
        self.error: Exception | None = None
        self.sequence = -1
        self.data: bytes | None = None
        # a send of it may be in a log: one not answered with an error for the batch itself
        # whose base offset is -1 (the broker's "not written by this request")
        self.possibly_written = False
        self.deadline_ms = 0
        self.numbered_in = -1  # the sender's producer-id generation its sequence numbers belong to
        self.callbacks: list | None = None  # (first index, record count, callback)
        self.last_error: RemoteError | None = None  # the last retriable error: reported if it never lands
        self.completions: list[Completion] | None = None  # of the send_many calls with records here
        # a batch the leader refused as too large is sent split in pieces (``split``): the
        # pieces, in record order; a piece's batch (``parent``) and where its records start there
        self.pieces: list[BatchState] | None = None
        self.parent: BatchState | None = None
        self.parent_lo = 0
        # per record, when its pieces were not written back to back (else base_offset + index)
        self.offsets: list[int] | None = None
        self.errors: list[Exception | None] | None = None

    def seal_records(self) -> None:
        """Pack the records ``append`` added into a chunk (before a packed run follows them)."""
        if self.records:
            self.max_timestamp_ms = max(self.max_timestamp_ms, max(map(_timestamp, self.records)))
            self.chunks += pack_records(self.records)
            self.records = []

    def build(self, *, compression: int, producer_id: int, producer_epoch: int, base_sequence: int) -> bytes:
        """The batch's bytes (may be called again: after a producer-id reset it is renumbered)."""
        if not self.chunks:
            return build_batch(self.records, compression=compression, producer_id=producer_id,
                               producer_epoch=producer_epoch, base_sequence=base_sequence)
        self.seal_records()
        return build_batch_from_chunks(self.chunks, self.record_count, self.first_timestamp_ms, self.max_timestamp_ms,
                                       compression=compression, producer_id=producer_id,
                                       producer_epoch=producer_epoch, base_sequence=base_sequence)

    def split(self, records: list[tuple], producer_id: int, producer_epoch: int, compression: int) -> list[BatchState]:
        """This batch (or piece), whose ``records`` the caller decoded from its bytes, as two
        pieces of half its records each, built with its sequence numbers (the first piece
        takes its base sequence, the second continues it: the batches after it keep theirs).
        The pieces take its place among its batch's pieces; the batch completes when they all
        have (``Sender``)."""
        top = self.parent if self.parent is not None else self
        half = len(records) // 2
        pieces = []
        for lo, hi in ((0, half), (half, len(records))):
            c = BatchState(self.topic, self.partition, self.created_ms, records[lo][0])
            c.records, c.record_count = records[lo:hi], hi - lo
            c.parent, c.parent_lo = top, self.parent_lo + lo
            c.deadline_ms, c.last_error = self.deadline_ms, self.last_error
            c.sequence = (self.sequence + lo) & 0x7FFFFFFF if self.sequence >= 0 else -1
            c.data = c.build(compression=compression, producer_id=producer_id, producer_epoch=producer_epoch,
                             base_sequence=c.sequence)
            pieces.append(c)
        if top.pieces is None:
            top.pieces = pieces
            top.records, top.chunks, top.data = [], [], None  # the pieces hold the records now
        else:
            at = top.pieces.index(self)
            top.pieces[at:at + 1] = pieces
        return pieces

    def complete_from_pieces(self) -> bool:
        """Complete this batch from its pieces once all of them have completed; True if it did
        now. Written back to back without error (the common case), it completes as one batch;
        else each record keeps its own piece's offset and error."""
        pieces = self.pieces
        if self.event.is_set() or pieces is None or not all(p.event.is_set() for p in pieces):
            return False
        first = pieces[0].base_offset
        if all(p.error is None and (p.base_offset == first + p.parent_lo if first >= 0 else p.base_offset < 0)
               for p in pieces):
            self.complete(first, None)
            return True
        offsets: list[int] = []
        errors: list[Exception | None] = []
        for p in pieces:
            offsets += range(p.base_offset, p.base_offset + p.record_count) if p.base_offset >= 0 and p.error is None \
                else repeat(-1, p.record_count)
            errors += repeat(p.error, p.record_count)
        self.offsets, self.errors = offsets, errors
        self.complete(-1, next(e for e in errors if e is not None) if any(errors) else None)
        return True

    def outcome(self, index: int) -> tuple[int, Exception | None]:
        """Record ``index``'s offset (-1 when failed or not known) and error."""
        if self.errors is not None:
            return self.offsets[index], self.errors[index]  # type: ignore[index]
        return (_offset(self.base_offset, index) if self.error is None else -1), self.error

    def complete(self, base_offset: int, error: Exception | None) -> None:
        self.base_offset = base_offset
        self.error = error
        self.records = []  # free the memory; the packed data goes too
        self.chunks = []
        self.data = None
        self.event.set()
        if self.callbacks:
            for first, count, cb in self.callbacks:
                for index in range(first, first + count):
                    offset, err = self.outcome(index)
                    try:
                        cb(None if err else RecordMetadata(self.topic, self.partition, offset), err)
                    except Exception:  # the application's callback: logged, the other callbacks still run
                        log.exception("delivery callback failed")
        if self.completions:
            for c in self.completions:
                c.release()


_timestamp = itemgetter(0)


class RecordFuture(tuple):
    """The future result of one ``send``: ``result()`` returns RecordMetadata or raises.
    (A tuple underneath: built without a Python-level ``__init__`` on the hot path.)"""

    __slots__ = ()

    def __new__(cls, batch: BatchState, index: int) -> "RecordFuture":
        return tuple.__new__(cls, (batch, index))

    @property
    def partition(self) -> int:
        """The partition the record was queued for (known at once; delivery keeps it)."""
        return self[0].partition

    def done(self) -> bool:
        return self[0].event.is_set()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Raises ``ClientTimeoutError`` if the outcome is not known within ``timeout`` seconds
        (the record may still be delivered), else the delivery's error, if any."""
        b = self[0]
        if not b.event.wait(timeout):
            raise ClientTimeoutError("no acknowledgement yet")
        if b.errors is not None:
            offset, error = b.outcome(self[1])
            if error is not None:
                raise error
            return RecordMetadata(b.topic, b.partition, offset)
        if b.error is not None:
            raise b.error
        return RecordMetadata(b.topic, b.partition, _offset(b.base_offset, self[1]))

    def exception(self, timeout: float | None = None) -> Exception | None:
        b = self[0]
        b.event.wait(timeout)
        return b.error if b.errors is None else b.errors[self[1]]


_new_future = tuple.__new__
Segment = tuple  # (BatchState, first index in it, record count): where a run of records went


class RecordFutures:
    """The outcome of one ``send_many``: the records in the order they were given.

    ``len(f)``; ``f[i]`` is record i's ``RecordFuture``; ``done()``; ``result(timeout)`` waits
    for every record and returns their ``RecordMetadata`` in order, or raises the first
    delivery error (``ClientTimeoutError`` when not all are known within ``timeout`` seconds);
    ``exception(timeout)`` returns that error or None; ``outcomes(timeout)`` gives every
    record's position, partition, offset and error as lists, and ``positions`` where each
    record was in the caller's list. Thread-safe (read-only after creation)."""

    __slots__ = ("_segments", "_order", "_index")

    def __init__(self, segments: list[Segment], order: Sequence[int] | None = None) -> None:
        """``segments`` in queue order; ``order[j]`` is the position, in the caller's list, of
        the j-th record of the segments (None: the same order)."""
        self._segments = segments
        self._order = order
        self._index: list[tuple[BatchState, int]] | None = None

    def __len__(self) -> int:
        return sum(s[2] for s in self._segments)

    def __getitem__(self, i: int) -> RecordFuture:
        if self._index is None:  # (batch, index) per record in the caller's order, built once
            self._index = self._in_callers_order(
                [(b, k) for b, first, count in self._segments for k in range(first, first + count)])
        b, k = self._index[i]
        return RecordFuture(b, k)

    def done(self) -> bool:
        return all(s[0].event.is_set() for s in self._segments)

    def _wait(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        for b, _, _ in self._segments:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not b.event.wait(left):
                raise ClientTimeoutError("no acknowledgement yet")

    def exception(self, timeout: float | None = None) -> Exception | None:
        self._wait(timeout)
        for b, first, count in self._segments:
            if b.errors is not None:
                error = next((e for e in b.errors[first:first + count] if e is not None), None)
                if error is not None:
                    return error
            elif b.error is not None:
                return b.error
        return None

    def outcomes(self, timeout: float | None = None) -> tuple[Sequence[int], list[int], list[int], list[Exception | None]]:
        """``(positions, partitions, offsets, errors)``: for each record, its position in the
        list given to ``send_many``, its partition, its offset (-1 when failed or acks=0) and
        its error (None when delivered), in queue order -- built per batch by C-level calls,
        without an object per record. ``positions`` is a ``range`` when the records are in the
        order given (always, except keyed records over several partitions); for the
        ``futures`` of a ``BufferExhaustedError`` it covers only the records queued. Raises
        ``ClientTimeoutError`` when not all are known within ``timeout`` seconds."""
        self._wait(timeout)
        partitions: list[int] = []
        offsets: list[int] = []
        errors: list[Exception | None] = []
        for b, first, count in self._segments:
            partitions += repeat(b.partition, count)
            if b.errors is not None:  # a batch sent in pieces, not written back to back
                offsets += b.offsets[first:first + count]  # type: ignore[index]
                errors += b.errors[first:first + count]
                continue
            if b.error is None and b.base_offset >= 0:
                offsets += range(b.base_offset + first, b.base_offset + first + count)
            else:
                offsets += repeat(-1, count)
            errors += repeat(b.error, count)
        return self.positions, partitions, offsets, errors

    @property
    def positions(self) -> Sequence[int]:
        """Where the records of these futures are, in queue order, in the list given to
        ``send_many``: a ``range`` unless keyed records went to several partitions. Known at
        once (for the ``futures`` of a ``BufferExhaustedError``: the records queued)."""
        n = len(self)
        return range(n) if self._order is None else self._order[:n]

    def result(self, timeout: float | None = None) -> list[RecordMetadata]:
        error = self.exception(timeout)
        if error is not None:
            raise error
        return self._in_callers_order([RecordMetadata(b.topic, b.partition, b.outcome(k)[0])
                                       for b, first, count in self._segments for k in range(first, first + count)])

    def _in_callers_order(self, items: list) -> list:
        """``items`` (one per queued record, in queue order) in the order the caller gave the
        records; of a call cut short by a full buffer, only the records that were queued."""
        if self._order is None:
            return items
        return [item for _, item in sorted(zip(self._order[:len(items)], items), key=itemgetter(0))]


# Records per batch at most, by default. At 100 B the 1 MiB byte bound closes a batch first
# (~9,000 records): per-batch work on the brokers (a header to check, a write, a publish, an
# ack) is spread over as many records as the bytes allow (bench/RESULTS.md, "Bigger batches").
BATCH_RECORDS_MAX = 10_000


@dataclass(frozen=True)
class AccumulatorSettings:
    linger_ms: int = 5
    batch_records_max: int = BATCH_RECORDS_MAX
    batch_bytes_max: int = 1024 * 1024
    buffer_bytes_max: int = 64 * 1024 * 1024
    max_block_ms: int = 60_000


class RecordAccumulator:
    def __init__(self, settings: AccumulatorSettings, clock: Clock, wake: Callable[[], None],
                 idle: Callable[[tuple[str, int]], bool] | None = None) -> None:
        """``wake``: tells the sender that a batch is ready (called outside the lock);
        ``idle(topic_partition)``: nothing is in flight or queued for it (called outside the
        lock, from the application's thread; a stale answer costs one wake-up or one tick)."""
        self.settings = settings
        self.clock = clock
        self._wake = wake
        self._idle = idle if settings.linger_ms == 0 else None  # only linger 0 sends an opened batch at once
        # the settings the hot path reads, as plain attributes
        self._records_max = settings.batch_records_max
        self._bytes_max = settings.batch_bytes_max
        self._topic_bytes_max: dict[str, int] = {}  # topics whose max.message.bytes is lower
        self._buffer_max = settings.buffer_bytes_max
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
                p = self._sticky_locked(topic, partition_count)
        return p

    def _sticky_locked(self, topic: str, partition_count: int) -> int:
        p = self.sticky.get(topic)
        if p is None or p >= partition_count:
            self._round_robin += 1
            p = self.sticky[topic] = self._round_robin % partition_count
        return p

    def _open_batch(self, topic: str, partition: int, timestamp_ms: int) -> BatchState:
        """Caller holds the lock."""
        b = self._open[(topic, partition)] = BatchState(topic, partition, self.clock.now_ms(), timestamp_ms)
        self._unfinished.add(b)
        return b

    def append(self, topic: str, partition: int, timestamp_ms: int, key: bytes | None, value: bytes,
               headers: list | None, size_bytes: int, on_delivery: DeliveryCallback | None = None) -> RecordFuture:
        """Add one record (``size_bytes`` counted against the buffer). Raises
        ``BufferExhaustedError`` when no space frees within ``max_block_ms``."""
        limits = self._topic_bytes_max
        bytes_max = limits.get(topic, self._bytes_max) if limits else self._bytes_max
        with self._lock:
            if self._buffered_bytes + size_bytes > self._buffer_max:
                self._wait_for_space(size_bytes)
            b = self._open.get((topic, partition))
            if b is None or b.size_bytes + size_bytes > bytes_max:
                handed_on = b is not None
                if handed_on:  # it does not fit: the open batch goes, the record starts the next one
                    self._close_batch(b, overflow=True)
                b = self._open_batch(topic, partition, timestamp_ms)
                opened = True
            else:
                opened = handed_on = False
            b.records.append((timestamp_ms, key, value, headers))
            index = b.record_count
            b.record_count = index + 1
            size = b.size_bytes = b.size_bytes + size_bytes
            self._buffered_bytes += size_bytes
            if on_delivery is not None:
                if b.callbacks is None:
                    b.callbacks = []
                b.callbacks.append((index, 1, on_delivery))
            if index + 1 >= self._records_max or size + size_bytes > bytes_max:  # no room for another
                self._close_batch(b)
                handed_on = True
        if handed_on or (opened and self._idle is not None and self._idle((topic, partition))):
            mark("producer.queued")  # only where the record is handed on: nothing per record
            self._wake()  # outside the lock: the woken I/O thread takes it at once
        return _new_future(RecordFuture, (b, index))

    def append_many(self, topic: str, partition: int | None, timestamp_ms: int, values: Sequence[bytes],
                    sizes: Sequence[int] | int, pack: Callable[[int, int], list[bytes]], partition_count: int = 1,
                    on_delivery: DeliveryCallback | None = None,
                    completion: Completion | None = None) -> list[Segment]:
        """Add ``len(values)`` records in order: to ``partition``, or (None) to the sticky
        partition of ``topic``, moving on when a batch fills. ``sizes``: each record's bytes
        against the buffer and batch limits (a list, or one int when all are alike);
        ``pack(start, end)``: records start..end-1 as a chunk (``fabric.records``). Batches fill
        exactly as the same records sent one by one would fill them. Returns the segments
        (batch, first index, count) in order. Raises ``BufferExhaustedError`` when no space
        frees within ``max_block_ms``: the records before the one that did not fit are queued
        (the error's ``segments``). ``completion``: held once per batch the records go to
        (released when the batch finishes)."""
        segments: list[Segment] = []
        wake = False
        opened: list[tuple[str, int]] = []  # batches opened (linger 0): the sender may be idle
        i, n = 0, len(values)
        bytes_max = self._topic_bytes_max.get(topic, self._bytes_max)
        smallest = max(1, sizes if isinstance(sizes, int) else min(sizes, default=1))
        try:
            while i < n:
                with self._lock:
                    p = partition if partition is not None else self._sticky_locked(topic, partition_count)
                    b = self._open.get((topic, p))
                    k, run_bytes = self._run_fitting(b, sizes, i, n, bytes_max, smallest)
                    if k == 0:  # the next record does not fit in the open batch: it starts the next one
                        self._close_batch(b, overflow=True)  # type: ignore[arg-type]
                        wake = True
                        continue
                    if self._buffered_bytes + run_bytes > self._buffer_max:
                        # queue what fits, as one append per record would; then wait for the next
                        k, run_bytes = self._run_within(sizes, i, k, self._buffer_max - self._buffered_bytes)
                        if k == 0:
                            self._wait_for_space(sizes if isinstance(sizes, int) else sizes[i])
                            continue  # the open batch may have closed meanwhile
                    if b is None:
                        b = self._open_batch(topic, p, timestamp_ms)
                        if self._idle is not None:
                            opened.append((topic, p))
                    b.seal_records()
                    b.chunks += pack(i, i + k)
                    if timestamp_ms > b.max_timestamp_ms:
                        b.max_timestamp_ms = timestamp_ms
                    first = b.record_count
                    b.record_count = first + k
                    b.size_bytes += run_bytes
                    self._buffered_bytes += run_bytes
                    if on_delivery is not None:
                        if b.callbacks is None:
                            b.callbacks = []
                        b.callbacks.append((first, k, on_delivery))
                    if completion is not None:
                        completion.hold()
                        if b.completions is None:
                            b.completions = []
                        b.completions.append(completion)
                    segments.append((b, first, k))
                    last = sizes if isinstance(sizes, int) else sizes[i + k - 1]
                    if b.record_count >= self._records_max or b.size_bytes + last > bytes_max:
                        self._close_batch(b)  # full: no room for another record like the last
                        wake = True
                i += k
        except BufferExhaustedError as e:
            e.segments = segments  # type: ignore[attr-defined]
            raise
        finally:
            if wake or (opened and any(map(self._idle, opened))):  # type: ignore[arg-type]
                self._wake()
        return segments

    def _run_fitting(self, b: BatchState | None, sizes: Sequence[int] | int, i: int, n: int,
                     bytes_max: int, smallest: int = 1) -> tuple[int, int]:
        """How many of records i..n-1 go into ``b`` (None: a new batch), and their bytes, as
        ``append`` adds them one by one: a record goes in if it fits (a new batch takes one
        record whatever its size), and the run ends after a record that leaves no room for
        another of its size (``append`` then closes the batch) or before one that does not
        fit (0: it does not fit in ``b``, which is to be closed)."""
        room_records = self._records_max - (b.record_count if b is not None else 0)
        room_bytes = bytes_max - (b.size_bytes if b is not None else 0)
        if isinstance(sizes, int):
            k = min(n - i, room_records, max(0, room_bytes) // sizes)  # room < 0: the bound fell since
            if k == 0 and b is None:
                k = 1  # a record over the limit alone
            return k, k * sizes
        # no more records than could fit if each were as small as the smallest of the call:
        # a small bound (a topic's max.message.bytes) does not scan batch_records_max sizes
        run = sizes[i:i + min(room_records, n - i, max(0, room_bytes) // smallest + 1)]
        prefix = list(accumulate(run))
        # the first record after which another of its size would not fit: the batch closes
        # there (running maximum: the first crossing, found by bisection, all in C)
        closing = bisect_right(list(accumulate(map(add, prefix, run), max)), room_bytes)
        if closing < len(prefix) and prefix[closing] <= room_bytes:
            k = closing + 1   # it fits, and closes the batch
        else:
            k = closing       # all of the run fit (len), or record ``closing`` does not fit
        if k == 0 and b is None:
            k = 1
        return k, prefix[k - 1] if k else 0

    @staticmethod
    def _run_within(sizes: Sequence[int] | int, i: int, k: int, free_bytes: int) -> tuple[int, int]:
        """How many of records i..i+k-1 fit in ``free_bytes`` of buffer, and their bytes."""
        if isinstance(sizes, int):
            fit = min(k, max(0, free_bytes) // sizes)
            return fit, fit * sizes
        prefix = list(accumulate(sizes[i:i + k]))
        fit = bisect_right(prefix, free_bytes)
        return fit, prefix[fit - 1] if fit else 0

    def _close_batch(self, b: BatchState, overflow: bool = False) -> None:
        """The batch is full: ready for the sender. Caller holds the lock. A batch closed by a
        record that did not fit (``overflow``) leaves the sticky partition where it is: that
        record opens the partition's next batch, which the keyless records after it fill."""
        del self._open[(b.topic, b.partition)]
        self._closed_batches.append(b)
        if not overflow and self.sticky.get(b.topic) == b.partition:
            del self.sticky[b.topic]

    def set_topic_bytes_max(self, limits: dict[str, int]) -> None:
        """Per topic, a batch bound below ``batch_bytes_max`` (the topic's largest batch the
        leader takes, less the batch's own overhead); replaces the previous table."""
        self._topic_bytes_max = {t: min(v, self._bytes_max) for t, v in limits.items()}

    def _wait_for_space(self, size_bytes: int) -> None:
        """Caller holds the lock."""
        deadline = time.monotonic() + self.settings.max_block_ms / 1000
        self._wake()
        while self._buffered_bytes + size_bytes > self._buffer_max:
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

    def take_ready(self, now_ms: int, busy: Container[tuple[str, int]] = ()) -> list[BatchState]:
        """Closed batches, plus open ones whose linger has passed (all of them once closed).
        An open batch of a ``busy`` partition (one the sender cannot send to before a reply)
        stays open and keeps filling until it is full or the partition is free, as Kafka's
        muted partitions do: closing it would only queue a small batch behind the request."""
        with self._lock:
            for tp, b in list(self._open.items()):
                if (now_ms - b.created_ms >= self.settings.linger_ms and tp not in busy) or self._closed:
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
