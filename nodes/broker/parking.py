"""Requests a broker answers later: acks=all produces waiting for the high watermark, and
long-poll fetches waiting for data. Bounded (PARKED_REQUESTS_MAX); each has a deadline.

The lot only keeps them and says which are ready (``take_ready``); the front end that parked
them answers them, re-reads fetches, and parks back (``repark_fetch``) what is still waiting.
A parked fetch is ready to re-read only when a partition it reads changed (``note_changed``:
new data or a moved high watermark), when something changed that names no partition
(``note_all_changed``: metadata, ISR), or at its deadline -- not at every pass with new data
anywhere (parked fetches x partitions reads per pass).

Not thread-safe: owned by the broker's reactor.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from fabric import protocol as P
from nodes.broker.messages import ProduceResult, TopicPartition

NO_DEADLINE_MS = 1 << 62


@dataclass(slots=True)
class ParkedProduce:
    handle: Any  # what the front end answers (a wire.Request for the Loom handlers)
    results: list[ProduceResult]
    waits: list[tuple[int, TopicPartition, int]]  # (result index, partition, offset the HW must reach)
    deadline_ms: int


@dataclass(slots=True)
class ParkedFetch:
    handle: Any  # what the front end answers and re-reads (the request and its decoded parts)
    keys: frozenset[TopicPartition]  # the partitions it reads
    deadline_ms: int


@dataclass(slots=True)
class Ready:
    """What ``take_ready`` hands back to be answered (and, for fetches, re-read)."""

    replicated: list[ParkedProduce] = field(default_factory=list)  # every wait reached
    timed_out: list[ParkedProduce] = field(default_factory=list)   # waiting results failed
    fetches: list[ParkedFetch] = field(default_factory=list)       # out of the lot: re-read


class ParkingLot:
    def __init__(self) -> None:
        self.produces: list[ParkedProduce] = []
        self.fetches: list[ParkedFetch] = []
        self._next_deadline_ms = NO_DEADLINE_MS
        self._changed: set[TopicPartition] = set()  # bounded by the broker's partitions
        self._all_changed = False

    def note_changed(self, key: TopicPartition) -> None:
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

    def park_produce(self, item: ParkedProduce) -> bool:
        """False when the lot is full (the caller answers BUFFER_FULL)."""
        if self.size >= P.PARKED_REQUESTS_MAX:
            return False
        self.produces.append(item)
        self._next_deadline_ms = min(self._next_deadline_ms, item.deadline_ms)
        return True

    def park_fetch(self, item: ParkedFetch) -> bool:
        """False when the lot is full (the caller answers with nothing)."""
        if self.size >= P.PARKED_REQUESTS_MAX:
            return False
        self.repark_fetch(item)
        return True

    def repark_fetch(self, item: ParkedFetch) -> None:
        """A fetch ``take_ready`` handed out that is still waiting (it held its place: no limit)."""
        self.fetches.append(item)
        self._next_deadline_ms = min(self._next_deadline_ms, item.deadline_ms)

    def take_ready(self, now_ms: int, replicated: Callable[[TopicPartition, int], bool]) -> Ready:
        """Take out every parked produce whose waits ``replicated(partition, offset)`` says are
        reached or that is past its deadline, and every fetch to re-read: one a changed
        partition (see the module docstring) or its deadline concerns."""
        ready = Ready()
        self._next_deadline_ms = NO_DEADLINE_MS
        changed, everything = self._changed, self._all_changed
        self._changed, self._all_changed = set(), False
        keep_p = []
        for item in self.produces:
            waits = item.waits
            if (replicated(waits[0][1], waits[0][2]) if len(waits) == 1  # the common produce: one partition
                    else all(replicated(key, offset) for _, key, offset in waits)):
                ready.replicated.append(item)
            elif now_ms >= item.deadline_ms:
                for i, _, _ in item.waits:
                    if item.results[i].error == 0:
                        item.results[i] = item.results[i].failed(P.REQUEST_TIMED_OUT, "not replicated to the ISR in time")
                ready.timed_out.append(item)
            else:
                keep_p.append(item)
                self._next_deadline_ms = min(self._next_deadline_ms, item.deadline_ms)
        self.produces = keep_p
        keep_f = []
        for item in self.fetches:
            if now_ms < item.deadline_ms and not everything and changed.isdisjoint(item.keys):
                keep_f.append(item)  # nothing it reads changed: its answer would be the same
                self._next_deadline_ms = min(self._next_deadline_ms, item.deadline_ms)
            else:
                ready.fetches.append(item)
        self.fetches = keep_f
        return ready

    def fail_partition(self, key: TopicPartition, code: int) -> list[ParkedProduce]:
        """Leadership of ``key`` moved away (or the partition is gone): parked acks=all writes
        on it are not acknowledged. Returns the produces with nothing left to wait for (to be
        answered now)."""
        keep, done = [], []
        for item in self.produces:
            if any(k == key for _, k, _ in item.waits):
                for i, k, _ in item.waits:
                    if k == key and item.results[i].error == 0:
                        item.results[i] = item.results[i].failed(code, "leadership changed before the write was "
                                                                       "replicated")
                item.waits = [w for w in item.waits if w[1] != key]
                if not item.waits:
                    done.append(item)
                    continue
            keep.append(item)
        self.produces = keep
        return done
