"""``BrokerCore``'s periodic work, each run by a reactor timer of the broker (``Broker``): retention
(never past a partition's high watermark), interval flushes of the partitions appended to lately
(handed to the flusher thread, ``nodes/broker/flusher.py``, when the engine flushes
asynchronously; completions collected in a per-pass hook), high-watermark checkpoints and
producer-state snapshots (those due written a slice per pass), and the page-cache budget shared
among the partitions written to lately.

``CoreTimersMixin`` is that half of ``BrokerCore``: its state is the core's own (set by
``BrokerCore.__init__``), and the appends that make a partition due for a flush are the core's.

Not thread-safe: owned by the broker's reactor, as the core is.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from engines.api import EngineError, async_flush_of
from nodes.broker import producer_snapshots as snapshots_module
from nodes.broker.messages import TopicPartition

if TYPE_CHECKING:
    from engines.api import CacheWindow
    from fabric.clock import Clock
    from fabric.config import StorageConfig
    from nodes.broker.flusher import Flusher
    from nodes.broker.partition import Partition

log = logging.getLogger(__name__)

UNFLUSHED_INTERVALS_MAX = 3  # fsync intervals a partition is watched after its latest append
# the page-cache budget goes to partitions written to within this long (share_page_cache)
CACHE_ACTIVE_MS = 60_000
CACHE_SHARE_INTERVAL_MS = 1_000


class CoreTimersMixin:
    """``BrokerCore``'s timers: retention, interval flushes, HW checkpoints, the page-cache share.
    Part of BrokerCore (its state is the core's own; kept here so that the periodic work reads
    together)."""

    # the core's state this half uses (set by BrokerCore.__init__)
    storage: StorageConfig
    clock: Clock
    partitions: dict[TopicPartition, Partition]
    flusher: Flusher | None
    cache_window: CacheWindow
    _unflushed: dict[TopicPartition, int]
    _flushing: dict[TopicPartition, Any]
    _flush_again: set[TopicPartition]
    _log_ends: dict[TopicPartition, tuple[int, int]]
    _snapshots_due: dict[TopicPartition, None]

    def apply_retention(self) -> None:
        now = self.clock.wall_ms()
        for key, part in list(self.partitions.items()):
            try:
                part.apply_retention(now)
            except EngineError as e:
                log.error("%s-%d retention failed: %s", key[0], key[1], e)

    def flush_due(self) -> None:
        """fsync=interval: flush what was appended lately (idle partitions cost nothing). An
        engine with an asynchronous flush (``engines.api.AsyncFlush``) gets its job run by the
        flusher thread; a partition stays watched while its job is in flight and after a job
        that was dropped as stale, refused (queue full) or failed, until a later one succeeds."""
        self.collect_flushes()
        now = self.clock.now_ms()
        # a partition silent for a few intervals has had a call with its interval passed: flushed
        settled_ms = UNFLUSHED_INTERVALS_MAX * self.storage.fsync_interval_ms
        for key, appended_ms in list(self._unflushed.items()):
            part = self.partitions.get(key)
            if part is None:
                del self._unflushed[key]
                self._flush_again.discard(key)
                continue
            if key in self._flushing:
                continue  # its completion decides
            try:
                if self.flusher is not None and async_flush_of(part.engine) is not None:
                    flushed = False
                    self._submit_flush(key, part, now)
                else:
                    flushed = part.engine.maybe_flush(now)
            except EngineError as e:
                log.error("%s-%d flush failed: %s", key[0], key[1], e)
                continue
            if key in self._flushing or key in self._flush_again:
                continue
            if flushed or now - appended_ms >= settled_ms:
                del self._unflushed[key]

    def _submit_flush(self, key: TopicPartition, part: Partition, now_ms: int) -> None:
        assert self.flusher is not None
        if not self.flusher.has_room():
            self._flush_again.add(key)  # the thread is behind: try again at the next tick
            return
        job = part.engine.flush_job(now_ms)
        if job is None:
            # nothing to flush (after a dropped job the engine makes the next one due at once)
            self._flush_again.discard(key)
            return
        if not self.flusher.submit(part, job):  # has_room said yes: only a stopping flusher refuses
            job.discard()
            part.engine.flush_done(job)
            self._flush_again.add(key)
            return
        self._flushing[key] = job

    def collect_flushes(self) -> None:
        """Apply the flusher thread's completed jobs (a reactor per-pass hook; cheap when none).
        A failed job is logged with its partition, as a synchronous flush failure is, and the
        partition stays watched; a stale one (the log changed meanwhile) is flushed again."""
        if self.flusher is None:
            return
        for part, job in self.flusher.completed():
            key = (part.topic, part.partition)
            if self._flushing.get(key) is job:
                del self._flushing[key]
            try:
                applied = part.engine.flush_done(job)
            except EngineError as e:
                log.error("%s-%d flush failed: %s", key[0], key[1], e)
                applied = False
            if self.partitions.get(key) is not part:
                continue  # closed or retired meanwhile
            if applied:
                self._flush_again.discard(key)
            else:
                self._flush_again.add(key)
                self._unflushed[key] = self._unflushed.get(key, self.clock.now_ms())

    def checkpoint_high_watermarks(self) -> None:
        """Write each partition's HW if it moved: a restarted leader serves it at once. Then
        find the partitions due for a producer-state snapshot (their log end moved enough since
        their last: nodes/broker/producer_snapshots.py) and start writing them
        (``snapshot_producers_due``)."""
        now = self.clock.now_ms()
        due = self._snapshots_due
        for key, part in self.partitions.items():
            part.checkpoint_high_watermark()
            if key not in due and part.producer_snapshot_due(now):
                due[key] = None
        self.snapshot_producers_due()

    def snapshot_producers_due(self) -> None:
        """Snapshot the producer tables of partitions found due, oldest found first, at most
        PRODUCER_SNAPSHOT_PRODUCERS_PER_PASS_MAX producers' worth (at least one table) per call;
        the broker calls it every PRODUCER_SNAPSHOT_PASS_INTERVAL_MS. Partitions opened together
        fall due at the same tick: written in one go, 1,000 tables of 1,000 producers held the
        reactor 5 s every minute."""
        due = self._snapshots_due
        budget = snapshots_module.PRODUCER_SNAPSHOT_PRODUCERS_PER_PASS_MAX
        now = self.clock.now_ms()
        while due and budget > 0:
            key = next(iter(due))
            del due[key]
            part = self.partitions.get(key)
            if part is not None:  # (else retired since)
                budget -= snapshots_module.PRODUCER_SNAPSHOT_FILE_PRODUCERS + len(part.producers)
                part.snapshot_producers(now)

    def share_page_cache(self) -> None:
        """Divide ``storage.page_cache_tail_bytes`` equally among the partitions whose log end
        moved within CACHE_ACTIVE_MS (at least one share): a partition nobody writes to needs no
        window for new bytes, and what it has cached the kernel evicts as it sees fit. Run
        every CACHE_SHARE_INTERVAL_MS (Broker): one pass over the partitions held here."""
        budget = self.storage.page_cache_tail_bytes
        if budget < 0:
            self.cache_window.window_bytes = -1
            return
        now = self.clock.now_ms()
        seen, active = self._log_ends, 0
        for key, part in self.partitions.items():
            end = part.log_end_offset
            last = seen.get(key)
            if last is None:
                seen[key] = (end, now - CACHE_ACTIVE_MS)  # first seen: not known to be written to
            elif last[0] != end:
                seen[key] = (end, now)
                active += 1
            elif now - last[1] < CACHE_ACTIVE_MS:
                active += 1
        self.cache_window.window_bytes = budget // max(1, active)
