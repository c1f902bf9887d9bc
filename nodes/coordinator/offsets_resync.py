"""Reading an offsets partition again while the coordinator runs.

A commit whose append may have landed (it went out and no answer said it was not written)
can still end unacknowledged: its deadline passes while the retries fail, or a retry is
refused for good. The log may then hold it while the table does not -- until a restart,
which reads the log. So the offsets partition is read again, as at a start
(``nodes.coordinator.offsets_loader``), and its groups' part of the table is replaced by
what was read. Meanwhile nothing of that partition is appended (its waiting commits are
answered at their deadlines), and its groups' OFFSET_FETCH and DELETE_GROUP are refused with
the retriable ``unstable_offset_commit``: the table may be missing what the log has.

``ResyncMixin`` is that part of ``OffsetStore`` (nodes/coordinator/offsets.py): its state is the
store's own (set by ``OffsetStore.__init__``).

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from fabric import protocol as P
from fabric.errors import RemoteError
from nodes.coordinator import snapshots as S
from nodes.coordinator.group_readings import Reading, apply_readings
from nodes.coordinator.offsets_commits import CommitEntry
from nodes.coordinator.offsets_loader import OffsetsLoader

if TYPE_CHECKING:
    from nodes.coordinator.context import GroupContext
    from nodes.coordinator.offsets import _Queue
    from nodes.coordinator.offsets_client import OffsetsTopicClient
    from nodes.coordinator.offsets_commits import Committed, TopicPartition

log = logging.getLogger(__name__)

Table = dict  # group -> (topic, partition) -> Committed
Readings = dict  # group -> topic -> Reading


class _Reread:
    """Where a partition read again goes (the loader's LoadTarget): a table of its own."""

    def __init__(self, apply_to: Callable[..., None], done: Callable[[Table, Readings], None]) -> None:
        self.table: Table = {}
        self.readings: Readings = {}
        self._apply_to = apply_to
        self._done = done

    def apply(self, group: str, entries: list[CommitEntry], ts: int,
              topic_ids: dict[str, str] | None = None) -> None:
        self._apply_to(self.table, group, entries, ts, topic_ids)

    def apply_readings(self, group: str, changes: dict[str, Reading | None]) -> None:
        apply_readings(self.readings, group, changes)

    def forget_partition(self, q: int) -> None:
        self.table.clear()  # the one partition read again
        self.readings.clear()

    def loaded_all(self) -> None:
        self._done(self.table, self.readings)


class ResyncMixin:
    """``OffsetStore``'s reading of an offsets partition again. Part of OffsetStore (its state
    is the store's own)."""

    # the store's state this part uses (set by OffsetStore.__init__)
    context: GroupContext
    client: OffsetsTopicClient
    table: dict[str, dict[TopicPartition, Committed]]
    readings: dict[str, dict[str, Reading]]
    counters: Any
    reactor: Any
    _queues: dict[int, _Queue]
    _resyncing: dict[int, OffsetsLoader | None]  # offsets partition -> the loader reading it again (None: fencing)

    if TYPE_CHECKING:  # OffsetStore's, never these
        @staticmethod
        def partition_for_group(group: str) -> int: ...
        @staticmethod
        def _apply_to(table: Table, group: str, entries: list, ts: int, topic_ids: dict | None) -> None: ...
        def _pump(self, q: int) -> None: ...

    def resyncing(self, group: str) -> bool:
        """The group's offsets partition is being read again: its table may lack what the log has."""
        return bool(self._resyncing) and self.partition_for_group(group) in self._resyncing

    def check_not_resyncing(self, group: str) -> None:
        """Raise the retriable unstable_offset_commit while the group's table may lack what the
        log has (OFFSET_FETCH and DELETE_GROUP may not go by it)."""
        if self.resyncing(group):
            raise RemoteError(P.UNSTABLE_OFFSET_COMMIT, f"the committed offsets of group {group!r} are being read "
                                                        "again; retry")

    def _resync(self, q: int) -> None:
        """Read offsets partition ``q`` again (the module docstring says why), under a new
        producer epoch whose fence goes first (nodes/coordinator/offsets_producer.py): the read
        then covers all that was sent before. The caller pumps the queue (that sends the fence)."""
        if q in self._resyncing:
            return
        queue = self._queues[q]
        assert queue.sent is None or queue.sent.fence, "an append still being written"
        log.warning("offsets partition %d: a commit that may be in the log ended unacknowledged (or the log holds "
                    "what the table lacks): reading the partition again", q)
        self.counters["offsets_resyncs"] += 1
        self._resyncing[q] = None
        if not (queue.sent is not None and queue.sent.fence):
            queue.fenced = False  # a new epoch; its fence comes first (_pump)

    def _read_again(self, q: int) -> None:
        """The new epoch's fence is in the log: read the partition up to its end (past the fence)."""
        reread = _Reread(self._apply_to, lambda table, readings: self._resynced(q, table, readings))
        loader = OffsetsLoader(self.context, self.client, reread)
        self._resyncing[q] = loader
        loader.start_partitions([q])

    def _resynced(self, q: int, table: Table, readings: Readings) -> None:
        """Offsets partition ``q`` was read again (nothing of it was appended meanwhile): its
        groups' offsets and readings are what it holds."""
        for group in [g for g in self.table if self.partition_for_group(g) == q]:
            del self.table[group]
        self.table.update((g, t) for g, t in table.items() if t)
        for group in [g for g in self.readings if self.partition_for_group(g) == q]:
            del self.readings[group]
        self.readings.update((g, r) for g, r in readings.items() if r)
        loader = self._resyncing.pop(q)
        assert loader is not None
        queue = self._queues[q]
        st = loader.states[q]
        queue.log_end = st.offset  # our next append goes there (nothing can land before it)
        queue.records_since_snapshot = max(queue.records_since_snapshot, st.records_read)
        if q not in self.context.state.offsets_snapshots:  # its pointer was stale: a new snapshot at once
            queue.last_snapshot_ms = self.reactor.clock.now_ms() - S.SNAPSHOT_INTERVAL_MS
            queue.records_since_snapshot = max(1, queue.records_since_snapshot)
        log.info("offsets partition %d read again: %d groups", q, sum(1 for g in table if table[g]))
        self._pump(q)
