"""The segment engine's durability: the fsyncs of appends, ``flush`` / ``maybe_flush``, and
the recovery checkpoint's moves. ``DurabilityMixin`` is that half of ``SegmentEngine``
(engines/segment.py); the interval flush run on a flusher thread is ``engines.segment_flush``.

Durability: fsync ``always`` = one fdatasync at the end of append/append_many (group commit; the
directory too while a file's creation or removal is not yet durable, as a new log's first segment);
``interval`` = maybe_flush(now_ms); ``never`` = only flush()/close(). A flush fsyncs the dirty
segments and indexes and moves the recovery checkpoint -- an interval flush moves it at most
every RECOVERY_CHECKPOINT_INTERVAL_MS (Kafka's ``log.flush.offset.checkpoint.interval.ms``):
replacing the file costs two fsyncs and a rename, ~0.7 ms median but 10-70 ms in the tail on
this machine's disk. ``flush_job``/``flush_done`` split the interval flush so that a broker runs
its fsyncs and checkpoint replacement on its flusher thread (design: engines/segment_flush.py);
truncation, reset, retention, a synchronous flush and close invalidate a job in flight. A checkpoint
left behind is still true (only truncation and retention change bytes it vouches for, and both
write a new one at once); recovery after a crash then re-validates more of the log.

Not thread-safe: part of SegmentEngine, owned by its owner's thread; only ``_fence`` is also
called on the flusher thread (it sets ``_failed``, once).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from engines.api import EngineConfig, EngineError, FSYNC_ALWAYS, FSYNC_INTERVAL, StorageFailed
from engines.checks import fence, sync_translated, translate_os_error
from engines.segment_cache import cold_drops, drop_cached, drop_step
from engines.segment_file import LogSegment
from engines.segment_flush import FlushJob
from engines.segment_recovery import Checkpoint, write_checkpoint

RECOVERY_CHECKPOINT_INTERVAL_MS = 10_000  # an interval flush moves the recovery checkpoint at most this often


class DurabilityMixin:
    """``SegmentEngine``'s fsyncs, flushes and checkpoint writes. Part of SegmentEngine (its
    state is the engine's own)."""

    # the engine's state this half uses (set by SegmentEngine.__init__)
    directory: str
    config: EngineConfig
    _dir_fd: int
    _dir_dirty: bool
    _failed: StorageFailed | None
    _flush_in_flight: FlushJob | None
    _checkpoint: Checkpoint | None
    _checkpoint_base: int
    _last_flush_ms: int
    _last_checkpoint_ms: int | None
    _unsynced: list[LogSegment]
    _segments: list[LogSegment]
    _active: LogSegment

    if TYPE_CHECKING:  # SegmentEngine's, never these
        def _check_writable(self) -> None: ...
        def _invalidate_flushes(self) -> None: ...
        def _touch(self, seg: LogSegment) -> None: ...

    # -- the fsyncs of appends ----------------------------------------------------------------
    def _fence(self, e: BaseException) -> StorageFailed:
        """An fsync failed: refuse every write and checkpoint from now on (see StorageFailed).
        Also called on the flusher thread when a job's fsync fails (``FlushJob.on_sync_failed``):
        it only sets ``_failed``, once, which the owner reads."""
        self._failed = fence(self._failed, self.directory, e)
        return StorageFailed(str(self._failed))

    def _sync_segment(self, seg: LogSegment) -> None:
        try:
            seg.sync()
        except EngineError as e:
            raise self._fence(e) from e

    def _sync_appended(self) -> None:
        """Under fsync ``always``, after an append: fdatasync the active segment, and fsync the
        directory if a file's creation or removal is not yet durable there (a new log's first
        segment: a record acknowledged as synced must not vanish with its file's name).
        Raises StorageFailed (fenced)."""
        seg = self._segments[-1]
        self._sync_segment(seg)
        if self._dir_dirty:
            self._fsync_dir()
        window = self.config.cache_window.window_bytes
        if window >= 0 and seg.size_bytes >= seg.cache_drop_at:  # a step grown: out of the page cache
            self._drop_cold(window)

    def _sync_cut(self) -> None:
        """Under fsync ``always``, make the cut of a failed append durable before its error is
        answered: a direct write may have put whole batches of the call on the device, a roll
        in the middle of the call fsynced its first batches into the old segment, and a crash
        must not bring back records a client was told were not written."""
        if self.config.fsync != FSYNC_ALWAYS or self._failed is not None or not self._active.dirty:
            return
        self._sync_segment(self._active)
        if self._dir_dirty:
            self._fsync_dir()

    # -- flush and checkpoint -----------------------------------------------------------------
    def _fsync_dir(self) -> None:
        try:
            sync_translated(os.fsync, self._dir_fd, self.directory)
        except EngineError as e:  # a segment's creation or removal may not survive: as a data fsync
            raise self._fence(e) from e
        self._dir_dirty = False

    def flush(self, clean: bool = False, checkpoint: bool = True) -> None:
        """fsync every dirty segment and index, then (``checkpoint``) move the recovery
        checkpoint to the log end. Raises StorageFull / EngineError / EngineClosed /
        StorageFailed."""
        self._check_writable()
        self._invalidate_flushes()  # this flush covers what a job in flight would, and more
        for seg in self._unsynced + [self._active]:
            try:
                seg.index.write_pending(sync=seg.dirty)
            except OSError as e:
                raise translate_os_error(e, f"write {seg.index.path}") from e
            if seg.dirty:
                self._sync_segment(seg)
        self._unsynced = []
        if self._dir_dirty:
            self._fsync_dir()
        self._await_overlapping_job()
        window = self.config.cache_window.window_bytes
        if window >= 0:  # every byte is durable now
            self._drop_cold(window)
        if not checkpoint:
            return
        active = self._active
        point = Checkpoint(active.base_offset, active.size_bytes, active.next_offset, clean)
        if point != self._checkpoint:
            self._write_checkpoint(point)

    def _drop_cold(self, window: int) -> None:
        """Drop the log's bytes outside the page-cache window from the cache
        (engines/segment_cache.py); every byte of the log is durable when this runs."""
        active = self._active
        for seg, start, end in cold_drops(self._segments, window):
            if seg is not active:
                self._touch(seg)  # a descriptor the reader LRU closed opens again: keep them bounded
            drop_cached(seg.fd, start, end)
            seg.cache_dropped_to = end
        active.cache_drop_at = active.size_bytes + drop_step(window)

    def _await_overlapping_job(self) -> None:
        """Before a flush vouches for anything: a flush job whose fsyncs overlapped this one's
        may have been told of a writeback error this one was not (the kernel reports one once
        per open file, and the job's descriptors are dups of ours). Wait for its fsyncs to end,
        then for the fence it sets when one failed. The wait is at most what is left of the
        job's fsyncs of the same files, which this flush has just done itself; a job whose
        fsyncs began after ours ended cannot have taken an error ours did not see."""
        job = self._flush_in_flight
        if job is not None and job.syncing:
            job.synced.wait()
        self._check_writable()

    def _write_checkpoint(self, point: Checkpoint) -> None:
        """Replace the checkpoint with ``point``. Until that returns, which checkpoint is on disk
        is unknown (a replacement that fails after its rename leaves the new one): a later flush
        then writes its own even at the old point. Raises StorageFull / EngineError /
        StorageFailed (never a checkpoint after a failed fsync)."""
        self._check_writable()
        self._checkpoint = None
        write_checkpoint(self.directory, self._dir_fd, point)
        self._checkpoint = point
        self._checkpoint_base = point.segment_base_offset

    def _interval_flush_due(self, now_ms: int) -> bool:
        """Under fsync ``interval``: the interval has passed (restarted here) and data is dirty."""
        if self.config.fsync != FSYNC_INTERVAL or now_ms - self._last_flush_ms < self.config.fsync_interval_ms:
            return False
        self._last_flush_ms = now_ms
        return bool(self._active.dirty or self._unsynced)

    def _checkpoint_due(self, now_ms: int) -> bool:
        return self._last_checkpoint_ms is None or now_ms - self._last_checkpoint_ms >= RECOVERY_CHECKPOINT_INTERVAL_MS

    def maybe_flush(self, now_ms: int) -> bool:
        self._check_writable()
        if not self._interval_flush_due(now_ms):
            return False
        due = self._checkpoint_due(now_ms)
        self.flush(checkpoint=due)
        if due:
            self._last_checkpoint_ms = now_ms
        return True
