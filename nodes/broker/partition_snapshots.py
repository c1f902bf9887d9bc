"""When a replica snapshots its idempotent-producer table (nodes/broker/producer_snapshots.py
says what a snapshot holds and why it can be trusted at open): at close (fsynced) and
periodically, when the log end moved PRODUCER_SNAPSHOT_INTERVAL_RECORDS or moved at all and
PRODUCER_SNAPSHOT_INTERVAL_MS passed; and which snapshots go before the log is cut.

``PartitionSnapshotsMixin`` is that part of ``Partition``: its state is the partition's own (set
by ``Partition.__init__``). Not thread-safe: owned by the broker's reactor, with the Partition.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from engines.api import EngineError
from nodes.broker import producer_snapshots as snapshots_module
from nodes.broker.producer_snapshots import Snapshot
from nodes.broker.tail_recovery import last_batch

if TYPE_CHECKING:
    from engines.api import Engine
    from nodes.broker.producer_snapshots import ProducerSnapshots
    from nodes.broker.producers import ProducerStateTable

log = logging.getLogger(__name__)


class PartitionSnapshotsMixin:
    """``Partition``'s producer-table snapshots. Part of Partition (its state is the partition's
    own; kept here so that when a snapshot is taken reads together)."""

    # the partition's state this part uses (set by Partition.__init__)
    topic: str
    partition: int
    engine: Engine
    producers: ProducerStateTable
    producer_snapshots: ProducerSnapshots | None
    _snapshot_at: tuple[int, int | None]
    _snapshot_failed_ms: int | None

    def maybe_snapshot_producers(self, now_ms: int) -> None:
        """``snapshot_producers`` if ``producer_snapshot_due``."""
        if self.producer_snapshot_due(now_ms):
            self.snapshot_producers(now_ms)

    def producer_snapshot_due(self, now_ms: int) -> bool:
        """Whether the producer table is due for its periodic snapshot: the log end moved
        PRODUCER_SNAPSHOT_INTERVAL_RECORDS since the last snapshot, or moved at all and
        PRODUCER_SNAPSHOT_INTERVAL_MS passed (the first call only starts that clock) -- and
        the last periodic write did not fail within PRODUCER_SNAPSHOT_INTERVAL_MS (each try
        encodes the table on the reactor: at every tick, a full disk kept a broker of large
        tables busy encoding them)."""
        if self.producer_snapshots is None:
            return False
        offset, taken_ms = self._snapshot_at
        end = self.engine.log_end_offset
        if taken_ms is None:
            self._snapshot_at = (offset, now_ms)
            taken_ms = now_ms
        interval_ms = snapshots_module.PRODUCER_SNAPSHOT_INTERVAL_MS
        if end == offset or (end - offset < snapshots_module.PRODUCER_SNAPSHOT_INTERVAL_RECORDS
                             and now_ms - taken_ms < interval_ms):
            return False
        return self._snapshot_failed_ms is None or now_ms - self._snapshot_failed_ms >= interval_ms

    def snapshot_producers(self, now_ms: int) -> None:
        """The periodic snapshot of the producer table at the log end, without fsync
        (nodes/broker/producer_snapshots.py says why). Raises nothing: a failed write is
        logged, and ``producer_snapshot_due`` waits an interval before the next try."""
        self._snapshot_failed_ms = None if self._snapshot_producers(sync=False, now_ms=now_ms) else now_ms

    def _snapshot_producers(self, sync: bool, now_ms: int | None = None) -> bool:
        """Write the producer table's snapshot at the log end (nothing when the log holds no
        batch, or the last snapshot is at this end). Returns False if a write failed. Raises
        nothing: a failure is logged."""
        end = self.engine.log_end_offset
        if self.producer_snapshots is None or end == self._snapshot_at[0]:
            return True
        if self.producers.writing:  # closed by a write that failed: the table names unwritten batches
            log.warning("%s-%d: no producer snapshot: closed during a write", self.topic, self.partition)
            return True
        try:
            last = last_batch(self, end)
            if last is None:
                return True  # an empty log: nothing to describe
            self.producer_snapshots.write(
                Snapshot(end, last, self.producers.forgot_below, self.producers.export()), sync=sync)
        except EngineError as e:
            log.error("%s-%d: cannot snapshot the producer state: %s", self.topic, self.partition, e)
            return False
        self._snapshot_at = (end, now_ms)
        return True

    def _delete_snapshots_above(self, offset: int) -> None:
        """Before the log is cut at ``offset``: its snapshots past it describe what is cut.
        Raises EngineError (the log must then stay as it is)."""
        if self.producer_snapshots is not None:
            self.producer_snapshots.delete_above(offset)
            if self._snapshot_at[0] > offset:
                self._snapshot_at = (-1, self._snapshot_at[1])
