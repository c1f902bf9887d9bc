"""A replica's state rebuilt from its log when it opens (``Partition.__init__``): the idempotent
producers' state, from the newest valid producer-state snapshot (nodes/broker/producer_snapshots.py)
and the log's batches after it -- all of them, however many -- or, without a valid snapshot
(none written yet: an older data directory, the memory engine; damaged; stale), from the last
PRODUCER_STATE_SCAN_RECORDS_MAX records' batches as before snapshots. Each batch read has its
leader epoch checked against the epoch checkpoint on the way: a batch whose epoch cannot be right
(``epochs.epoch_contradiction``: the field is outside the batch CRC) cuts the log there, as
recovery cuts a batch whose CRC fails (the snapshots above the cut are deleted first).

A table restored from a snapshot keeps its ``forgot_below``: a complete table stays complete
though the log start has moved since (retention), as Kafka keeps producer state through
retention. Without a snapshot, a read that began past the log start may have missed producers
whose batches lie below where it began. Either way the table then learns the log start: one at
or past ``forgot_below`` leaves no batch of a forgotten producer in the log (once it is durable:
``learn_log_start``, also after retention).

Runs on the thread that opens the partition, before it is served."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Iterator

from engines import batch as B
from engines.api import EngineError
from nodes.broker.epochs import epoch_contradiction
from nodes.broker.producer_snapshots import LastBatch, Snapshot, SnapshotError

if TYPE_CHECKING:
    from nodes.broker.partition import Partition

log = logging.getLogger(__name__)

PRODUCER_STATE_SCAN_RECORDS_MAX = 500_000  # without a snapshot: rebuild from this much tail
READ_CHUNK_BYTES = 4 * 1024 * 1024
LAST_BATCH_READ_BYTES = 1  # engine.read returns at least the whole batch holding the offset


def tail_start(part: Partition) -> int:
    """Where the tail read at open begins when no snapshot is used."""
    return max(part.log_start_offset, part.log_end_offset - PRODUCER_STATE_SCAN_RECORDS_MAX)


def tail_headers(part: Partition, start: int) -> Iterator[B.BatchHeader]:
    """Headers of the log's batches from ``start`` (a batch boundary) to its end, oldest first."""
    offset = start
    end = part.log_end_offset
    while offset < end:
        data = part.engine.read(offset, READ_CHUNK_BYTES)
        if not data:
            return
        for h, _ in B.iter_batches(data):
            yield h
            offset = h.next_offset


def last_batch(part: Partition, offset: int) -> LastBatch | None:
    """The batch ending at ``offset`` in ``part``'s log (None: no batch ends there, or it is
    before the log start). Raises EngineError."""
    if not part.log_start_offset < offset <= part.log_end_offset:
        return None
    for h, _ in B.iter_batches(part.engine.read(offset - 1, LAST_BATCH_READ_BYTES)):
        return LastBatch(h.base_offset, h.leader_epoch, h.crc) if h.next_offset == offset else None
    return None


def restore_snapshot(part: Partition) -> Snapshot | None:
    """Restore ``part``'s producer table from the newest snapshot valid for its log (none:
    None, the table untouched). Snapshots above the log end (recovery cut what they cover) and
    those that fail their check (stale, or at or below the log start) are deleted; damaged ones
    are skipped (and go when newer ones are written). Raises EngineError."""
    snapshots = part.producer_snapshots
    if snapshots is None:
        return None
    for offset in [o for o in snapshots.offsets if o > part.log_end_offset]:
        _forget(part, offset, "above the log end")
    for offset in reversed(list(snapshots.offsets)):
        try:
            snapshot = snapshots.load(offset)
        except SnapshotError as e:
            log.warning("%s-%d: producer snapshot at offset %d ignored: %s", part.topic, part.partition, offset, e)
            continue
        found = last_batch(part, offset)
        if found != snapshot.last_batch:
            # a log cut and written again since (a crash between the cut and the deletion), or
            # one whose start retention deleted past it: not this log's state
            _forget(part, offset, f"it ends with batch {snapshot.last_batch}, the log with {found}")
            continue
        part.producers.restore(snapshot.producers, snapshot.forgot_below, snapshot.offset)
        return snapshot
    return None


def _forget(part: Partition, offset: int, why: str) -> None:
    """Delete a snapshot that does not describe ``part``'s log. One that cannot be deleted is
    only logged: it fails the same check at the next open (or describes the log again)."""
    log.warning("%s-%d: producer snapshot at offset %d not used, deleted: %s", part.topic, part.partition, offset, why)
    try:
        part.producer_snapshots.delete(offset)  # type: ignore[union-attr]
    except EngineError as e:
        log.error("%s-%d: %s", part.topic, part.partition, e)


def recover_tail(part: Partition) -> int:
    """Rebuild ``part``'s producer state from its newest valid snapshot and the log after it, or
    from its log's tail, cutting the log at the first batch whose leader epoch contradicts the
    checkpoint. Returns the offset of the snapshot restored (-1: none). Raises EngineError."""
    snapshot = restore_snapshot(part)
    if snapshot is not None:
        start, previous = snapshot.offset, snapshot.last_batch.leader_epoch
    else:
        start, previous = tail_start(part), -1
        # producers that wrote only before the tail read here are unknown to the table (none
        # when the read begins at the log start: the log holds nothing before it)
        part.producers.truncate(forgot_below=start)
    checkpoint = list(part.epochs.entries)
    for h in tail_headers(part, start):
        problem = epoch_contradiction(checkpoint, h.leader_epoch, h.base_offset, previous)
        if problem is not None:
            log.warning("%s-%d: recovery cuts the log at offset %d (was %d): %s", part.topic,
                        part.partition, h.base_offset, part.log_end_offset, problem)
            if part.producer_snapshots is not None:
                part.producer_snapshots.delete_above(h.base_offset)
            part.engine.truncate_to(h.base_offset)
            part.epochs.truncate_from_end(part.log_end_offset)
            break
        previous = h.leader_epoch
        part.record_appended([h])
    learn_log_start(part)
    return -1 if snapshot is None else snapshot.offset


def learn_log_start(part: Partition) -> None:
    """``part``'s producer table learns its log start (after retention, at open), made durable
    first when it clears ``forgot_below``: a segment's removal survives a power loss only once
    its directory is fsynced (under fsync interval/never at the next flush; an open need
    not fsync it), an lmdb delete once the env is synced. Until then a power loss can bring back a
    forgotten producer's batches, under a table -- and a snapshot written meanwhile -- that no
    longer refuses their retries: a retry written twice. A flush refused (EngineError: a full
    disk, a closed engine) keeps ``forgot_below``: the refusals go on, the next retention tries
    again. Raises StorageFailed (a failed fsync: the node stops, as for any)."""
    start = part.log_start_offset
    if not part.producers.cleared_by(start):
        return
    try:
        part.engine.flush()
    except EngineError as e:
        log.error("%s-%d: the log start %d is not durable, forgotten producers stay below %d: %s", part.topic,
                  part.partition, start, part.producers.forgot_below, e)
        return
    part.producers.log_start_moved(start)
