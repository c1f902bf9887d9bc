"""Committed offsets, stored replicated in the internal topic ``__consumer_offsets``.

The table (group -> (topic, partition) -> committed offset) lives in memory; every change is
first appended to the offsets topic with acks=all and applied to the table (and answered)
only once the append is acknowledged, so an acknowledged commit survives a coordinator
restart and the loss of any one broker. A group's records all go to one offsets partition
(chosen by the client library's partitioner on the group id), and each offsets partition
has at most one append in flight: commits of one group are applied in the order they came.

Record format: key = msgpack ``[group, topic, partition]``; value = msgpack
``[offset, metadata, commit_ts_ms]``, or empty bytes for a deletion (tombstone).

On start the coordinator rebuilds the table by reading every offsets partition from its
leader up to the leader's log end as seen at the first read, waiting until the high
watermark covers it (an acknowledged commit is always below a leader's log end, and
waiting for the HW means a record that could still be truncated is never relied upon).

Not thread-safe: runs on the coordinator's reactor.
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import msgpack

from fabric import protocol as P
from fabric.errors import RemoteError
from fabric.records import build_batch, decode_batches, partition_for_key
from fabric.rpc import RpcClient
from nodes.coordinator.store import PartitionState, TopicState
from nodes.coordinator.topics import place_replicas

if TYPE_CHECKING:
    from nodes.coordinator.node import Coordinator

log = logging.getLogger(__name__)

OFFSETS_TOPIC = "__consumer_offsets"
OFFSETS_PARTITIONS = 3
OFFSETS_REPLICATION_FACTOR_MAX = 3
APPEND_TIMEOUT_MS = 5000           # one acks=all PRODUCE of a commit batch
COMMIT_TIMEOUT_MS = 15_000         # a commit not appended by then fails (request_timed_out)
RETRY_MS = 200                     # pause before retrying an append or a load read
LOAD_FETCH_BYTES_MAX = 4 * 1024 * 1024
COMMITS_PER_APPEND_MAX = 500       # commit requests folded into one batch
HW_LOOKUP_TIMEOUT_MS = 3000

TopicPartition = tuple[str, int]
DoneCallback = Callable[[RemoteError | None], None]


@dataclass
class PendingCommit:
    """One commit request (or group deletion) waiting for its append."""

    group: str
    entries: list[tuple[str, int, int | None, str]]  # topic, partition, offset (None: delete), metadata
    allow_backward: bool
    done: DoneCallback
    deadline_ms: int
    ready: bool = True      # False while the log-end check is still out
    finished: bool = False
    # re-checked just before the append: a commit validated for a generation that a rebalance
    # has since ended must not land after the partition's new owner read the committed offsets
    recheck: Callable[[], RemoteError | None] | None = None
    error: RemoteError | None = None


@dataclass
class LoadState:
    offset: int = 0
    target: int | None = None
    endpoint: str | None = None
    done: bool = False


@dataclass
class Committed:
    offset: int
    metadata: str = ""
    commit_ts_ms: int = 0


@dataclass
class _Queue:
    items: deque[PendingCommit] = field(default_factory=deque)
    busy: bool = False      # an append (or its retry pause) is outstanding


class OffsetStore:
    def __init__(self, coord: "Coordinator") -> None:
        self.coord = coord
        self.reactor = coord.reactor
        self.table: dict[str, dict[TopicPartition, Committed]] = {}
        self._queues: dict[int, _Queue] = {q: _Queue() for q in range(OFFSETS_PARTITIONS)}
        self._pending_count = 0
        self._clients: dict[str, RpcClient] = {}
        self._hw_seen: dict[TopicPartition, int] = {}
        self._load: dict[int, LoadState] = {}
        self.loaded = False
        self.counters = coord.counters

    # -- lookups -----------------------------------------------------------------------------
    def offsets_for(self, group: str) -> dict[TopicPartition, Committed]:
        return self.table.get(group, {})

    def groups(self) -> list[str]:
        return sorted(g for g, t in self.table.items() if t)

    @staticmethod
    def partition_for_group(group: str) -> int:
        return partition_for_key(group.encode(), OFFSETS_PARTITIONS)

    def _client(self, endpoint: str) -> RpcClient:
        c = self._clients.get(endpoint)
        if c is None:
            c = self._clients[endpoint] = RpcClient(self.coord.ctx, self.reactor, endpoint, identity="coordinator-offsets")
        return c

    def _leader_endpoint(self, topic: str, partition: int) -> str | None:
        t = self.coord.state.topics.get(topic)
        if t is None or not 0 <= partition < len(t.partitions):
            return None
        leader = t.partitions[partition].leader
        b = self.coord.brokers.get(leader)
        return b.endpoint if b is not None and leader in self.coord.alive else None

    # -- the offsets topic ---------------------------------------------------------------------
    def ensure_topic(self) -> None:
        """Create ``__consumer_offsets`` (RF = min(3, configured brokers), min ISR = min(2, RF),
        kept forever). Like Kafka it waits (retriable not_enough_replicas) until that many
        brokers are alive: a topic made with fewer replicas would stay under-replicated for
        good, and the loss of one broker could then lose every committed offset."""
        if OFFSETS_TOPIC in self.coord.state.topics:
            return
        alive = sorted(self.coord.alive)
        rf = min(OFFSETS_REPLICATION_FACTOR_MAX, len(self.coord.brokers))
        if rf < 1 or len(alive) < rf:
            raise RemoteError(P.NOT_ENOUGH_REPLICAS, f"the offsets topic needs {rf} live brokers, "
                                                     f"{len(alive)} are alive: retry later")
        placement = place_replicas(alive, OFFSETS_PARTITIONS, rf, 0)
        # retention never applies here: a cluster-wide retention default would otherwise
        # delete the commit records of a group that has not moved, and its offsets with them
        configs = {"min.insync.replicas": min(2, rf), "retention.ms": -1, "retention.bytes": -1}
        self.coord.state.topics[OFFSETS_TOPIC] = TopicState(
            [PartitionState(r[0], 0, r, list(r)) for r in placement], configs)
        self.coord.commit()
        log.info("created %s: %d partitions, rf %d", OFFSETS_TOPIC, OFFSETS_PARTITIONS, rf)

    # -- commits ---------------------------------------------------------------------------------
    def commit(self, group: str, entries: list[tuple[str, int, int | None, str]], *, allow_backward: bool,
               check_log_end: bool, done: DoneCallback,
               recheck: Callable[[], RemoteError | None] | None = None) -> None:
        """Queue a commit; ``done(None)`` once it is replicated and applied, ``done(error)``
        when it is rejected (nothing changed) or could not be appended in time. ``recheck``
        runs again just before the append; an error it returns rejects the commit."""
        if self._pending_count >= P.PENDING_COMMITS_MAX:
            raise RemoteError(P.BUFFER_FULL, "too many offset commits waiting; retry later")
        self.ensure_topic()
        pc = PendingCommit(group, entries, allow_backward, done, self.reactor.clock.now_ms() + COMMIT_TIMEOUT_MS,
                           recheck=recheck)
        self._queues[self.partition_for_group(group)].items.append(pc)
        self._pending_count += 1
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
        try:
            pc.done(error)
        except Exception:
            log.exception("commit callback failed")

    def _check_log_end(self, pc: PendingCommit) -> None:
        """Reject offsets beyond a partition's high watermark (asks the leaders once for
        partitions whose cached high watermark is lower than the offset)."""
        unknown: dict[str, list[list]] = {}
        for topic, p, offset, _ in pc.entries:
            if offset is not None and offset > self._hw_seen.get((topic, p), -1):
                ep = self._leader_endpoint(topic, p)
                if ep is None:
                    self._reject(pc, RemoteError(P.LEADER_NOT_AVAILABLE, f"{topic}-{p} has no leader"))
                    return
                unknown.setdefault(ep, []).append([topic, p, -1])
        if not unknown:
            self._validated(pc)
            return
        waiting = {"n": len(unknown)}

        def on_reply(h: dict | None, _p: list, err: RemoteError | None) -> None:
            waiting["n"] -= 1
            if h is None:
                self._reject(pc, err or RemoteError(P.REQUEST_TIMED_OUT, "log end lookup failed"))
            else:
                for t, p, code, hw in h.get("parts", []):
                    if code:
                        self._reject(pc, RemoteError(code, f"{t}-{p}: log end lookup failed"))
                    elif hw > self._hw_seen.get((t, p), -1):
                        self._hw_seen[(t, p)] = hw
            if waiting["n"] == 0 and not pc.finished:
                self._validated(pc)
        for ep, parts in unknown.items():
            self._client(ep).request(P.LIST_OFFSETS, {"parts": parts}, callback=on_reply, timeout_ms=HW_LOOKUP_TIMEOUT_MS)

    def _validated(self, pc: PendingCommit) -> None:
        for topic, p, offset, _ in pc.entries:
            hw = self._hw_seen.get((topic, p), -1)
            if offset is not None and offset > hw:
                self._reject(pc, RemoteError(P.OFFSET_OUT_OF_RANGE, f"offset {offset} is beyond the log end {hw} of {topic}-{p}"))
                return
        pc.ready = True
        self._pump(self.partition_for_group(pc.group))

    def _reject(self, pc: PendingCommit, error: RemoteError) -> None:
        self._finish(pc, error)
        self._pump(self.partition_for_group(pc.group))

    def _check_not_backward(self, pc: PendingCommit, overlay: dict) -> RemoteError | None:
        if pc.allow_backward:
            return None
        current = self.table.get(pc.group, {})
        for topic, p, offset, _ in pc.entries:
            if offset is None:
                continue
            key = (pc.group, topic, p)
            before = overlay[key] if key in overlay else (current[(topic, p)].offset if (topic, p) in current else None)
            if before is not None and offset < before:
                return RemoteError(P.INVALID_COMMIT_OFFSET,
                                   f"offset {offset} for {topic}-{p} is below the committed {before}: committed "
                                   "offsets only move backward by an explicit reset (loom group reset-offsets)")
        return None

    def _pump(self, q: int) -> None:
        """Send the next append of offsets partition ``q`` if none is outstanding."""
        queue = self._queues[q]
        if queue.busy or not self.loaded:
            return
        now = self.reactor.clock.now_ms()
        take: list[PendingCommit] = []
        overlay: dict[tuple[str, str, int], int | None] = {}
        while queue.items and len(take) < COMMITS_PER_APPEND_MAX:
            pc = queue.items[0]
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
            err = (pc.recheck() if pc.recheck is not None else None) or self._check_not_backward(pc, overlay)
            if err is not None:
                self._finish(pc, err)
                continue
            for topic, p, offset, _ in pc.entries:
                overlay[(pc.group, topic, p)] = offset
            take.append(pc)
        if take:
            self._append(q, take)

    def _append(self, q: int, take: list[PendingCommit]) -> None:
        queue = self._queues[q]
        endpoint = self._leader_endpoint(OFFSETS_TOPIC, q)
        if endpoint is None:
            self._retry_later(q, take)
            return
        ts = self.reactor.clock.wall_ms()
        records = []
        for pc in take:
            for topic, p, offset, metadata in pc.entries:
                key = msgpack.packb([pc.group, topic, p], use_bin_type=True)
                value = b"" if offset is None else msgpack.packb([offset, metadata, ts], use_bin_type=True)
                records.append((ts, key, value, None))
        queue.busy = True

        def on_reply(h: dict | None, _p: list, err: RemoteError | None) -> None:
            res = h["results"][0] if h is not None and h.get("results") else None
            code = res[1] if res is not None else (err.code if err else P.UNKNOWN)
            if code == 0:
                queue.busy = False
                for pc in take:
                    self._apply(pc.group, pc.entries, ts)
                    self._finish(pc, None)
                self.counters["offset_commits"] += len(take)
                self._pump(q)
            elif code in P.RETRIABLE or res is None:
                self.counters["offset_append_retries"] += 1
                self._retry_later(q, take)
            else:
                queue.busy = False
                for pc in take:
                    self._finish(pc, RemoteError(code, res[2] if res is not None else "append failed"))
                self._pump(q)
        self._client(endpoint).request(P.PRODUCE, {"acks": -1, "timeout_ms": APPEND_TIMEOUT_MS,
                                                   "parts": [[OFFSETS_TOPIC, q]]},
                                       [build_batch(records)], callback=on_reply, timeout_ms=APPEND_TIMEOUT_MS + 1000)

    def _retry_later(self, q: int, take: list[PendingCommit]) -> None:
        """Put the batch back at the front (order kept) and try again after a pause; a
        failover or a still-starting topic usually clears within a few retries."""
        queue = self._queues[q]
        queue.busy = True
        queue.items.extendleft(reversed(take))

        def again() -> None:
            queue.busy = False
            self._pump(q)
        self.reactor.call_later(RETRY_MS, again)

    def _apply(self, group: str, entries: list[tuple[str, int, int | None, str]], ts: int) -> None:
        table = self.table.setdefault(group, {})
        for topic, p, offset, metadata in entries:
            if offset is None:
                table.pop((topic, p), None)
            else:
                table[(topic, p)] = Committed(offset, metadata, ts)
        if not table:
            del self.table[group]

    # -- rebuilding the table on start -------------------------------------------------------------
    def start_loading(self) -> None:
        if OFFSETS_TOPIC not in self.coord.state.topics:
            self._loaded()
            return
        for q in range(len(self.coord.state.topics[OFFSETS_TOPIC].partitions)):
            self._load[q] = LoadState()
            self._load_step(q)

    def _load_step(self, q: int) -> None:
        st = self._load[q]
        endpoint = self._leader_endpoint(OFFSETS_TOPIC, q)
        if endpoint is None:
            self.reactor.call_later(RETRY_MS, lambda: self._load_step(q))
            return
        if endpoint != st.endpoint:
            st.endpoint, st.target = endpoint, None  # a new leader: learn its log end again

        def on_reply(h: dict | None, payloads: list, err: RemoteError | None) -> None:
            entry = h["parts"][0] if h is not None and h.get("parts") else None
            if entry is None or entry[2]:
                if entry is not None and entry[2] == P.OFFSET_OUT_OF_RANGE and entry[5] >= 0:
                    st.offset = entry[5]
                st.endpoint = None
                self.reactor.call_later(RETRY_MS, lambda: self._load_step(q))
                return
            hw, leo = entry[3], entry[4]
            if st.target is None:
                st.target = leo
            records = decode_batches(OFFSETS_TOPIC, q, payloads[0], st.offset, hw) if payloads and payloads[0] else []
            for r in records:
                self._apply_record(r.key, r.value)
            if records:
                st.offset = records[-1].offset + 1
            if st.offset >= st.target:
                log.info("%s-%d loaded up to offset %d", OFFSETS_TOPIC, q, st.offset)
                st.done = True
                if all(s.done for s in self._load.values()):
                    self._loaded()
            else:
                self.reactor.call_later(0 if records else RETRY_MS, lambda: self._load_step(q))
        self._client(endpoint).request(P.FETCH, {"replica_id": -1, "wait_ms": 0, "max_bytes": LOAD_FETCH_BYTES_MAX,
                                                 "parts": [[OFFSETS_TOPIC, q, st.offset, LOAD_FETCH_BYTES_MAX]]},
                                       callback=on_reply, timeout_ms=HW_LOOKUP_TIMEOUT_MS)

    def _apply_record(self, key: bytes | None, value: bytes) -> None:
        try:
            group, topic, p = msgpack.unpackb(key, raw=False)
            if value:
                offset, metadata, ts = msgpack.unpackb(value, raw=False)
                self._apply(group, [(topic, p, offset, metadata)], ts)
            else:
                self._apply(group, [(topic, p, None, "")], 0)
        except Exception:  # a record we cannot read must not stop the load
            self.counters["offsets_bad_records"] += 1

    def _loaded(self) -> None:
        self.loaded = True
        log.info("committed offsets loaded: %d groups", len(self.table))
        for q in self._queues:
            self._pump(q)

    def close(self) -> None:
        for c in self._clients.values():
            c.close()
