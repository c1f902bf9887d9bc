"""A produced batch's state and the futures that read it: ``BatchState`` (one batch of a
partition: its records until it is built, then its outcome and the waiters on it),
``RecordFuture`` (one ``send``'s record: a batch and an index in it), ``RecordFutures`` (one
``send_many``'s records: runs of them in batches) and ``RecordMetadata`` (where a record landed).

The accumulator (fabric/client/accumulator.py) fills batches; the sender's I/O thread completes
them (``complete``, ``complete_from_pieces`` for a batch sent split); the application waits on
the futures. A future is two slots (its batch and its index there), made without Python-level
code on the hot path (``QueuedFuture``).

Thread-safety: a batch is completed once, on the sender's thread, and read-only after its event
is set; the futures only read. A wait on that thread (a delivery callback, an ``on_complete``
hook) for a batch not yet complete would wait for itself: it raises ``FabricError`` at once.
"""

from __future__ import annotations

import logging
import threading
import time
from itertools import repeat
from operator import itemgetter
from typing import Callable, Sequence

from fabric.client.completion import Completion
from fabric.errors import ClientTimeoutError, FabricError, RemoteError
from fabric.records import build_batch, build_batch_from_chunks, pack_records, pack_values

log = logging.getLogger(__name__)
_timestamp = itemgetter(0)

