"""Snapshots of the committed offsets, written: now and then each offsets partition gets a
snapshot of its groups' committed offsets (the record format is nodes/coordinator/snapshots.py)
-- every entry of the table, also one of a topic deleted (and perhaps made again) since, which
shows that the group read that name before the topic there is now (nodes/coordinator/
group_readings.py; such an entry goes when a commit of the new topic or the group's deletion
replaces it, as in the running coordinator) -- and its groups' readings, as reading records
after the snapshot's last one (older code skips them, and loads the offsets as before),
through the same queue as the commits -- the job captures the table when it reaches the front,
so every commit queued before it is in it, and the queue stays busy until its last record is
acknowledged, so nothing overtakes it. Its start offset is remembered in the coordinator's
state file only once the whole snapshot is in the log: a load never starts at one that is not
whole. Once every offsets partition has one, the topic gets its time retention.

``SnapshotJobsMixin`` is that part of ``OffsetStore`` (nodes/coordinator/offsets.py): its state
is the store's own (set by ``OffsetStore.__init__``); ``OffsetStore.tick`` says when.

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

from nodes.coordinator import snapshots as S
from nodes.coordinator.group_readings import reading_records
from nodes.coordinator.offsets_client import OFFSETS_TOPIC, AppendOutcome
from nodes.coordinator.offsets_producer import PRODUCER_STATE_ERRORS
from nodes.coordinator.snapshots import SnapshotJob

if TYPE_CHECKING:
    from nodes.coordinator.context import GroupContext
    from nodes.coordinator.group_readings import Reading
    from nodes.coordinator.offsets import _Queue
    from nodes.coordinator.offsets_client import OffsetsTopicClient
    from nodes.coordinator.offsets_commits import Committed, TopicPartition
    from nodes.coordinator.offsets_producer import Sent

log = logging.getLogger(__name__)


class SnapshotJobsMixin:
    """``OffsetStore``'s snapshot writing. Part of OffsetStore (its state is the store's own)."""

    # the store's state this part uses (set by OffsetStore.__init__)
    context: GroupContext
    reactor: Any
    client: OffsetsTopicClient
    counters: Any
    table: dict[str, dict[TopicPartition, Committed]]
    readings: dict[str, dict[str, Reading]]
    _queues: dict[int, _Queue]

    if TYPE_CHECKING:  # OffsetStore's, never these
        @staticmethod
        def partition_for_group(group: str) -> int: ...
        def _pump(self, q: int) -> None: ...
        def _pause(self, q: int) -> None: ...
        def _resync(self, q: int) -> None: ...
        def _new_sent(self, q: int, records: list, take: list | None = None, *, fence: bool = False) -> Sent: ...
        def _send(self, q: int, sent: Sent, on_outcome: Callable[[AppendOutcome], None]) -> None: ...
        def _acked(self, q: int, base_offset: int) -> bool: ...

    def snapshot(self, q: int) -> None:
        """Queue a snapshot of offsets partition ``q`` behind the commits already queued."""
        queue = self._queues[q]
        if queue.snapshot_queued or OFFSETS_TOPIC not in self.context.state.topics:
            return
        queue.snapshot_queued = True
        queue.items.append(SnapshotJob(q, self.reactor.clock.now_ms() + S.SNAPSHOT_TIMEOUT_MS))
        self._pump(q)

    def _snapshot_step(self, q: int, job: SnapshotJob) -> None:
        """Append the snapshot's next record. Called with the job at the front of the queue and
        no append outstanding; the queue stays busy until the job ends, so nothing overtakes it."""
        queue = self._queues[q]
        if job.records is None:  # captured now: every commit queued before it is applied
            job.snapshot_id = S.new_snapshot_id()
            entries = [(g, t, p, c.offset, c.metadata, c.commit_ts_ms, c.topic_id, c.leader_epoch)
                       for g in sorted(self.table) if self.partition_for_group(g) == q
                       for (t, p), c in sorted(self.table[g].items())]
            job.records = S.snapshot_appends(job.snapshot_id, entries)
            job.records += S.in_appends([kv for g in sorted(self.readings) if self.partition_for_group(g) == q
                                         for kv in reading_records(g, dict(sorted(self.readings[g].items())))])
        if self.reactor.clock.now_ms() >= job.deadline_ms:
            gave_up, queue.sent = queue.sent, None
            if gave_up is not None and gave_up.possibly_written:  # its sequence may be taken: a new epoch
                self._resync(q)
            self._end_snapshot(q, job, ok=False)
            return
        if queue.sent is None:  # built once: sent again as it is (offsets_producer)
            wall = self.reactor.clock.wall_ms()
            queue.sent = self._new_sent(q, [(wall, key, value, None) for key, value in job.records[job.next_index]])
        sent = queue.sent
        records = job.records

        def on_outcome(out: AppendOutcome) -> None:
            if out.ok:
                self._acked(q, out.base_offset)
                if job.next_index == 0:
                    job.start_offset = out.base_offset
                job.next_index += 1
                if job.next_index < len(records):
                    self._snapshot_step(q, job)
                else:
                    self._end_snapshot(q, job, ok=True)
            elif out.retriable:
                self.counters["offsets_snapshot_retries"] += 1
                self._pause(q)
            else:
                log.warning("%s-%d snapshot failed: %s", OFFSETS_TOPIC, q, out.message)
                queue.sent = None
                if sent.possibly_written or out.code in PRODUCER_STATE_ERRORS:
                    self._resync(q)
                self._end_snapshot(q, job, ok=False)
        self._send(q, sent, on_outcome)

    def _end_snapshot(self, q: int, job: SnapshotJob, ok: bool) -> None:
        queue = self._queues[q]
        assert queue.items and queue.items[0] is job
        queue.items.popleft()
        queue.busy, queue.snapshot_queued, job.finished = False, False, True
        try:
            if ok:
                # remembered only once every record is acknowledged: a load never starts at a
                # snapshot that is not whole
                self.context.state.offsets_snapshots[q] = [job.start_offset, job.snapshot_id,
                                                           self.reactor.clock.wall_ms()]
                # taken before the write: one that fails (a full disk; the pointer goes with the
                # next write of the state) must not have the next tick write the snapshot again
                queue.records_since_snapshot = 0  # nothing was appended meanwhile: the queue was busy
                queue.last_snapshot_ms = self.reactor.clock.now_ms()
                self.counters["offsets_snapshots"] += 1
                log.info("%s-%d snapshot %s at offset %d (%d appends)", OFFSETS_TOPIC, q, job.snapshot_id,
                         job.start_offset, len(job.records or ()))
                self.context.save_state()
                self._maybe_enable_retention()
            else:
                self.counters["offsets_snapshots_abandoned"] += 1
        finally:
            self._pump(q)  # the commits queued behind the snapshot, also after a failed write

    def _maybe_enable_retention(self) -> None:
        """An offsets topic made before snapshots existed is kept forever; once every partition
        has a snapshot it gets the time retention."""
        topic = self.context.state.topics.get(OFFSETS_TOPIC)
        if topic is None or topic.configs.get("retention.ms", -1) != -1:
            return
        if all(q in self.context.state.offsets_snapshots for q in range(len(topic.partitions))):
            topic.configs = dict(topic.configs, **{"retention.ms": S.OFFSETS_RETENTION_MS})
            log.info("%s: every partition has a snapshot; retention.ms=%d", OFFSETS_TOPIC, S.OFFSETS_RETENTION_MS)
            self.context.commit()
