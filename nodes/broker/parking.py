"""Requests a broker answers later: acks=all produces waiting for the high watermark, and
long-poll fetches waiting for data. Bounded (PARKED_REQUESTS_MAX); each has a deadline.

A parked fetch is re-read (``Broker.build_fetch_reply``, engine reads) only when a partition it
reads changed (``note_changed``: new data or a moved high watermark), when something changed
that names no partition (``note_all_changed``: metadata, ISR), or at its deadline -- not at
every pass with new data anywhere (parked fetches x partitions reads per pass).

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fabric import protocol as P
from fabric import wire
from fabric.rpc import RpcServer

if TYPE_CHECKING:
    from nodes.broker.node import Broker


@dataclass(slots=True)
class ParkedProduce:
    req: wire.Request
    results: list  # per part: [base_offset, error, message, ...]
    waits: list[tuple[tuple[str, int], int]]  # (partition key, offset the HW must reach)
    deadline_ms: int


@dataclass(slots=True)
class ParkedFetch:
    req: wire.Request
    replica_id: int
    deadline_ms: int
    keys: frozenset = frozenset()  # the (topic, partition) it reads; set by park_fetch


class ParkingLot:
    def __init__(self) -> None:
        self.produces: list[ParkedProduce] = []
        self.fetches: list[ParkedFetch] = []
        self._next_deadline_ms = 1 << 62
        self._changed: set[tuple[str, int]] = set()  # bounded by the broker's partitions
        self._all_changed = False

    def note_changed(self, key: tuple[str, int]) -> None:
        """``key`` got new data or its high watermark moved: re-read fetches parked on it."""
        self._changed.add(key)

    def note_all_changed(self) -> None:
        """Something changed that names no partition: re-read every parked fetch."""
        self._all_changed = True

    def has_changes(self) -> bool:
        return self._all_changed or bool(self._changed)

    @property
    def size(self) -> int:
        return len(self.produces) + len(self.fetches)

    def has_due(self, now_ms: int) -> bool:
        return now_ms >= self._next_deadline_ms

    def park_produce(self, item: ParkedProduce, server: RpcServer) -> None:
        if self.size >= P.PARKED_REQUESTS_MAX:
            server.reply_error(item.req, P.BUFFER_FULL, "too many requests waiting on this broker")
            return
        self.produces.append(item)
        self._next_deadline_ms = min(self._next_deadline_ms, item.deadline_ms)

    def park_fetch(self, item: ParkedFetch, server: RpcServer) -> None:
        if self.size >= P.PARKED_REQUESTS_MAX:
            server.reply(item.req, {"parts": []})
            return
        item.keys = frozenset((tp[0], tp[1]) for tp in item.req.header["parts"]
                              if isinstance(tp, (list, tuple)) and len(tp) >= 2)
        self.fetches.append(item)
        self._next_deadline_ms = min(self._next_deadline_ms, item.deadline_ms)

    def service(self, broker: "Broker", now_ms: int) -> None:
        """Answer every parked request that is satisfied or past its deadline. Fetches are
        re-read only when a partition they read changed since the last call (see the module
        docstring) or at their deadline."""
        self._next_deadline_ms = 1 << 62
        changed, everything = self._changed, self._all_changed
        self._changed, self._all_changed = set(), False
        keep_p = []
        for item in self.produces:
            if self._produce_done(item, broker):
                broker.server.reply(item.req, {"results": item.results})
            elif now_ms >= item.deadline_ms:
                for r in item.results:
                    if r[1] == 0:
                        r[1], r[2] = P.REQUEST_TIMED_OUT, "not replicated to the ISR in time"
                broker.server.reply(item.req, {"results": item.results})
            else:
                keep_p.append(item)
                self._next_deadline_ms = min(self._next_deadline_ms, item.deadline_ms)
        self.produces = keep_p
        keep_f = []
        for item in self.fetches:
            if now_ms < item.deadline_ms and not everything and changed.isdisjoint(item.keys):
                keep_f.append(item)  # nothing it reads changed: its answer would be the same
                self._next_deadline_ms = min(self._next_deadline_ms, item.deadline_ms)
                continue
            header, payloads, nbytes = broker.build_fetch_reply(item.req, item.replica_id, now_ms)
            if nbytes > 0 or now_ms >= item.deadline_ms:
                broker.server.reply(item.req, header, payloads)
            else:
                keep_f.append(item)
                self._next_deadline_ms = min(self._next_deadline_ms, item.deadline_ms)
        self.fetches = keep_f

    @staticmethod
    def _produce_done(item: ParkedProduce, broker: "Broker") -> bool:
        for key, needed in item.waits:
            part = broker.partitions.get(key)
            if part is None or not part.is_leader:
                continue  # answered by fail_partition
            if part.high_watermark < needed:
                return False
        # the HW is there, but an ISR that shrank below min.insync.replicas meanwhile holds
        # fewer copies than acks=all promised (Kafka: not_enough_replicas_after_append)
        for tp, r in zip(item.req.header["parts"], item.results):
            part = broker.partitions.get((tp[0], tp[1]))
            if r[1] == 0 and part is not None and part.is_leader \
                    and len(part.isr) < broker.min_insync_replicas(tp[0]):
                r[1], r[2] = P.NOT_ENOUGH_REPLICAS_AFTER_APPEND, f"isr {sorted(part.isr)} shrank below min.insync.replicas"
        return True

    def fail_partition(self, key: tuple[str, int], code: int, server: RpcServer) -> None:
        """Leadership of ``key`` moved away (or the partition is gone): parked acks=all writes
        on it are not acknowledged."""
        keep = []
        for item in self.produces:
            if any(k == key for k, _ in item.waits):
                for (tp, r) in zip(item.req.header["parts"], item.results):
                    if (tp[0], tp[1]) == key and r[1] == 0:
                        r[1], r[2] = code, "leadership changed before the write was replicated"
                item.waits = [(k, o) for k, o in item.waits if k != key]
                if not item.waits:
                    server.reply(item.req, {"results": item.results})
                    continue
            keep.append(item)
        self.produces = keep
