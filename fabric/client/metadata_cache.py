"""The producer's metadata cache: the newest ``ClusterMetadata`` it has seen, and whether a
refresh is wanted.

Application threads read it (``current``, ``partition_count``) and may wait for a topic to
appear; the sender's I/O thread asks for a refresh when one is ``wanted`` and stores what comes
back (``update``: never an older version than the one held).

Thread-safety: thread-safe; ``current`` is an immutable snapshot.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from fabric.errors import ProducerClosedError, TopicNotInMetadataError
from fabric.metadata import ClusterMetadata

WAIT_SLICE_S = 0.2  # a waiting application thread asks again for a refresh this often


class MetadataCache:
    def __init__(self, wake: Callable[[], None], on_update: Callable[[ClusterMetadata], None] | None = None) -> None:
        """``wake``: tells the I/O thread that a refresh is wanted; ``on_update(md)``: called
        with each kept update before any thread can see it in ``current``."""
        self._wake = wake
        self._on_update = on_update
        self._cond = threading.Condition()
        self.current = ClusterMetadata.empty()
        self.wanted = True
        self.closed = False
        self.answers = 0  # updates kept (each answer to a refresh that is not older than ``current``)

    def want_refresh(self) -> None:
        self.wanted = True

    def take_wanted(self) -> bool:
        """True (once) when a refresh was asked for since the last call."""
        wanted, self.wanted = self.wanted, False
        return wanted

    def update(self, md: ClusterMetadata) -> bool:
        """Keep ``md`` unless it is older than what is held; True if kept."""
        with self._cond:
            if md.version < self.current.version:
                return False
            if self._on_update is not None:
                self._on_update(md)
            self.current = md
            self.answers += 1
            self._cond.notify_all()
        return True

    def partition_count(self, topic: str, max_block_ms: int) -> int:
        """Partitions of ``topic``; waits (up to ``max_block_ms``) for metadata that has it.
        Raises ``TopicNotInMetadataError``, and ``ProducerClosedError`` when the cache closes
        (the producer did) during the wait: a record queued then would never be sent."""
        t = self.current.topics.get(topic)
        if t is not None:
            return len(t.partitions)
        deadline = time.monotonic() + max_block_ms / 1000
        with self._cond:
            while True:
                if self.closed:  # not an answer about the topic; a record queued now would never be sent
                    raise ProducerClosedError()
                self.wanted = True
                self._wake()
                t = self.current.topics.get(topic)
                if t is not None:
                    return len(t.partitions)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TopicNotInMetadataError(f"topic {topic!r} not found in the cluster metadata")
                self._cond.wait(min(left, WAIT_SLICE_S))

    def partition_count_having(self, topic: str, partition: int, max_block_ms: int) -> int:
        """Partitions of ``topic`` (``partition_count``), from metadata fetched after this call
        when the metadata held lacks ``partition``: partitions may have been added since it was
        fetched. Waits (within ``max_block_ms``) for the partition to show, or for two answers
        to refreshes asked for meanwhile (the first may answer a request sent before the call),
        then returns the count they show. Raises ``TopicNotInMetadataError``, and
        ``ProducerClosedError`` when the cache closes during the wait."""
        deadline = time.monotonic() + max_block_ms / 1000
        count = self.partition_count(topic, max_block_ms)
        if partition < count:
            return count
        with self._cond:
            start = self.answers
            while True:
                if self.closed:
                    raise ProducerClosedError()
                t = self.current.topics.get(topic)
                count = len(t.partitions) if t is not None else 0
                left = deadline - time.monotonic()
                if partition < count or self.answers >= start + 2 or left <= 0:
                    if t is None:
                        raise TopicNotInMetadataError(f"topic {topic!r} not found in the cluster metadata")
                    return count
                self.wanted = True
                self._wake()
                self._cond.wait(min(left, WAIT_SLICE_S))

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()
