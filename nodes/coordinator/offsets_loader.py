"""Rebuilding the committed-offsets table when the coordinator starts.

Each offsets partition is read from its leader, from the start offset of its latest snapshot
(remembered in the coordinator's state file) up to the leader's log end as seen at the first
read, waiting until the high watermark covers it: an acknowledged commit is always below a
leader's log end, and waiting for the HW means a record that could still be truncated is
never relied upon.

The first record read at a remembered offset must be the first record of that snapshot. If
it is not (the log was truncated or rewritten), or the offset is below the log start
(retention) or beyond the log end, the partition is read from its log start instead: nothing
of it was applied yet, and a replay from there is correct, only slower -- every record is an
upsert or a deletion in log order, and a snapshot in the log is the whole state as of its
position. The same answer in the middle of the read (the log start passed the read position,
or the log end went back below it after an unclean election) starts the read again from the
log start into a fresh table (``LoadTarget.forget_partition``): replayed over what was
applied, a key that only the part now gone set would stay.

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

import msgpack

from fabric import protocol as P
from fabric.errors import MalformedFrame, RemoteError
from fabric.records import decode_batches
from fabric.replies import FetchEntry, decode_parts
from nodes.coordinator import snapshots as S
from nodes.coordinator.context import GroupContext
from nodes.coordinator.group_readings import ALL_TOPICS, Reading, decode_reading, parse_reading_key
from nodes.coordinator.offsets_client import OffsetsTopicClient
from nodes.coordinator.offsets_commits import NO_LEADER_EPOCH, CommitEntry

log = logging.getLogger(__name__)

LOAD_RETRY_MS = 200
# the key of the record that begins a producer epoch of an offsets partition
# (nodes/coordinator/offsets_producer.py): no change of the table
FENCE_KEY = msgpack.packb(["loom.offsets.fence"])


class LoadTarget(Protocol):
    """Where the loaded records go (the ``OffsetStore``)."""

    def apply(self, group: str, entries: list[CommitEntry], ts: int,
              topic_ids: dict[str, str] | None = None) -> None: ...

    def apply_readings(self, group: str, changes: dict[str, Reading | None]) -> None: ...

    def forget_partition(self, q: int) -> None:
        """Drop what was applied of offsets partition ``q`` (its read starts again)."""

    def loaded_all(self) -> None: ...


@dataclass
class LoadState:
    offset: int = 0
    target: int | None = None
    endpoint: str | None = None
    done: bool = False
    snapshot_id: str | None = None   # the first record read must start this snapshot
    records_read: int = 0
    applied: bool = False            # records of this read are in the table (a restart forgets them)


def decode_record(key: bytes | None, value: bytes) -> list[S.Entry]:
    """(group, topic, partition, offset or None for a deletion, metadata, timestamp ms, the
    topic's id when committed or "", the committed leader epoch or NO_LEADER_EPOCH) of each entry
    of an offsets-topic record. Pure. Raises ValueError / TypeError / msgpack.UnpackException for
    a record that is not one."""
    if S.parse_key(key) is not None or S.is_epochs_key(key):
        return list(S.decode_entries(value))
    if key == FENCE_KEY:
        return []
    if key is None:
        raise ValueError("a commit record needs a key")
    group, topic, p = msgpack.unpackb(key, raw=False)
    if not (isinstance(group, str) and isinstance(topic, str) and isinstance(p, int)):
        raise ValueError(f"bad commit key {[group, topic, p]!r}")
    if not value:
        return [(group, topic, p, None, "", 0, "", NO_LEADER_EPOCH)]
    fields = msgpack.unpackb(value, raw=False)
    # the topic id, 4th, is newer; the leader epoch, 5th, was written by code that kept it there
    # (now in the epoch records that follow: S.epoch_records)
    if not isinstance(fields, list) or not 3 <= len(fields) <= 5:
        raise ValueError(f"bad commit value {fields!r}")
    offset, metadata, ts = fields[:3]
    epoch = fields[4] if len(fields) == 5 else NO_LEADER_EPOCH
    if not (isinstance(offset, int) and isinstance(ts, int) and type(epoch) is int and epoch >= NO_LEADER_EPOCH):
        raise ValueError(f"bad commit value {fields!r}")
    return [(group, topic, p, offset, str(metadata), ts, str(fields[3]) if len(fields) >= 4 else "", epoch)]


class OffsetsLoader:
    def __init__(self, context: GroupContext, client: OffsetsTopicClient, store: LoadTarget) -> None:
        """``client``: the offsets topic's client, shared with ``store``."""
        self.context = context
        self.client = client
        self.store = store
        self.topic = client.topic
        self.reactor = context.reactor
        self.states: dict[int, LoadState] = {}

    def start(self, partitions: int) -> None:
        """Read every partition; ``store.loaded_all()`` once all are read."""
        self.start_partitions(list(range(partitions)))

    def start_partitions(self, partitions: list[int]) -> None:
        """Read these partitions; ``store.loaded_all()`` once all are read."""
        for q in partitions:
            pointer = self.context.state.offsets_snapshots.get(q)
            self.states[q] = LoadState(pointer[0], snapshot_id=pointer[1]) if pointer else LoadState()
            self._step(q)

    def _later(self, q: int, delay_ms: int) -> None:
        self.reactor.call_later(delay_ms, lambda: self._step(q))

    def _step(self, q: int) -> None:
        st = self.states[q]
        endpoint = self.client.leader_endpoint(self.topic, q)
        if endpoint is None:
            self._later(q, LOAD_RETRY_MS)
            return
        if endpoint != st.endpoint:
            st.endpoint, st.target = endpoint, None  # a new leader: learn its log end again

        def on_reply(h: dict | None, payloads: list, err: RemoteError | None) -> None:
            try:
                entries = decode_parts(h, FetchEntry) if h is not None else []
            except MalformedFrame:  # a broker's bad answer: asked again
                entries = []
            entry = entries[0] if entries else None
            if entry is None or entry.error:
                if entry is not None and entry.error == P.OFFSET_OUT_OF_RANGE and entry.log_start_offset >= 0:
                    # below the log start or beyond its end
                    if st.applied:
                        self._restart(q, st, entry.log_start_offset)
                    else:
                        self._snapshot_missing(q, st, entry.log_start_offset)
                st.endpoint = None
                self._later(q, LOAD_RETRY_MS)
                return
            hw, leo = entry.high_watermark, entry.log_end_offset
            if st.target is None or leo < st.target:  # a log end never goes back but by truncation
                st.target = leo
            if st.snapshot_id is not None and st.offset >= st.target:
                self._snapshot_missing(q, st, 0)
                self._later(q, 0)
                return
            records = decode_batches(self.topic, q, payloads[0], st.offset, hw) if payloads and payloads[0] else []
            if records and st.snapshot_id is not None:
                found = S.parse_key(records[0].key)
                if records[0].offset != st.offset or found is None or found[:2] != (st.snapshot_id, 0):
                    self._snapshot_missing(q, st, 0)
                    self._later(q, 0)
                    return
                st.snapshot_id = None  # it is there: read on from it
            for r in records:
                self.apply_record(r.key, r.value)
            if records:
                st.applied = True
                st.offset = records[-1].offset + 1
                st.records_read += len(records)
            if st.offset >= st.target:
                log.info("%s-%d loaded up to offset %d", self.topic, q, st.offset)
                st.done = True
                if all(s.done for s in self.states.values()):
                    self.store.loaded_all()
            else:
                self._later(q, 0 if records else LOAD_RETRY_MS)
        self.client.fetch(endpoint, q, st.offset, on_reply)

    def apply_record(self, key: bytes | None, value: bytes) -> None:
        """Apply one record of the offsets topic (a commit, a tombstone, a snapshot record or a
        group's reading). A record that cannot be read is counted, logged and skipped: it must not
        stop the load (anything can be produced to the topic; older code skips reading records
        so). Applying what was read raises nothing but a bug."""
        reading_of = parse_reading_key(key)
        try:
            if reading_of is not None:
                reading = decode_reading(value, self.context.state.version)
                if reading is not None and reading_of[1] == ALL_TOPICS:  # only ever a deletion
                    raise ValueError(f"a reading of every topic of group {reading_of[0]!r}")
            else:
                entries = decode_record(key, value)
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            self.context.counters["offsets_bad_records"] += 1
            log.warning("%s: a record that cannot be read is skipped: %s", self.topic, e)
            return
        if reading_of is not None:
            self.store.apply_readings(reading_of[0], {reading_of[1]: reading})
            return
        for group, topic, p, offset, metadata, ts, topic_id, epoch in entries:
            self.store.apply(group, [(topic, p, offset, metadata, epoch)], ts, {topic: topic_id})

    def _restart(self, q: int, st: LoadState, log_start_offset: int) -> None:
        """The log start passed the read position (retention), or the log end went back below it
        (an unclean election lost a part that was read): what was applied may hold keys that only
        the part now gone set, and a replay over it would keep them (a stale committed offset, a
        deleted group's back). The read starts again from the log start into a fresh table."""
        log.warning("%s-%d: offset %d is out of range (log start %d) in the middle of the read: reading "
                    "again from the log start", self.topic, q, st.offset, log_start_offset)
        self.context.counters["offsets_load_restarts"] += 1
        self.store.forget_partition(q)
        self.states[q] = LoadState(log_start_offset)

    def _snapshot_missing(self, q: int, st: LoadState, log_start_offset: int) -> None:
        """Read from ``log_start_offset`` instead (0: the leader says where the log starts)."""
        if st.snapshot_id is not None:
            log.warning("%s-%d: no snapshot %s at offset %d; loading from the log start", self.topic, q,
                        st.snapshot_id, st.offset)
            self.context.counters["offsets_snapshot_missing"] += 1
            # forgotten (saved with the next snapshot): this partition gets a new one soon
            self.context.state.offsets_snapshots.pop(q, None)
        st.snapshot_id = None
        st.offset = log_start_offset