# a run of values shorter than this whose next record has another timestamp (but for its batch's
# first run) ends runs for the batch (``BatchState.add_record``): packing a run costs about as
# much as this many tuples
RUN_RECORDS_MIN = 16

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
                 "chunks", "chunk_records", "record_count", "first_timestamp_ms", "max_timestamp_ms", "completions",
                 "pieces", "parent", "parent_lo", "offsets", "errors", "numbered_in", "on_io_thread",
                 "run_values", "run_timestamp_ms", "run_record_bytes", "run_records_end", "position", "attempts",
                 "retry_at_ms", "refused_by")

    def __init__(self, topic: str, partition: int, created_ms: int, first_timestamp_ms: int = -1) -> None:
        self.topic = topic
        self.partition = partition
        self.records: list[tuple] = []  # (timestamp_ms, key, value, headers) appended after the chunks
        self.chunks: list[bytes] = []   # pieces of packed runs of records (fabric.records), in order
        self.chunk_records = 0          # the records packed in ``chunks``
        # the values alone of the keyless, header-less records of one timestamp and one size
        # appended after the chunks (``add_record``): no tuple per record, and one join packs
        # them (``pack_values``); None once another record made the batch keep ``records``
        self.run_values: list[bytes] | None = []
        self.run_timestamp_ms = first_timestamp_ms
        self.run_record_bytes = -1      # the size ``append`` counted for each record of the run
        # the record count up to which the run may take records on ``append``'s short path,
        # their bytes reserved in ``size_bytes`` and the accumulator's buffer
        # (``RecordAccumulator._grant``); at or under ``record_count``: no room
        self.run_records_end = 0
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
        self.position: tuple | None = None  # its place in its partition's order, from its first send
        #                                     (a piece of a split batch: its batch's, then its index)
        # sent again after a retriable answer: how many times, and not before ``retry_at_ms``
        # (the sender's clock) while its partition's leader is still ``refused_by`` (endpoint,
        # leader epoch): the retry backoff (fabric.client.sender_replies)
        self.attempts = 0
        self.retry_at_ms = 0
        self.refused_by: tuple[str, int] | None = None
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
        # True on the thread that completes the batch (the producer's I/O thread), which must
        # never wait for it; None: no thread is known (a batch built outside a producer)
        self.on_io_thread: Callable[[], bool] | None = None

    def wait(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` seconds (None: for ever) until the batch is complete; False if
        it is not by then. Raises ``FabricError`` at once on the thread that completes it."""
        if self.event.is_set():
            return True
        if self.on_io_thread is not None and self.on_io_thread():
            raise FabricError("waiting for a record's outcome on the producer's I/O thread (in a delivery callback or "
                              "on_complete hook) would wait for that thread itself: it is not known yet")
        return self.event.wait(timeout)

    def add_record(self, timestamp_ms: int, key: bytes | None, value: bytes, headers: tuple | None,
                   size_bytes: int) -> None:
        """Add one record at the end, counted as ``size_bytes``: to the run (``run_values``)
        if it can be one of it or start it, else as a tuple. ``append`` extends a run itself
        (the per-record path) and calls this for any other record. Keyless, header-less
        records counted alike must have values of one length (``Producer.send`` counts
        len(value) + RECORD_OVERHEAD_BYTES): a run is told apart by the size. A run cut short by
        a new timestamp (under ``RUN_RECORDS_MIN`` records, but for the batch's first run) ends
        runs for the batch: it keeps tuples from then on rather than pack a run per few
        records."""
        run = self.run_values
        if run is not None and key is None and headers is None:
            if not run:
                self.run_timestamp_ms, self.run_record_bytes = timestamp_ms, size_bytes
                run.append(value)
                return
            if size_bytes == self.run_record_bytes and timestamp_ms != self.run_timestamp_ms \
                    and (len(run) >= RUN_RECORDS_MIN or not self.chunks):  # (a batch's first run may be cut short)
                self._seal_run()
                self.run_values, self.run_timestamp_ms = [value], timestamp_ms
                return
        if run is not None:
            self._seal_run()
            self.run_values = None
        self.records.append((timestamp_ms, key, value, headers))

    def _seal_run(self) -> None:
        """Pack the run's values into a chunk."""
        run = self.run_values
        if run:
            if self.run_timestamp_ms > self.max_timestamp_ms:
                self.max_timestamp_ms = self.run_timestamp_ms
            length = len(run[0])  # every value's: their sizes were counted alike (``add_record``)
            assert len(run[-1]) == length, "a run's records were counted alike for values of other lengths"
            packed, count = pack_values(run, self.run_timestamp_ms, length), len(run)
            # no call from here until the run is emptied: a signal's exception lands only after
            # a call returns, and must find the records either in the run or in a chunk
            self.chunks += packed
            self.chunk_records += count
            self.run_values = []

    def seal_records(self) -> None:
        """Pack the records ``append`` added into a chunk (before a packed run follows them)."""
        self._seal_run()
        if self.records:
            self.max_timestamp_ms = max(self.max_timestamp_ms, max(map(_timestamp, self.records)))
            packed, count = pack_records(self.records), len(self.records)
            self.chunks += packed  # (no call until the records are emptied: ``_seal_run``)
            self.chunk_records += count
            self.records = []

    def hold_only(self, count: int) -> None:
        """Hold and count ``count`` records again, after an add of record ``count`` that an
        exception cut (a signal handler's, raised as a call returned: ``append`` counts a
        record before it adds it): the record goes if it went in -- the last one of the run
        or of ``records`` -- so that the batch holds exactly the records it counts, and the
        ``send`` that raised queued nothing."""
        run = self.run_values
        if self.chunk_records + len(self.records) + (len(run) if run else 0) > count:
            if run:
                run.pop()
            else:
                self.records.pop()
        self.record_count = count

    def build(self, *, compression: int, producer_id: int, producer_epoch: int, base_sequence: int) -> bytes:
        """The batch's bytes (may be called again: after a producer-id reset it is renumbered)."""
        if not self.chunks and not self.run_values:
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
            c.records, c.record_count, c.run_values = records[lo:hi], hi - lo, None
            c.parent, c.parent_lo = top, self.parent_lo + lo
            c.deadline_ms, c.last_error = self.deadline_ms, self.last_error
            c.sequence = (self.sequence + lo) & 0x7FFFFFFF if self.sequence >= 0 else -1
            c.data = c.build(compression=compression, producer_id=producer_id, producer_epoch=producer_epoch,
                             base_sequence=c.sequence)
            pieces.append(c)
        if top.pieces is None:
            top.pieces = pieces
            top.records, top.chunks, top.run_values, top.data = [], [], None, None  # the pieces hold the records now
            top.chunk_records = 0
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
        self.chunk_records = 0
        self.run_values = None
        self.data = None
        self.event.set()
        if self.callbacks:
            # let go of them too: a callback that refers to its future (or to what refers to
            # it) closes a cycle through this batch
            callbacks, self.callbacks = self.callbacks, None
            for first, count, cb in callbacks:
                for index in range(first, first + count):
                    offset, err = self.outcome(index)
                    try:
                        cb(None if err else RecordMetadata(self.topic, self.partition, offset), err)
                    except Exception:  # the application's callback: logged, the other callbacks still run
                        log.exception("delivery callback failed")
        if self.completions:
            completions, self.completions = self.completions, None
            # let go of them: a hook's Completion holds its call's RecordFutures, which hold
            # this batch -- a cycle that kept the batch, the hook and whatever the hook refers
            # to (the producer service's whole request) until a cyclic collection
            for c in completions:
                c.release()


class RecordFuture:
    """The future result of one ``send``: ``result()`` returns RecordMetadata or raises.
    ``batch`` is the batch that holds the record, ``index`` its place there (read-only).

    ``send`` makes one per record, so it is made the cheapest way Python has: a class with
    two slots and no Python-level ``__init__`` (``QueuedFuture``, the type ``send`` returns),
    its slots stored by the caller -- half the cost of a tuple subclass built by
    ``tuple.__new__``."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: BatchState, index: int) -> None:
        self.batch = batch
        self.index = index

    @property
    def partition(self) -> int:
        """The partition the record was queued for (known at once; delivery keeps it)."""
        return self.batch.partition

    def done(self) -> bool:
        return self.batch.event.is_set()

    def result(self, timeout: float | None = None) -> RecordMetadata:
        """Raises ``ClientTimeoutError`` if the outcome is not known within ``timeout`` seconds
        (the record may still be delivered), else the delivery's error, if any; ``FabricError``
        at once on the producer's I/O thread (a delivery callback) when the outcome is not known
        yet, since only that thread can complete it."""
        b = self.batch
        if not b.wait(timeout):
            raise ClientTimeoutError("no acknowledgement yet")
        if b.errors is not None:
            offset, error = b.outcome(self.index)
            if error is not None:
                raise error
            return RecordMetadata(b.topic, b.partition, offset)
        if b.error is not None:
            raise b.error
        return RecordMetadata(b.topic, b.partition, _offset(b.base_offset, self.index))

    def exception(self, timeout: float | None = None) -> Exception | None:
        """The delivery's error, or None when the record was delivered. Raises
        ``ClientTimeoutError`` (a ``TimeoutError``, as ``concurrent.futures.Future.exception``)
        if the outcome is not known within ``timeout`` seconds -- never None then: the record
        may not be written -- and ``FabricError`` on the I/O thread, as ``result`` does."""
        b = self.batch
        if not b.wait(timeout):
            raise ClientTimeoutError("no acknowledgement yet")
        return b.error if b.errors is None else b.errors[self.index]


class QueuedFuture(RecordFuture):
    """A ``RecordFuture`` made by ``RecordAccumulator.append``: ``QueuedFuture()`` runs no
    Python code (object's own ``__init__``), and the caller stores both slots."""

    __slots__ = ()
    __init__ = object.__init__  # type: ignore[assignment]


Segment = tuple  # (BatchState, first index in it, record count): where a run of records went


class RecordFutures:
    """The outcome of one ``send_many``: the records in the order they were given.

    ``len(f)``; ``f[i]`` is record i's ``RecordFuture``; ``done()``; ``result(timeout)`` waits
    for every record and returns their ``RecordMetadata`` in order, or raises the first
    delivery error (``ClientTimeoutError`` when not all are known within ``timeout`` seconds);
    ``exception(timeout)`` returns that error or None (all delivered), and raises
    ``ClientTimeoutError`` as ``result`` does; ``outcomes(timeout)`` gives every
    record's position, partition, offset and error as lists, and ``positions`` where each
    record was in the caller's list. Each wait raises ``FabricError`` at once on the
    producer's I/O thread (a delivery callback) when an outcome is not known yet, since only
    that thread can complete it. Thread-safe (read-only after creation)."""

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
            if not b.wait(left):
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


def _offset(base_offset: int, index: int) -> int:
    """-1 when the broker did not say (acks=0)."""
    return base_offset + index if base_offset >= 0 else -1
