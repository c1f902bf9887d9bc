"""Idempotent-producer state of one partition replica.

Per producer id: its epoch and the last few batches it wrote (sequence range and offsets), so
a broker recognises a retried batch and answers with the original offsets instead of writing
it twice, and rejects a sequence that skips ahead. Restored on open from the newest valid
producer-state snapshot (nodes/broker/producer_snapshots.py: at clean close and periodically)
and the log's batch headers after it, or, without one, rebuilt from the headers of the log's
tail (nodes/broker/tail_recovery.py); replicated implicitly (followers apply the same
headers). Not thread-safe.

Sequences are 31-bit and wrap from SEQUENCE_MAX to 0, as Kafka's (the client numbers batches
modulo 2**31): every comparison here is modulo 2**31, so the 2**31-th record of a producer is
in sequence, not an "old duplicate". The table holds at most PRODUCERS_MAX producers and evicts
the least recently used one (a check or an update is a use). There is no expiry by time
(Kafka's producer.id.expiration.ms): a producer stays, through retention and restarts (the
snapshots), until the LRU bound evicts it or a truncation removes every batch remembered of it.

A producer the table does not know is taken at any sequence (its first batch here, or state
that expired) -- unless the table may have forgotten a producer whose batches are still in the
log and the client says an earlier send of the batch may have been written (it got no answer
for it, or one with a base offset: a write refused after the fact). Such a retry may already be
in the log, where the table can no longer see it: it is refused with unknown_producer_id
(written neither twice nor silently), and the client fails the batch. A batch no broker can
have written (a first send, or every earlier send refused before any write) is taken as before.

What the table may have forgotten is one offset, ``forgot_below``: every batch of a producer it
may have forgotten lies below it (0: none forgotten). An eviction forgets below the batch being
recorded (the evicted producer wrote before it); a rebuild at open without a valid snapshot,
below where it began reading the log; a snapshot restored, below the snapshot's own
``forgot_below`` (an older snapshot's flag, or producers dropped over PRODUCERS_MAX: below the
snapshot's offset). A follower's log reset forgets nothing: the log holds nothing before its new
start, and the table learns everything after it. ``forgot_below`` only moves up (a cut of the
log keeps it), and clears once the log start reaches it (``log_start_moved``: retention, the
open; that log start made durable first, nodes/broker/tail_recovery.py ``learn_log_start``):
then no batch of a forgotten producer is left in the log, and an unknown producer's retry
cannot be a duplicate of one the log holds. (A retry of a batch retention has deleted is
then written again, as it is by a table that never knew its producer.) Without the offset, one
eviction, reset or rebuild past offset 0 refused every such retry for the partition's life.

A batch the client says ``follows`` another of its partition it has had no answer for
(P.PART_FOLLOWS) is refused out of order: that one was not written here (the table would know
the producer), and this one must not be written ahead of it (fabric/client/sender_flights.py).
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from fabric import protocol as P
from fabric.errors import RemoteError

# A retried request can hold up to this many batches of one partition (the client caps it at
# fabric.client.sender.PARTITION_BATCHES_MAX), so that many must be recognisable as duplicates.
BATCHES_REMEMBERED = 32
PRODUCERS_MAX = 10_000
SEQUENCE_MAX = 2**31 - 1  # sequences wrap from here to 0 (as Kafka's)
_SEQUENCE_MODULUS = SEQUENCE_MAX + 1
# A sequence at most this far behind the expected one is an old duplicate; anything else that
# is not the expected sequence is a gap (ahead of it, modulo 2**31).
_DUPLICATE_DISTANCE_MAX = _SEQUENCE_MODULUS // 2


def sequence_add(sequence: int, increment: int) -> int:
    """``sequence + increment`` modulo 2**31 (the wrap of Kafka's DefaultRecordBatch)."""
    return (sequence + increment) % _SEQUENCE_MODULUS


@dataclass(slots=True)
class _Entry:
    epoch: int
    # (base_sequence, last_sequence, base_offset)
    batches: deque = field(default_factory=lambda: deque(maxlen=BATCHES_REMEMBERED))


class ProducerStateTable:
    def __init__(self) -> None:
        self._producers: OrderedDict[int, _Entry] = OrderedDict()  # least recently used first
        # every batch of a producer the table may lack (evicted, or only in the part of the
        # log not read when the table was rebuilt) lies below this offset; 0: none. While the
        # log holds anything below it, an unknown producer's retry cannot be judged
        self.forgot_below = 0
        # a leader's write in progress (begin_write): each producer's entry as it was before
        # the write first changed it (None: absent), the entries evicted, and forgot_below
        self._saved: dict[int, _Entry | None] | None = None
        self._evicted: list[tuple[int, _Entry]] = []
        self._forgot_saved = 0

    def begin_write(self) -> None:
        """A leader records its batches before writing them (several batches of one producer in
        one write must see each other): what changes from here is undone by ``undo_write`` if
        the write fails, kept by ``end_write``."""
        self._saved, self._evicted, self._forgot_saved = {}, [], self.forgot_below

    @property
    def writing(self) -> bool:
        """Between ``begin_write`` and its end: the table may name batches not written (yet,
        or ever: a write stopped by an exception that stops the node)."""
        return self._saved is not None

    def end_write(self) -> None:
        self._saved = None
        self._evicted = []

    def undo_write(self) -> None:
        """The write failed: the table as it was at ``begin_write`` -- an entry replaced by a
        new producer epoch, batches pushed out of a producer's window, producers evicted. (Only
        cutting the failed batches lost what they replaced: a producer's earlier epoch with its
        batches, so that a retry of one of them was written twice.)"""
        assert self._saved is not None, "undo_write without begin_write"
        for producer_id, entry in self._saved.items():
            if entry is None:
                self._producers.pop(producer_id, None)
            else:
                self._producers[producer_id] = entry
        for producer_id, entry in reversed(self._evicted):
            self._producers[producer_id] = entry
            self._producers.move_to_end(producer_id, last=False)  # least recently used again
        self.forgot_below = self._forgot_saved
        self.end_write()

    @property
    def forgot_producers(self) -> bool:
        """The table may lack a producer whose batches are in the log."""
        return self.forgot_below > 0

    def cleared_by(self, log_start_offset: int) -> bool:
        """Whether a log start at ``log_start_offset`` leaves no batch of a forgotten producer
        in the log (``log_start_moved`` would clear ``forgot_below``)."""
        return 0 < self.forgot_below <= log_start_offset

    def log_start_moved(self, log_start_offset: int) -> None:
        """The log now starts at ``log_start_offset`` (after retention, at open), durably (a
        deletion a power loss can undo would bring the forgotten batches back under a table
        that no longer refuses their retries): at or past ``forgot_below``, no batch of a
        forgotten producer is left in it. Called where the log start moves, never per produce."""
        if self.cleared_by(log_start_offset):
            self.forgot_below = 0

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, producer_id: int, epoch: int, base_sequence: int, record_count: int,
              possibly_written: bool = True, follows: bool = False) -> int | None:
        """Before appending: return the base offset of an identical earlier batch (a retry:
        do not append), or None to append. ``possibly_written``: an earlier send of this batch
        may be in a log (False only when the client says none can be). ``follows``: the batch
        follows one of its partition its client has had no answer for (P.PART_FOLLOWS). Raises RemoteError:
        invalid_producer_epoch for a fenced epoch, out_of_order_sequence for a gap,
        duplicate_sequence for a batch behind the last one that is no longer remembered (never
        appended, never a success), unknown_producer_id for a batch possibly written before by a
        producer the table may have forgotten; out_of_order_sequence also for a batch that
        ``follows`` another of a producer the table does not know: that one was not written
        (or this one would find it), and this one must not go ahead of it."""
        if producer_id < 0:
            return None
        entry = self._producers.get(producer_id)
        if entry is None:
            if follows:
                raise RemoteError(P.OUT_OF_ORDER_SEQUENCE, f"producer {producer_id}: sequence {base_sequence} follows a "
                                  "batch not written here (the producer is not known): send it again after that one")
            if possibly_written and self.forgot_below:
                raise RemoteError(P.UNKNOWN_PRODUCER_ID, f"producer {producer_id}: this broker no longer holds its "
                                  "state, so a batch possibly written before cannot be told from one in the log")
            return None  # first batch we see from it (or state expired): accept any sequence
        self._producers.move_to_end(producer_id)
        if epoch < entry.epoch:
            raise RemoteError(P.INVALID_PRODUCER_EPOCH, f"producer {producer_id} epoch {epoch} is older than {entry.epoch}")
        if epoch > entry.epoch:
            return None if base_sequence == 0 else _gap(producer_id, base_sequence, 0)
        last_seq = sequence_add(base_sequence, record_count - 1)
        for b_first, b_last, b_offset in entry.batches:
            if b_first == base_sequence and b_last == last_seq:
                return b_offset
        expected = sequence_add(entry.batches[-1][1], 1) if entry.batches else 0
        if base_sequence != expected:
            if 0 < (expected - base_sequence) % _SEQUENCE_MODULUS <= _DUPLICATE_DISTANCE_MAX:
                raise RemoteError(P.DUPLICATE_SEQUENCE, f"producer {producer_id}: sequence {base_sequence} is an old duplicate")
            _gap(producer_id, base_sequence, expected)
        return None

    def update(self, producer_id: int, epoch: int, base_sequence: int, record_count: int, base_offset: int) -> None:
        """After appending (leader) or replicating (follower) a batch."""
        if producer_id < 0 or base_sequence < 0:
            return
        entry = self._producers.get(producer_id)
        if self._saved is not None and producer_id not in self._saved:  # a leader's write: kept for undo_write
            self._saved[producer_id] = None if entry is None else \
                _Entry(entry.epoch, deque(entry.batches, maxlen=BATCHES_REMEMBERED))
        if entry is None or epoch > entry.epoch:
            if entry is None and len(self._producers) >= PRODUCERS_MAX:
                evicted = self._producers.popitem(last=False)  # evict the least recently used
                if self._saved is not None and evicted[0] not in self._saved:
                    self._evicted.append(evicted)  # (one this write touched: _saved has it as it was)
                # it wrote before this batch: updates come in log order (a leader's write
                # records its batches at the offsets the append gives them, or is undone)
                self.forgot_below = max(self.forgot_below, base_offset)
            entry = self._producers[producer_id] = _Entry(epoch)
        self._producers.move_to_end(producer_id)
        entry.batches.append((base_sequence, sequence_add(base_sequence, record_count - 1), base_offset))

    def export(self) -> list[tuple[int, int, Sequence[tuple[int, int, int]]]]:
        """Every producer as (producer_id, epoch, its remembered batches as (base_sequence,
        last_sequence, base_offset)), least recently used first (the order ``restore`` takes):
        what a producer-state snapshot holds (nodes/broker/producer_snapshots.py). The batches
        are the table's own: read them before the table changes. Not during a leader's write."""
        assert self._saved is None, "export during a write"
        return [(pid, e.epoch, e.batches) for pid, e in self._producers.items()]

    def restore(self, producers: Iterable[tuple[int, int, Sequence[tuple[int, int, int]]]],
                forgot_below: int, taken_at: int) -> None:
        """The table as ``export`` gave it (from a snapshot taken at log end ``taken_at``) and
        its ``forgot_below``; what was in the table is dropped. Only the newest
        BATCHES_REMEMBERED batches of a producer and the PRODUCERS_MAX most recently used
        producers are kept (a snapshot written with larger limits); a producer dropped wrote
        below ``taken_at``, so ``forgot_below`` is then at least that."""
        self._producers.clear()
        self.forgot_below = forgot_below
        for producer_id, epoch, batches in producers:
            self._producers[producer_id] = _Entry(epoch, deque(batches, maxlen=BATCHES_REMEMBERED))
            self._producers.move_to_end(producer_id)
            if len(self._producers) > PRODUCERS_MAX:
                self._producers.popitem(last=False)
                self.forgot_below = max(self.forgot_below, taken_at)

    def truncate(self, forgot_below: int = 0) -> None:
        """Forget every producer (the log was emptied, or is about to be re-read).
        ``forgot_below``: what the log held before it (or holds and is not read next) may
        have named producers that what is read next does not."""
        self._producers.clear()
        self.forgot_below = forgot_below

    def truncate_from(self, offset: int) -> None:
        """The log was cut at ``offset``: forget the batches at or after it. Cost: the batches
        forgotten plus one step per producer -- no log read (a full rebuild scanned up to
        500k records on the reactor at every follower truncation).

        A producer whose every remembered batch is forgotten is dropped: what it wrote before
        ``offset`` lies more than BATCHES_REMEMBERED batches back (or in an older producer
        epoch), beyond any retry the client can still have in flight, so it is treated like
        a producer whose state expired.

        ``forgot_below`` stays: a forgotten producer's batches below the cut are still in the
        log (only the log start passing it says they are gone)."""
        for producer_id in list(self._producers):
            batches = self._producers[producer_id].batches
            while batches and batches[-1][2] >= offset:
                batches.pop()
            if not batches:
                del self._producers[producer_id]


def _gap(producer_id: int, got: int, expected: int) -> None:
    raise RemoteError(P.OUT_OF_ORDER_SEQUENCE, f"producer {producer_id}: sequence {got}, expected {expected}")
