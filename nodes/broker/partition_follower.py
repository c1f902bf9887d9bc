"""A follower replica taking its leader's log: ``Partition``'s follower half. It appends the
leader's batches that continue its log (skipping what it holds, stopping at a gap), cuts a tail
that parted from the leader's (the divergence the leader's epoch cache names, KIP-320), restarts
an empty log past the leader's log start (after the leader's retention), and takes the leader's
high watermark, never past its own log end.

Producer and epoch state follow the log here as on the leader: recorded only after the engine
stored the batches they describe (also at open: nodes/broker/tail_recovery.py), trimmed when the
log is cut. Every method ends with the partition's own invariant check.

``PartitionFollowerMixin`` is that half of ``Partition``: its state is the partition's own (set
by ``Partition.__init__``). Not thread-safe: owned by the broker's reactor, with the Partition.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Callable

from engines import batch as B
from engines.api import EngineError
from fabric.buffers import Payload

if TYPE_CHECKING:
    from engines.api import Engine
    from nodes.broker.epochs import EpochCache
    from nodes.broker.producers import ProducerStateTable

log = logging.getLogger(__name__)


def _older_epoch(base_offset: int, leader_epoch: int, last_epoch: int) -> B.BatchError:
    return B.BatchError(f"batch at offset {base_offset} has leader epoch {leader_epoch}, older than {last_epoch} "
                        "before it")


class PartitionFollowerMixin:
    """``Partition``'s follower side: append, truncate, reset, the leader's HW. Part of Partition
    (its state is the partition's own; kept here so that what a follower does to its log reads
    together)."""

    # the partition's state this half uses (set by Partition.__init__)
    topic: str
    partition: int
    engine: Engine
    epochs: EpochCache
    producers: ProducerStateTable
    high_watermark: int
    _verified_kwargs: dict[str, bool]

    if TYPE_CHECKING:  # Partition's, never these
        @property
        def log_end_offset(self) -> int: ...
        @property
        def log_start_offset(self) -> int: ...
        def _check_offsets(self) -> None: ...
        def _before_write(self) -> None: ...
        def _delete_snapshots_above(self, offset: int) -> None: ...
        def _check_stored_at(self, end: int, record_counts: list[int], offsets: list[int],
                             stored: bool = True) -> None: ...

    def append_as_follower(self, data: Payload) -> int:
        """Append the leader's batches that continue our log; skip what we already have.
        Returns the number of batches appended. A bad batch (CRC, or a leader epoch older than
        one we already hold) raises BatchError and nothing of ``data`` is appended;
        StorageFull / EngineError from the engine, or from the epoch checkpoint of a new epoch,
        leave the log unchanged.

        Producer and epoch state are recorded only after the engine stored the batches they
        describe, so a failed write leaves no state naming offsets the log does not hold."""
        fresh: list[memoryview] = []
        headers: list[B.BatchHeader] = []
        end = start = self.log_end_offset
        last_epoch = self.epochs.latest_epoch
        for h, view in B.iter_batches(data, check_crc=True):
            if h.next_offset <= end:
                continue  # already have it
            if h.base_offset != end:
                break  # a gap: the next fetch repairs it
            if h.leader_epoch < last_epoch:
                # epochs never go down along a log: a damaged header, or not our leader's
                raise _older_epoch(h.base_offset, h.leader_epoch, last_epoch)
            last_epoch = h.leader_epoch
            fresh.append(view)
            headers.append(h)
            end = h.next_offset
        if fresh:
            self._write_fresh(start, fresh, [h.record_count for h in headers], [h.base_offset for h in headers],
                              lambda: self.record_appended(headers))
        return len(fresh)

    def append_batch_as_follower(self, data: Payload, fields: tuple, log_end_offset: int) -> int:
        """``append_as_follower`` of ``data`` that is exactly one whole batch whose raw header
        fields (``B.verify_fields``: its CRC verified) are ``fields``, our log end being
        ``log_end_offset``: the replication stream's common message, its header parsed once by
        the caller. The same decisions as ``append_as_follower`` takes for that batch: 0 when
        we hold it already or it does not start at our log end, BatchError when its leader
        epoch is older than our last, else it is appended (1). Raises as that method does."""
        base, leader_epoch = fields[B.F_BASE_OFFSET], fields[B.F_LEADER_EPOCH]
        if base + fields[B.F_RECORD_COUNT] <= log_end_offset or base != log_end_offset:
            return 0  # already have it, or not the next batch (the next fetch repairs a gap)
        last_epoch = self.epochs.latest_epoch
        if leader_epoch < last_epoch:
            raise _older_epoch(base, leader_epoch, last_epoch)
        self._write_fresh(log_end_offset, [data], [fields[B.F_RECORD_COUNT]], [base],
                          lambda: self._record_fields(fields))
        return 1

    def _write_fresh(self, start: int, fresh: list, record_counts: list[int], base_offsets: list[int],
                     record: Callable[[], None]) -> None:
        """Write the batches ``fresh`` (CRCs verified; of ``record_counts`` records at
        ``base_offsets``) that continue the log end ``start``, then ``record()`` their producer
        and epoch state; every method that appends as a follower ends here."""
        self._before_write()
        self._check_stored_at(start, record_counts, base_offsets, stored=False)
        offsets = self.engine.append_many(fresh, **self._verified_kwargs)  # the caller verified each CRC
        self._check_stored_at(start, record_counts, offsets)
        try:
            record()
        except EngineError:  # the epoch checkpoint could not be written: undo the append
            self._delete_snapshots_above(start)
            self.engine.truncate_to(start)
            self.epochs.truncate_from_end(start)
            self.producers.truncate_from(start)
            raise
        self._check_offsets()

    def record_appended(self, headers: list[B.BatchHeader]) -> None:
        """Producer and epoch state of batches the engine has stored (also at open:
        nodes/broker/tail_recovery.py)."""
        for h in headers:
            self.epochs.assign(h.leader_epoch, h.base_offset)
            self.producers.update(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count, h.base_offset)

    def _record_fields(self, fields: tuple) -> None:
        """``record_appended`` of one batch given as its raw header fields."""
        self.epochs.assign(fields[B.F_LEADER_EPOCH], fields[B.F_BASE_OFFSET])
        self.producers.update(fields[B.F_PRODUCER_ID], fields[B.F_PRODUCER_EPOCH], fields[B.F_BASE_SEQUENCE],
                              fields[B.F_RECORD_COUNT], fields[B.F_BASE_OFFSET])

    def truncate_to(self, offset: int) -> None:
        """Cut the log at ``offset`` (divergence found via the epoch cache)."""
        self._before_write()
        if offset >= self.log_end_offset:
            # nothing to cut, but an epoch we started with no batch in it (we led briefly and
            # wrote nothing) must go, or we would keep naming it as our last fetched epoch
            self.epochs.truncate_from_end(offset)
            return
        log.warning("%s-%d: truncating from %d to %d", self.topic, self.partition, self.log_end_offset, offset)
        # first: a crash after the cut must not find them (a snapshot is at a batch boundary,
        # so none lies inside the batch the cut may start at, below ``offset``)
        self._delete_snapshots_above(offset)
        self.engine.truncate_to(offset)
        self.epochs.truncate_from_end(self.log_end_offset)
        self.high_watermark = min(self.high_watermark, self.log_end_offset)
        self.producers.truncate_from(self.log_end_offset)
        self._check_offsets()

    def reset_to(self, offset: int) -> None:
        """Drop the whole log and restart it empty at ``offset`` (a follower whose log end is
        below the leader's log start after retention: Kafka's truncateFullyAndStartAt).
        Durable on return. Raises EngineError (the log is then unchanged or a prefix of it)."""
        log.warning("%s-%d: resetting the log [%d, %d) to start at %d", self.topic, self.partition,
                    self.log_start_offset, self.log_end_offset, offset)
        self._before_write()
        self._delete_snapshots_above(-1)  # first: every snapshot describes the log dropped here
        self.engine.reset_to(offset)
        # An empty log has no epochs: any entry kept (even the one covering ``offset``, which
        # truncate_from_start would keep) would be sent as our last fetched epoch, and a leader
        # that no longer knows it answers with a divergence we cannot truncate away. Every
        # entry starts at an offset >= 0, so truncating from 0 clears the cache; the next
        # fetched batches assign their epochs from ``offset`` on.
        self.epochs.truncate_from_end(0)
        self.high_watermark = offset
        # a producer that wrote only before ``offset`` (batches the leader's retention deleted;
        # the leader may still know it) has no batch in this log, and the table learns every
        # batch the log holds from here: nothing it lacks is in the log
        self.producers.truncate()
        self._check_offsets()

    def set_high_watermark_from_leader(self, leader_hw: int) -> None:
        if leader_hw > self.high_watermark:  # else it stays (every idle heartbeat comes here)
            self.high_watermark = max(self.high_watermark, min(leader_hw, self.log_end_offset))
        self._check_offsets()
