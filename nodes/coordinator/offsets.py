"""Committed offsets, stored replicated in the internal topic ``__consumer_offsets``.

The table (group -> (topic, partition) -> committed offset) lives in memory; every change is
first appended to the offsets topic with acks=all and applied to the table (and answered)
only once the append is acknowledged, so an acknowledged commit survives a coordinator
restart and the loss of any one broker. A group's records all go to one offsets partition
(chosen by the client library's partitioner on the group id), and each offsets partition
has at most one append in flight: commits of one group are applied in the order they came.

Record format: key = msgpack ``[group, topic, partition]``; value = msgpack
``[offset, metadata, commit_ts_ms, topic_id]``, or empty bytes for a deletion (tombstone); the
leader epoch of the record before each offset, as the committer read it, where known, follows in
the same append in a record older code skips (``snapshots.epoch_records``: the entry whole, with
it -- an epoch field in the value, as code before wrote it, older code refused, and lost the
commit). A
group's reading of a topic (when its first generation that subscribed to it was made:
nodes/coordinator/group_readings.py) goes the same way, in records of its own kind (key msgpack
``["loom.offsets.reading", group, topic]``, value ``[version, written_ms]``; a commit key's third
element is a partition number, so older code, whose loader skips a record it cannot read,
ignores them): ``readings`` (group -> topic -> Reading), next to the table.

Snapshots (``nodes.coordinator.snapshots``, written by ``offsets_snapshot_jobs``): now and then each offsets partition gets a
snapshot of its groups' committed offsets and readings, through the same queue as the commits,
and its start offset is remembered in the coordinator's state file. The topic has a time retention
(``OFFSETS_RETENTION_MS``) that the snapshot schedule keeps safe.

On start the coordinator rebuilds the table by reading every offsets partition from its
latest snapshot (from the log start if there is none, or the remembered offset holds no
such snapshot any more) up to the leader's log end as seen at the first read, waiting until
the high watermark covers it (an acknowledged commit is always below a leader's log end, and
waiting for the HW means a record that could still be truncated is never relied upon).

A waiting commit (``PendingCommit``), a committed offset (``Committed``) and what a commit
costs in the log are nodes/coordinator/offsets_commits.py. Before its append a commit is
checked (offsets within the log end, its topics not replaced, not backward) by
``CommitValidationMixin`` (nodes/coordinator/offsets_validation.py), a base of ``OffsetStore``.

While a commit is queued or being written, OFFSET_FETCH of its partitions answers
``unstable_offset_commit`` (retriable), so a member never starts from an offset that the
commit in flight is about to replace. A commit whose append may have landed but that ended
unacknowledged has its offsets partition read again (nodes/coordinator/offsets_resync.py), so
the table never goes on lacking what the log holds. The appends go as an idempotent producer
whose epochs are fenced (nodes/coordinator/offsets_producer.py): an append the coordinator gave
up on cannot land after that read, nor a late copy of a retried one after the next commit.

The store sees the coordinator through ``nodes.coordinator.context.GroupContext`` and talks
to the brokers through one ``OffsetsTopicClient`` (nodes/coordinator/offsets_client.py), which
the loader shares.

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Callable

import msgpack

from fabric import protocol as P
from fabric.errors import RemoteError
from fabric.records import partition_for_key
from nodes.coordinator import snapshots as S
from nodes.coordinator.context import GroupContext
from nodes.coordinator.group_readings import Reading, apply_readings, reading_records
from nodes.coordinator.offsets_client import OFFSETS_TOPIC, AppendOutcome, OffsetsTopicClient
from nodes.coordinator.offsets_commits import (APPEND_BYTES_MAX, CommitEntry, Committed, DoneCallback, PendingCommit,
                                               TopicPartition, commit_bytes)
from nodes.coordinator.offsets_loader import OffsetsLoader
from nodes.coordinator.offsets_producer import PRODUCER_STATE_ERRORS, ProducerMixin, Sent
from nodes.coordinator.offsets_resync import ResyncMixin
from nodes.coordinator.offsets_snapshot_jobs import SnapshotJobsMixin
from nodes.coordinator.offsets_validation import CommitValidationMixin
from nodes.coordinator.snapshots import SnapshotJob
from nodes.coordinator.store import TopicState
from nodes.coordinator.topics import place_partitions

__all__ = ["OFFSETS_TOPIC", "OffsetStore"]

log = logging.getLogger(__name__)

OFFSETS_PARTITIONS = 3
OFFSETS_REPLICATION_FACTOR_MAX = 3
COMMIT_TIMEOUT_MS = 15_000         # a commit not appended by then fails (request_timed_out)
RETRY_MS = 200                     # pause before retrying an append
COMMITS_PER_APPEND_MAX = 500       # commit requests folded into one batch (and their bytes: APPEND_BYTES_MAX)
HW_PRUNE_INTERVAL_MS = 10_000      # forget cached log ends of deleted topics at least this often


@dataclass
class _Queue:
    items: deque[PendingCommit | SnapshotJob] = field(default_factory=deque)
    busy: bool = False      # an append (or its retry pause) is outstanding
    # the idempotent producer (nodes/coordinator/offsets_producer.py)
    sent: Sent | None = None  # the append being written: sent again as it is until acknowledged or given up
    seq: int = 0              # the next sequence of the partition's epoch
    fenced: bool = False      # its epoch's fence is in the log: commits may be appended
    new_producer_id: bool = False  # the next epoch takes a new producer id
    ended_id: int | None = None  # the producer id whose ending fence (EPOCH_MAX) this run sent
    attempts: int = 0         # sends so far: only the outcome of the latest is acted on
    log_end: int | None = None  # where the table's part of the log ends (None: not known)
    records_since_snapshot: int = 0
    last_snapshot_ms: int = 0           # monotonic
    snapshot_queued: bool = False


class OffsetStore(CommitValidationMixin, ResyncMixin, SnapshotJobsMixin, ProducerMixin):
    def __init__(self, context: GroupContext, client: OffsetsTopicClient) -> None:
        """``client``: the one client of the offsets topic, shared with the loader."""
        self.context = context
        self.reactor = context.reactor
        self.client = client
        self.table: dict[str, dict[TopicPartition, Committed]] = {}
        # group -> topic -> its reading as stored (nodes/coordinator/group_readings.py)
        self.readings: dict[str, dict[str, Reading]] = {}
        self._readings_in_flight: Counter[str] = Counter()  # group -> its commits carrying readings
        self._queues: dict[int, _Queue] = {q: _Queue() for q in range(OFFSETS_PARTITIONS)}
        self._pending_count = 0
        self._pending_bytes = 0  # P.PENDING_COMMIT_BYTES_MAX
        self._hw_seen: dict[TopicPartition, tuple[int, int]] = {}  # (HW, the leader epoch asked in)
        self._hw_pruned_ms = 0
        self.loader = OffsetsLoader(context, client, self)
        self.loaded = False
        self.counters = context.counters
        # group -> (topic, partition) -> commits queued or being written
        self._in_flight: dict[str, Counter[TopicPartition]] = {}
        # offsets partitions being read again (None: its fence is not in yet)
        self._resyncing: dict[int, OffsetsLoader | None] = {}

    # -- lookups -----------------------------------------------------------------------------
    def offsets_for(self, group: str) -> dict[TopicPartition, Committed]:
        """The group's committed offsets of the topics as they are now. One committed for a
        topic since deleted is not an offset of a topic made again under its name: it would have
        the group skip the new topic's first records, and refuse its commits as going backward.
        Such an entry stays in the table (it names another topic id, it is not judged by
        absence), and in the snapshots, until a commit of the new topic replaces it or the group
        goes: it shows that the group read the name before (nodes/coordinator/group_readings.py)."""
        table = self.table.get(group, {})
        if not any(self._stale(tp[0], c) for tp, c in table.items()):
            return table
        return {tp: c for tp, c in table.items() if not self._stale(tp[0], c)}

    def _stale(self, topic: str, c: Committed) -> bool:
        """``c`` was committed for another topic of this name than the one there is now."""
        now = self._topic_id(topic)  # "": no such topic now (not judged by absence)
        return bool(c.topic_id) and bool(now) and now != c.topic_id

    def _topic_id(self, topic: str) -> str:
        ts = self.context.state.topics.get(topic)
        return ts.topic_id if ts is not None else ""

    def groups(self) -> list[str]:
        return sorted(g for g, t in self.table.items() if t)

    @property
    def pending_count(self) -> int:
        """Commits (and deletions) queued or being written, bounded by PENDING_COMMITS_MAX."""
        return self._pending_count

    def has_in_flight(self, group: str) -> bool:
        """A commit (or deletion, or a change of its readings) of the group is queued or being
        written, or its offsets partition is being read again (nodes/coordinator/offsets_resync.py)."""
        return group in self._in_flight or self.reading_in_flight(group) or self.resyncing(group)

    def reading_in_flight(self, group: str) -> bool:
        """A change of the group's stored readings is queued or being written."""
        return self._readings_in_flight[group] > 0

    def groups_in_flight(self) -> list[str]:
        """The groups with a commit (or deletion, or a change of their readings) queued or being written."""
        return list(self._in_flight) + [g for g in self._readings_in_flight if g not in self._in_flight]

    def unstable(self, group: str, partitions: list[TopicPartition] | None) -> list[TopicPartition]:
        """The partitions (all of the group's with None) that a commit in flight may change."""
        pending = self._in_flight.get(group)
        if not pending:
            return []
        return sorted(pending) if partitions is None else [tp for tp in partitions if tp in pending]

    @staticmethod
    def partition_for_group(group: str) -> int:
        return partition_for_key(group.encode(), OFFSETS_PARTITIONS)

    # -- the offsets topic ---------------------------------------------------------------------
    def ensure_topic(self) -> None:
        """Create ``__consumer_offsets`` (RF = min(3, configured brokers), min ISR = min(2, RF),
        retention ``OFFSETS_RETENTION_MS``). Like Kafka it waits (retriable not_enough_replicas) until that many
        brokers are alive: a topic made with fewer replicas would stay under-replicated for
        good, and the loss of one broker could then lose every committed offset. Alive and
        heard (``electable``), as Kafka places replicas on unfenced brokers only: a restarted
        coordinator's grace (a fresh cluster's first start too) takes every broker for alive
        before it has heard it, and every group's commits are not put on a broker that may be
        dead for good, nor led by the first one heard; a running broker is heard within a
        heartbeat."""
        if OFFSETS_TOPIC in self.context.state.topics:
            return
        heard = self.context.electable()
        rf = min(OFFSETS_REPLICATION_FACTOR_MAX, len(self.context.brokers))
        if rf < 1 or len(heard) < rf:
            raise RemoteError(P.NOT_ENOUGH_REPLICAS, f"the offsets topic needs {rf} live brokers, "
                                                     f"{len(heard)} are alive and heard: retry later")
        made = place_partitions(heard, heard, OFFSETS_PARTITIONS, rf, 0, self.context.state.version + 1,
                                self.reactor.clock.wall_ms())
        # a time retention far longer than the snapshot refresh: a group that has not moved
        # keeps its offsets in every snapshot; no size retention (it could reach the snapshot)
        configs = {"min.insync.replicas": min(2, rf), "retention.ms": S.OFFSETS_RETENTION_MS, "retention.bytes": -1}
        self.context.state.topics[OFFSETS_TOPIC] = TopicState(made, configs)
        self.context.commit()
        log.info("created %s: %d partitions, rf %d", OFFSETS_TOPIC, OFFSETS_PARTITIONS, rf)

    # -- commits ---------------------------------------------------------------------------------
    def commit(self, group: str, entries: list[CommitEntry], *, allow_backward: bool,
               check_log_end: bool, done: DoneCallback,
               recheck: Callable[[], RemoteError | None] | None = None, named: set[str] | None = None,
               readings: dict[str, Reading | None] | None = None) -> None:
        """Queue a commit; ``done(None)`` once it is replicated and applied, ``done(error)``
        when it is rejected (nothing changed) or could not be appended in time. ``recheck``
        runs again just before the append; an error it returns rejects the commit. ``named``:
        the topics whose current id the committer named (``ids_refusal``). ``readings``: changes
        of the group's stored readings, appended with it (``entries`` may then be empty)."""
        size = commit_bytes(group, entries, readings or ())
        if self._pending_count >= P.PENDING_COMMITS_MAX or self._pending_bytes + size > P.PENDING_COMMIT_BYTES_MAX:
            raise RemoteError(P.BUFFER_FULL, "too many offset commits waiting; retry later")
        self.ensure_topic()
        pc = PendingCommit(group, entries, allow_backward, done, self.reactor.clock.now_ms() + COMMIT_TIMEOUT_MS,
                           recheck=recheck, topic_ids={e[0]: self._topic_id(e[0]) for e in entries}, size=size,
                           named=named or set(), readings=dict(readings or {}))
        if pc.readings:
            self._readings_in_flight[group] += 1
        self._queues[self.partition_for_group(group)].items.append(pc)
        self._pending_count += 1
        self._pending_bytes += size
        if entries:
            self._in_flight.setdefault(group, Counter()).update((e[0], e[1]) for e in entries)
        if check_log_end:
            pc.ready = False
            self._check_log_end(pc)
        else:
            self._pump(self.partition_for_group(group))

    def _finish(self, pc: PendingCommit, error: RemoteError | None) -> None:
        if pc.finished:
            return
        pc.finished = True
        self._pending_count -= 1
        self._pending_bytes -= pc.size
        if pc.entries:
            pending = self._in_flight[pc.group]
            pending.subtract((e[0], e[1]) for e in pc.entries)
            for tp in [tp for tp, n in pending.items() if n <= 0]:
                del pending[tp]
            if not pending:
                del self._in_flight[pc.group]
        if pc.readings:
            self._readings_in_flight[pc.group] -= 1
            if not self._readings_in_flight[pc.group]:
                del self._readings_in_flight[pc.group]
        if error is not None and pc.maybe_in_log:  # the log may hold it, the table will not
            self._resync(self.partition_for_group(pc.group))
        pc.done(error)  # a bug in it is not swallowed: it stops the node (fabric/reactor.py)

    def _pump(self, q: int) -> None:
        """Send the next append of offsets partition ``q`` if none is outstanding."""
        queue = self._queues[q]
        if queue.busy or not self.loaded:
            return
        if queue.sent is not None:  # an append to send again, as it was (offsets_producer)
            self._resend(q)
            return
        if q in self._resyncing or not queue.fenced:
            # being read again, or its epoch's fence not in yet: nothing is appended but the
            # fence; every deadline still holds
            self._expire_waiting(q)
            if not queue.fenced:
                self._fence_step(q)
            return
        now = self.reactor.clock.now_ms()
        take: list[PendingCommit] = []
        take_bytes = 0
        overlay: dict[tuple[str, str, int], tuple[int | None, int]] = {}  # -> (offset, leader epoch)
        while queue.items and len(take) < COMMITS_PER_APPEND_MAX:
            pc = queue.items[0]
            if isinstance(pc, SnapshotJob):
                if take:
                    break  # the commits before it go first, and are in it
                self._snapshot_step(q, pc)
                return
            if take and take_bytes + pc.size > APPEND_BYTES_MAX:
                break  # the next append takes it
            if pc.finished:
                queue.items.popleft()
                continue
            if pc.deadline_ms <= now:
                queue.items.popleft()
                self._finish(pc, RemoteError(P.REQUEST_TIMED_OUT, "the offset commit was not replicated in time"))
                continue
            if not pc.ready:
                break  # later commits of this partition wait: order is kept
            queue.items.popleft()
            err = self._topic_replaced(pc) or (pc.recheck() if pc.recheck is not None else None) \
                or self._check_not_backward(pc, overlay)
            if err is not None:
                self._finish(pc, err)
                continue
            for topic, p, offset, _metadata, epoch in pc.entries:
                overlay[(pc.group, topic, p)] = (offset, epoch)
            take.append(pc)
            take_bytes += pc.size
        if take and (q in self._resyncing or not queue.fenced):  # a commit that ended in this pass ended the epoch
            queue.items.extendleft(reversed(take))
            self._pump(q)
        elif take:
            self._append(q, take)

    def _append(self, q: int, take: list[PendingCommit]) -> None:
        ts = self.reactor.clock.wall_ms()
        records = []
        for pc in take:
            for topic, p, offset, metadata, _epoch in pc.entries:
                key = msgpack.packb([pc.group, topic, p], use_bin_type=True)
                value = b"" if offset is None else msgpack.packb([offset, metadata, ts, pc.topic_ids.get(topic, "")],
                                                                 use_bin_type=True)
                records.append((ts, key, value, None))
            # the known leader epochs after them, in the same append: records older code skips
            records.extend((ts, key, value, None) for key, value in S.epoch_records(pc.group, (
                (pc.group, topic, p, offset, metadata, ts, pc.topic_ids.get(topic, ""), epoch)
                for topic, p, offset, metadata, epoch in pc.entries if offset is not None)))
            records.extend((ts, key, value, None) for key, value in reading_records(pc.group, pc.readings))
        self._queues[q].sent = self._new_sent(q, records, take)
        self._send_commits(q)

    def _send_commits(self, q: int) -> None:
        queue = self._queues[q]
        sent = queue.sent
        assert sent is not None

        def on_outcome(out: AppendOutcome) -> None:
            for pc in sent.take:
                pc.maybe_in_log |= sent.possibly_written
            if out.ok:
                queue.busy = False
                self._acked(q, out.base_offset)
                queue.records_since_snapshot += sent.records
                for pc in sent.take:  # all applied before any is answered: an answer may queue (and
                    self.apply(pc.group, pc.entries, sent.ts, pc.topic_ids)  # judge) the next commit
                    if pc.readings:
                        self.apply_readings(pc.group, pc.readings)
                for pc in sent.take:
                    self._finish(pc, None)
                self.counters["offset_commits"] += len(sent.take)
                self._pump(q)
            elif out.retriable:
                self.counters["offset_append_retries"] += 1
                if not sent.possibly_written:  # in no log: its commits are judged again, its sequence is free
                    queue.sent = None
                    queue.items.extendleft(reversed(sent.take))
                self._pause(q)  # else sent again as it is (_resend)
            else:
                queue.busy = False
                queue.sent = None
                error = RemoteError(out.code, out.message)
                if out.code in PRODUCER_STATE_ERRORS:
                    # the epoch cannot go on (offsets_producer): read again under a new one. The
                    # commits may be in the log (a retry refused unknown_producer_id by a leader
                    # that rebuilt its producer state): answered as of unknown outcome, retriable --
                    # the producer's refusal is the coordinator's matter, not the committer's
                    self._resync(q)
                    error = RemoteError(P.REQUEST_TIMED_OUT, f"the offset commit's outcome is not known ({out.message}); "
                                                             "retry")
                for pc in sent.take:
                    self._finish(pc, error)
                self._pump(q)
        self._send(q, sent, on_outcome)

    def apply(self, group: str, entries: list[CommitEntry], ts: int,
              topic_ids: dict[str, str] | None = None) -> None:
        """Apply acknowledged changes (offset None: deleted) to the table; ``topic_ids``: the id
        of each entry's topic when it was committed."""
        self._apply_to(self.table, group, entries, ts, topic_ids)

    def apply_readings(self, group: str, changes: dict[str, Reading | None]) -> None:
        """Apply acknowledged changes of the group's stored readings."""
        apply_readings(self.readings, group, changes)

    @staticmethod
    def _apply_to(tables: dict[str, dict[TopicPartition, Committed]], group: str,
                  entries: list[CommitEntry], ts: int, topic_ids: dict[str, str] | None) -> None:
        table = tables.setdefault(group, {})
        for topic, p, offset, metadata, epoch in entries:
            if offset is None:
                table.pop((topic, p), None)
            else:
                table[(topic, p)] = Committed(offset, metadata, ts, topic_ids.get(topic, "") if topic_ids else "", epoch)
        if not table:
            del tables[group]

    # -- snapshots ------------------------------------------------------------------------------------
    def tick(self) -> None:
        """Queue the snapshots that are due; forget log ends of deleted topics now and then."""
        if not self.loaded:
            return
        for q, queue in self._queues.items():  # nothing is appended but a fence: the waiting commits
            if q in self._resyncing or not queue.fenced:  # are answered at their deadlines (also while
                self._expire_waiting(q)  # the fence is being written)
                self._pump(q)
        now, wall = self.reactor.clock.now_ms(), self.reactor.clock.wall_ms()
        for q, queue in self._queues.items():
            if queue.snapshot_queued:
                continue
            since = queue.records_since_snapshot
            pointer = self.context.state.offsets_snapshots.get(q)
            changed_long_ago = since > 0 and now - queue.last_snapshot_ms >= S.SNAPSHOT_INTERVAL_MS
            # the refresh keeps the latest snapshot (and so every group) far inside the retention
            stale = pointer is not None and wall - pointer[2] >= S.SNAPSHOT_REFRESH_MS
            if since >= S.SNAPSHOT_COMMIT_RECORDS or changed_long_ago or stale:
                self.snapshot(q)
        if now - self._hw_pruned_ms >= HW_PRUNE_INTERVAL_MS:
            self._hw_pruned_ms = now
            topics = self.context.state.topics
            for tp in [tp for tp in self._hw_seen if tp[0] not in topics]:
                del self._hw_seen[tp]

    def _pause(self, q: int) -> None:
        """Keep the queue busy for RETRY_MS, then pump again (the front item is retried)."""
        queue = self._queues[q]
        queue.busy = True

        def again() -> None:
            queue.busy = False
            self._pump(q)
        self.reactor.call_later(RETRY_MS, again)

    # -- rebuilding the table on start (nodes.coordinator.offsets_loader) ---------------------------
    def start_loading(self) -> None:
        if OFFSETS_TOPIC not in self.context.state.topics:
            self._loaded()
            return
        self.loader.start(len(self.context.state.topics[OFFSETS_TOPIC].partitions))

    def forget_partition(self, q: int) -> None:
        """The load of offsets partition ``q`` starts again: drop its groups (nothing but the
        load has changed the table before ``loaded``)."""
        assert not self.loaded, "the table holds acknowledged commits"
        for group in [g for g in self.table if self.partition_for_group(g) == q]:
            del self.table[group]
        for group in [g for g in self.readings if self.partition_for_group(g) == q]:
            del self.readings[group]

    def loaded_all(self) -> None:
        """The loader read every offsets partition: take commits from now on."""
        self._loaded()

    def _loaded(self) -> None:
        self.loaded = True
        log.info("committed offsets loaded: %d groups", len(self.table))
        now = self.reactor.clock.now_ms()
        for q, queue in self._queues.items():
            st = self.loader.states.get(q)
            queue.log_end = st.offset if st is not None else None  # the fence goes there (offsets_producer)
            queue.records_since_snapshot = st.records_read if st is not None else 0
            if q not in self.context.state.offsets_snapshots:
                # read without a snapshot: it gets its first one at once (an empty one too, so
                # that an offsets topic from before snapshots can get its retention)
                queue.last_snapshot_ms = now - S.SNAPSHOT_INTERVAL_MS
                if st is not None:
                    queue.records_since_snapshot = max(1, st.records_read)
            else:
                queue.last_snapshot_ms = now
        for q in self._queues:
            self._pump(q)

    def close(self) -> None:
        self.client.close()
