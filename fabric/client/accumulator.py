"""The producer's record accumulator: records in, batches per partition out.

``append`` (any application thread) adds a record to its partition's open batch and returns a
``RecordFuture``; ``append_many`` adds a run of records packed at once (``Producer.send_many``)
and returns where they went. A batch closes when it holds ``batch_records_max`` records or
``batch_bytes_max`` bytes, at ``flush``, or once it is ``linger_ms`` old (``take_ready``). The
bytes of records not yet finished are bounded by ``buffer_bytes_max``: ``append`` waits up to
``max_block_ms`` for space and then raises ``BufferExhaustedError`` (at once on the sender's
thread, which frees the space). The sender's I/O thread
takes ready batches (``take_ready``) and hands each back when it is finished (``release``).

Keyless records without a partition stick to one partition until its batch closes (Kafka's
sticky partitioner): full batches, spread round-robin over time -- or until metadata shows the
topic without that partition (``set_partition_counts``: re-created with fewer).

A batch holds packed runs of records (``chunks``, from ``append_many``) followed by the records
``append`` added since, packed when the batch is built or before the next packed run: keyless,
header-less records of one timestamp and one size as their values alone (``run_values``: no
object per record; one join packs them at the next millisecond), any other as a tuple
(``BatchState.add_record``). Its payload is the same msgpack array either way
(``fabric.records``).

A run of values is granted room (``_grant``): the records of its size it could take one by one
without closing the batch or waiting for buffer space, their bytes reserved at once in the
batch and the buffer. ``append`` adds a record that goes on the run (keyless, header-less, the
run's timestamp and size) within that room checking nothing else: a few attribute reads under
the lock. Room is granted to a run whose record before went to the same batch: records that
switch batches (keys over partitions) do not pay for grants they would not use. Only the batch
an append last looked up (``_last``) holds room; every other locked section gives it back first
(``_settle``), so that what they read counts records only. No room is granted while an append
waits for space.

A partition that cannot take another request now (as many in flight as the producer's
``max_in_flight``, or held: fabric/client/sender_flights.py) keeps its open batch filling
(``take_ready``'s ``busy``). With ``linger_ms`` 0 a batch opened on an idle partition (room
for a request and nothing queued: the ``idle`` callable, the sender's view) wakes the sender at
once, so a record sent after a pause, or while one request is on its way, leaves now and not at
the sender's next pass. A busy partition's batch does not wake it: a request in flight is
answered first (its answer's pass takes the batch), so this sends no more than ``max_in_flight``
requests per round trip per partition. (Waking it for every batch that opened sent more, smaller
requests, whose cost on the brokers outweighed the half millisecond on a loaded machine.) With
``linger_ms`` above 0 a batch opened wakes the sender only if it would otherwise sleep past the
batch's due time (the ``lingering`` callable, the sender's view); ``take_ready`` leaves in
``next_due_ms`` when the first batch it left open falls due, which the sender sleeps until.

Thread-safety: every method is thread-safe (one lock; ``append`` may block only for space).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_right
from collections import deque
from dataclasses import dataclass
from itertools import accumulate
from operator import add
from typing import Callable, Container, Sequence

from fabric.client.completion import Completion
from fabric.client.futures import BatchState, DeliveryCallback, QueuedFuture, RecordFuture, Segment
from fabric.clock import Clock
from fabric.errors import BufferExhaustedError, ProducerClosedError
from fabric.hoptrace import mark

_new_future = QueuedFuture
# what ``_last`` holds when no open batch was looked up: a batch no record goes to, with no room
_NO_BATCH = BatchState("", -1, 0)

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
                 idle: Callable[[tuple[str, int]], bool] | None = None,
                 frees_space: Callable[[], bool] | None = None,
                 lingering: Callable[[int], bool] | None = None) -> None:
        """``wake``: tells the sender that a batch is ready (called outside the lock);
        ``idle(topic_partition)``: nothing is in flight or queued for it (linger 0; called
        outside the lock, from the application's thread; a stale "busy" is harmless: the
        answer's pass takes the batch); ``lingering(due_ms)``: a batch opened now, due then,
        must wake the sender (linger above 0; called outside the lock);
        ``frees_space()``: True on the thread that frees space (the sender's, running a
        delivery callback), which must not wait for it (called under the lock), nor for the
        batches it completes (``BatchState.wait``)."""
        self.settings = settings
        self.clock = clock
        self._wake = wake
        self._frees_space = frees_space
        self._idle = idle if settings.linger_ms == 0 else None  # only linger 0 sends an opened batch at once
        self._lingering = lingering if settings.linger_ms > 0 else None
        self.next_due_ms: int | None = None  # as ``take_ready`` left it: the first open batch of a free partition due
        # the settings the hot path reads, as plain attributes
        self._records_max = settings.batch_records_max
        self._bytes_max = settings.batch_bytes_max
        self._topic_bytes_max: dict[str, int] = {}  # topics whose max.message.bytes is lower
        self._buffer_max = settings.buffer_bytes_max
        self._lock = threading.Lock()
        self._space = threading.Condition(self._lock)
        self._open: dict[tuple[str, int], BatchState] = {}
        self._last = _NO_BATCH  # the open batch an append last looked up (``_NO_BATCH`` once closed)
        self._space_waiters = 0  # appends waiting for buffer space (``release`` wakes them)
        self._closed_batches: deque[BatchState] = deque()
        self._buffered_bytes = 0
        # topic -> partition of its keyless records; read without the lock on the hot path (a
        # stale read only starts a new batch), written under it
        self.sticky: dict[str, int] = {}
        # topic -> partitions in the newest metadata (set_partition_counts): a sticky partition
        # is chosen below it even by a thread that read older metadata
        self._partition_counts: dict[str, int] = {}
        self._round_robin = 0
        self._unfinished: set[BatchState] = set()
        self._closed = False

    @property
    def buffered_bytes(self) -> int:
        """The bytes of the records not yet finished."""
        with self._lock:
            self._settle()
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
        partition_count = min(partition_count, self._partition_counts.get(topic, partition_count))
        p = self.sticky.get(topic)
        if p is None or p >= partition_count:
            self._round_robin += 1
            p = self.sticky[topic] = self._round_robin % partition_count
        return p

    def _open_batch(self, topic: str, partition: int, timestamp_ms: int) -> BatchState:
        """Caller holds the lock."""
        b = self._open[(topic, partition)] = BatchState(topic, partition, self.clock.now_ms(), timestamp_ms)
        b.on_io_thread = self._frees_space  # the thread that frees space completes the batch: it cannot wait for it
        self._unfinished.add(b)
        return b

    def append(self, topic: str, partition: int, timestamp_ms: int, key: bytes | None, value: bytes,
               headers: list | None, size_bytes: int, on_delivery: DeliveryCallback | None = None) -> RecordFuture:
        """Add one record (``size_bytes`` counted against the buffer). Raises
        ``BufferExhaustedError`` when no space frees within ``max_block_ms``."""
        # ``with``, though ``acquire`` then ``try`` costs ~70 ns less per record: a KeyboardInterrupt
        # raised as ``acquire`` returned, before the ``try``, left the lock held -- the I/O thread,
        # ``flush`` and ``close`` then waited for ever (a Ctrl-C in a sending loop hung the program
        # in its ``with Producer``); nothing checks for signals between ``with`` taking the lock
        # and its block
        with self._lock:
            b = self._last
            index = b.record_count
            if (index < b.run_records_end and timestamp_ms == b.run_timestamp_ms and size_bytes == b.run_record_bytes
                    and b.partition == partition and b.topic == topic and key is None and headers is None):
                # the short path: the record goes on its batch's run, within room checked and
                # reserved when the run was granted it (``_grant``); counted before the call that
                # adds it, so that an exception raised as the call returns leaves it counted
                b.record_count = index + 1
                b.run_values.append(value)  # type: ignore[union-attr]
                wake = opened = False
            else:  # the long way (in line: a call more per record costs keyed records ~10 %)
                if self._closed:  # (``close`` ends the short path: no batch is ``_last`` then)
                    raise ProducerClosedError()
                if index < b.run_records_end:
                    self._settle()
                if self._buffered_bytes + size_bytes > self._buffer_max:
                    self._wait_for_space(size_bytes)
                    b = self._last  # (other appends went on while it waited)
                limits = self._topic_bytes_max
                bytes_max = limits.get(topic, self._bytes_max) if limits else self._bytes_max
                last = b
                if b.partition != partition or b.topic != topic:
                    b = self._last = self._open.get((topic, partition), _NO_BATCH)
                if b is _NO_BATCH or b.size_bytes + size_bytes > bytes_max:
                    b, wake = self._next_batch(b, topic, partition, timestamp_ms)
                    opened = True
                else:
                    wake = opened = False
                # counted before it goes in, and given back if the add is cut: an exception a
                # signal handler raises as a call returns (a KeyboardInterrupt, in add_record or
                # after it) left the batch holding a record it did not count -- built with one
                # record more than its header says, which the leader stores and no consumer
                # can read, or (a batch of tuples) with every later record's future one short
                index = b.record_count
                b.record_count = index + 1
                run = b.run_values
                try:
                    if (run is not None and timestamp_ms == b.run_timestamp_ms and size_bytes == b.run_record_bytes
                            and key is None and headers is None):
                        run.append(value)  # the run goes on: the value alone
                    else:
                        b.add_record(timestamp_ms, key, value, headers, size_bytes)
                except BaseException:
                    b.hold_only(index)
                    raise
                size = b.size_bytes = b.size_bytes + size_bytes
                self._buffered_bytes += size_bytes
                if index + 1 >= self._records_max or size + size_bytes > bytes_max:  # no room for another
                    self._close_batch(b)
                    wake = True
                elif b is last and b.run_values and b.run_timestamp_ms == timestamp_ms \
                        and b.run_record_bytes == size_bytes > 0:
                    self._grant(b, bytes_max)  # (not at a batch's first record after another's)
            if on_delivery is not None:
                if b.callbacks is None:
                    b.callbacks = []
                b.callbacks.append((index, 1, on_delivery))
        if wake or (opened and ((self._idle is not None and self._idle((topic, partition)))
                                or (self._lingering is not None and self._lingering(b.created_ms + self.settings.linger_ms)))):
            mark("producer.queued")  # only where the record is handed on: nothing per record
            self._wake()  # outside the lock: the woken I/O thread takes it at once
        f = _new_future()
        f.batch = b
        f.index = index
        return f

    def _next_batch(self, b: BatchState, topic: str, partition: int, timestamp_ms: int) -> tuple[BatchState, bool]:
        """A new open batch of (``topic``, ``partition``), made ``_last``, for a record that
        does not fit in ``b``, its open batch (closed: handed on), or that has none
        (``_NO_BATCH``). Returns it and whether ``b`` was handed on. Caller holds the lock."""
        handed_on = b is not _NO_BATCH
        if handed_on:  # it does not fit: the open batch goes, the record starts the next one
            self._close_batch(b, overflow=True)
        b = self._last = self._open_batch(topic, partition, timestamp_ms)
        return b, handed_on

    def _grant(self, b: BatchState, bytes_max: int) -> None:
        """Let the run of ``b`` (the last batch appended to) take as many more records of its
        size on ``append``'s short path as it could take one by one without closing the
        batch or waiting for buffer space: their bytes are reserved now, in the batch and the
        buffer, so that the short path checks nothing but the room left. Caller holds the lock."""
        record_bytes = b.run_record_bytes
        room = min(self._records_max - b.record_count - 1,      # the record that fills it closes it: not short
                   (bytes_max - b.size_bytes) // record_bytes - 1,  # likewise
                   (self._buffer_max - self._buffered_bytes) // record_bytes)
        if room > 0 and not self._space_waiters:  # space that frees goes to an append waiting for it
            b.run_records_end = b.record_count + room
            b.size_bytes += room * record_bytes
            self._buffered_bytes += room * record_bytes

    def _settle(self) -> None:
        """Give back what the last batch's run was granted and did not use (``_grant``), so
        that its ``size_bytes`` and the buffer count only records. Every locked section but
        ``append``'s short path calls it first: only the last batch holds a grant. Caller
        holds the lock."""
        b = self._last
        room = b.run_records_end - b.record_count
        if room > 0:
            b.run_records_end = 0
            unused = room * b.run_record_bytes
            b.size_bytes -= unused
            self._buffered_bytes -= unused

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
        due_ms = None  # (linger above 0) when the first batch opened falls due: the sender may sleep past it
        i, n = 0, len(values)
        bytes_max = self._topic_bytes_max.get(topic, self._bytes_max)
        smallest = max(1, sizes if isinstance(sizes, int) else min(sizes, default=1))
        try:
            while i < n:
                if wake:  # a batch this call filled goes now (outside the lock), not when a long call returns
                    self._wake()
                    wake = False
                with self._lock:
                    if self._closed:
                        raise ProducerClosedError()
                    self._settle()
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
                        elif due_ms is None:
                            due_ms = b.created_ms + self.settings.linger_ms
                    b.seal_records()
                    b.chunks += pack(i, i + k)
                    b.chunk_records += k
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
        except (BufferExhaustedError, ProducerClosedError) as e:
            e.segments = segments  # type: ignore[attr-defined]
            raise
        finally:
            if wake or (opened and any(map(self._idle, opened))) \
                    or (due_ms is not None and self._lingering is not None and self._lingering(due_ms)):  # type: ignore[arg-type]
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
        assert b.run_records_end <= b.record_count, "a batch closed with room granted: its bytes were not settled"
        # no longer ``_last`` before the first call: an exception a signal raises as a call
        # returns left the closed batch there, and the next append of its partition went on
        # filling it -- after the sender may have built and sent it
        if self._last is b:
            self._last = _NO_BATCH
        del self._open[(b.topic, b.partition)]
        self._closed_batches.append(b)
        if not overflow and self.sticky.get(b.topic) == b.partition:
            del self.sticky[b.topic]

    def set_partition_counts(self, counts: dict[str, int]) -> None:
        """Each topic's partitions in the newest metadata; replaces the previous table. A sticky
        partition a topic no longer has (deleted and re-created with fewer) is dropped: the next
        keyless record chooses again below the new count (the open batch of the old partition is
        left to close and fail in the sender, as the records already in it would)."""
        with self._lock:
            self._partition_counts = counts
            for topic, p in list(self.sticky.items()):
                if p >= counts.get(topic, p + 1):
                    del self.sticky[topic]

    def set_topic_bytes_max(self, limits: dict[str, int]) -> None:
        """Per topic, a batch bound below ``batch_bytes_max`` (the topic's largest batch the
        leader takes, less the batch's own overhead); replaces the previous table."""
        with self._lock:
            self._settle()  # (room was granted under the old bound)
            self._topic_bytes_max = {t: min(v, self._bytes_max) for t, v in limits.items()}

    def _wait_for_space(self, size_bytes: int) -> None:
        """Caller holds the lock, and ``_last`` no room granted (none is while it waits:
        ``_grant``). Raises ``BufferExhaustedError`` at once on the thread that
        frees space (``frees_space``): it would wait for itself."""
        if self._frees_space is not None and self._frees_space():
            raise BufferExhaustedError(f"producer buffer of {self.settings.buffer_bytes_max} bytes is full, and a "
                                       "send on the producer's I/O thread (a delivery callback) cannot wait for "
                                       "space: only that thread frees it")
        deadline = time.monotonic() + self.settings.max_block_ms / 1000
        self._wake()
        self._space_waiters += 1
        try:
            while self._buffered_bytes + size_bytes > self._buffer_max:
                if self._closed:  # (``close`` wakes the wait)
                    raise BufferExhaustedError("the producer was closed while the record waited for buffer space: "
                                               "not sent, nothing written")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BufferExhaustedError(f"producer buffer of {self.settings.buffer_bytes_max} bytes is full")
                self._space.wait(left)
        finally:
            self._space_waiters -= 1

    def close_all(self) -> list[BatchState]:
        """Close every open batch (``flush``); returns every batch not yet finished."""
        with self._lock:
            # in this order, each step whole before the next call (where a signal's exception
            # may land: a Ctrl-C in flush): room given back and ``_last`` let go before the
            # batches move, and no batch both open and closed -- an exception between moving
            # them and clearing ``_open`` had the next send fill a batch the sender then took
            # (and built, and sent) twice
            self._settle()
            self._last = _NO_BATCH
            opened = list(self._open.values())
            self._open = {}
            self._closed_batches.extend(opened)
            self.sticky.clear()
            return list(self._unfinished)

    def take_ready(self, now_ms: int, busy: Container[tuple[str, int]] = ()) -> list[BatchState]:
        """Closed batches, plus open ones whose linger has passed (all of them once closed).
        An open batch of a ``busy`` partition (one the sender cannot send to before a reply)
        stays open and keeps filling until it is full or the partition is free, as Kafka's
        muted partitions do: closing it would only queue a small batch behind the request."""
        linger = self.settings.linger_ms
        first = None  # created_ms of the first batch left open of a partition not busy
        with self._lock:
            self._settle()
            for tp, b in list(self._open.items()):
                free = tp not in busy  # asked once per open batch (``Busy`` notes each it answers busy)
                if (free and now_ms - b.created_ms >= linger) or self._closed:
                    del self._open[tp]
                    self._closed_batches.append(b)
                    self.sticky.pop(tp[0], None)
                    if self._last is b:
                        self._last = _NO_BATCH
                elif free and (first is None or b.created_ms < first):
                    first = b.created_ms
            self.next_due_ms = None if first is None else first + linger
            out = list(self._closed_batches)
            self._closed_batches.clear()
        return out

    def release(self, batch: BatchState) -> None:
        """The batch is finished (acknowledged or failed): free its buffer space."""
        with self._lock:
            self._buffered_bytes -= batch.size_bytes
            self._unfinished.discard(batch)
            if self._space_waiters:  # (a Python-level call under the lock otherwise, per batch)
                self._space.notify_all()

    def close(self) -> None:
        """No more appends (``ProducerClosedError``; one waiting for space gets
        ``BufferExhaustedError``); ``take_ready`` hands out every open batch. Whoever ends the
        producer closes the accumulator before its last ``take_ready``, so that a record is
        either taken (and failed) with the rest or refused -- never queued after it, its future
        done by nobody (``Producer.send`` checks "closed" before it appends, outside the lock)."""
        with self._lock:
            self._closed = True
            self._settle()
            self._last = _NO_BATCH  # the short path, which does not look at the flag, ends here
            self._space.notify_all()
