"""The segment engine's truncation and retention: everything that removes records from the log
-- ``truncate_to`` and ``reset_to`` at its end, ``delete_before`` and ``apply_retention`` at its
start. ``RetentionMixin`` is that half of ``SegmentEngine`` (engines/segment.py).

Retention and delete_before work on whole segments and never delete the active one.
Time retention and offset_for_timestamp use each segment's largest timestamp (timestamps may
go down along the log), known from appends or found by one header walk of the segment.
Truncation and retention invalidate a flush job in flight (engines/segment_flush.py) and write
a checkpoint that does not vouch for removed bytes (engines/segment_durability.py).

Not thread-safe: part of SegmentEngine, owned by its owner's thread.
"""

from __future__ import annotations

import bisect
import logging
from typing import TYPE_CHECKING

from engines.api import OFFSET_LIMIT, EngineConfig, EngineError
from engines.batch import BatchHeader
from engines.segment_file import LogSegment
from engines.segment_recovery import Checkpoint

if TYPE_CHECKING:
    from typing import Callable, TypeVar

    T = TypeVar("T")

log = logging.getLogger(__name__)


class RetentionMixin:
    """``SegmentEngine``'s truncation, reset and retention. Part of SegmentEngine (its state is
    the engine's own)."""

    # the engine's state this half uses (set by SegmentEngine.__init__)
    directory: str
    config: EngineConfig
    _dir_dirty: bool
    _dir_version: int
    _checkpoint: Checkpoint | None
    _checkpoint_base: int
    _size_bytes: int
    _unsynced: list[LogSegment]
    _segments: list[LogSegment]
    _bases: list[int]
    _readers: dict[int, LogSegment]
    _read_hint: tuple[int, LogSegment, int] | None
    _active: LogSegment

    if TYPE_CHECKING:  # SegmentEngine's, never these
        @property
        def log_start_offset(self) -> int: ...
        @property
        def log_end_offset(self) -> int: ...
        def _check_writable(self) -> None: ...
        def _invalidate_flushes(self) -> None: ...
        def flush(self, clean: bool = False, checkpoint: bool = True) -> None: ...
        def _write_checkpoint(self, point: Checkpoint) -> None: ...
        def _find(self, seg: LogSegment, offset: int) -> tuple[int, BatchHeader]: ...
        def _walk_from_index(self, seg: LogSegment, walk: Callable[[], T]) -> T: ...
        def _max_timestamp_ms(self, seg: LogSegment) -> int | None: ...

    def truncate_to(self, offset: int) -> None:
        """See Engine.truncate_to; below log_start_offset everything is dropped. The new end is
        flushed (and checkpointed) before returning. Raises StorageFull / EngineError."""
        self._check_writable()
        if offset >= self.log_end_offset or self.log_start_offset == self.log_end_offset:
            return  # nothing at or after offset (an empty log may start above it)
        offset = max(offset, self.log_start_offset)
        self._checkpoint_at_or_below_cut(offset)
        self._truncate(offset)
        self.flush()

    def _checkpoint_at_or_below_cut(self, offset: int) -> None:
        """Before cutting the log at ``offset``: the checkpoint on disk must not vouch for bytes
        the cut removes. If the cut's flush then failed, appends would write other batches over
        them, and a power failure could leave the old bytes (or a mix) that recovery trusts
        without validating them. So a checkpoint past the cut is first replaced by one at the
        cut -- true, as everything before it was durable already -- and when which checkpoint
        is on disk is unknown (a flush job's may have landed), everything is flushed first.
        Raises StorageFull / EngineError with the log unchanged."""
        self._invalidate_flushes()  # no job's checkpoint lands after this one
        if self._checkpoint is None:
            self.flush()
        on_disk = self._checkpoint
        assert on_disk is not None
        i = bisect.bisect_right(self._bases, offset) - 1
        seg = self._segments[i]
        position, header = self._find(seg, offset)
        if position == 0 and i > 0:  # the cut deletes this segment: the one before ends the log
            prev = self._segments[i - 1]
            cut = Checkpoint(prev.base_offset, prev.size_bytes, header.base_offset, False)
        else:
            cut = Checkpoint(seg.base_offset, position, header.base_offset, False)
        if (cut.segment_base_offset, cut.position) < (on_disk.segment_base_offset, on_disk.position):
            self._write_checkpoint(cut)

    def _truncate(self, offset: int) -> None:
        self._invalidate_flushes()
        self._read_hint = None
        i = bisect.bisect_right(self._bases, offset) - 1
        for seg in reversed(self._segments[i + 1:]):  # newest first: a crash leaves a prefix
            self._delete_segment(seg)
        del self._segments[i + 1:], self._bases[i + 1:]
        seg = self._segments[i]
        position, header = self._find(seg, offset)
        seg.truncate_to_position(position)
        seg.next_offset = header.base_offset
        if position == 0 and i > 0:
            self._delete_segment(seg)
            del self._segments[i], self._bases[i]
        active = self._active
        self._readers.pop(active.base_offset, None)
        self._walk_from_index(active, active.load_tail)  # the cut may leave a damaged entry last
        active.dirty = True
        self._size_bytes = sum(s.size_bytes for s in self._segments)

    def reset_to(self, offset: int) -> None:
        """See Engine.reset_to (Kafka's truncateFullyAndStartAt). Crash-safe order: the
        checkpoint names the new empty segment first (an old log beside it is then fully
        scanned on open), the old segments go newest first (a crash leaves a prefix of the old
        log: a valid truncation), and the new segment is created last (an empty directory
        recovers at the checkpoint's offset). Raises EngineError / StorageFull."""
        self._check_writable()
        if not 0 <= offset < OFFSET_LIMIT:
            raise EngineError(f"cannot reset the log to offset {offset}")
        self._invalidate_flushes()
        self._write_checkpoint(Checkpoint(offset, 0, offset, False))
        for seg in reversed(self._segments):
            self._delete_segment(seg)
        self._readers.clear()
        self._unsynced = []
        self._read_hint = None
        new = LogSegment(self.directory, offset, self.config.index_interval_bytes)
        new.index.reset()
        new.fd  # create the file
        new.dirty = True
        self._segments, self._bases, self._size_bytes = [new], [offset], 0
        self._dir_dirty = True
        self._dir_version += 1
        self.flush()
        log.info("reset %s to offset %d", self.directory, offset)

    def _delete_segment(self, seg: LogSegment) -> None:
        self._readers.pop(seg.base_offset, None)
        # every mention: a flush fsyncing a deleted segment would re-create its file (empty)
        self._unsynced = [s for s in self._unsynced if s is not seg]
        seg.delete()
        # the removal survives a power loss only once the directory is fsynced: a truncation's
        # flush does it (a deleted segment back after the cut would serve the cut records again)
        self._dir_dirty = True
        self._dir_version += 1

    def _delete_first(self, count: int) -> int:
        """Delete the first ``count`` segments (never the active one); returns bytes freed."""
        count = min(count, len(self._segments) - 1)
        if count > 0:
            self._invalidate_flushes()  # a job's checkpoint may name a segment deleted here
        freed = 0
        for seg in self._segments[:count]:
            freed += seg.size_bytes
            self._delete_segment(seg)
        del self._segments[:count], self._bases[:count]
        self._size_bytes -= freed
        if count:
            self._read_hint = None
            if self._checkpoint_base < self.log_start_offset:
                self.flush()  # the checkpoint named a deleted segment
        return freed

    def delete_before(self, offset: int) -> int:
        """Delete whole segments whose records all lie before ``offset``; returns the new
        log_start_offset."""
        self._check_writable()
        count = 0
        while count < len(self._segments) - 1 and self._segments[count].next_offset <= offset:
            count += 1
        self._delete_first(count)
        return self.log_start_offset

    def apply_retention(self, now_ms: int, upper_bound_offset: int | None = None) -> int:
        """Delete the oldest segments past retention_ms (judged by the largest timestamp in
        the segment, as Kafka's maxTimestamp: a late record ending a segment does not expire
        fresher records before it) or past retention_bytes, never a segment that ends past
        ``upper_bound_offset``; returns bytes deleted."""
        self._check_writable()
        retention_ms, retention_bytes = self.config.retention_ms, self.config.retention_bytes
        count, size_bytes = 0, self._size_bytes
        while count < len(self._segments) - 1:
            seg = self._segments[count]
            if upper_bound_offset is not None and self._segments[count + 1].base_offset > upper_bound_offset:
                break  # the segment holds records at or past the bound
            expired = False
            if retention_ms >= 0:
                largest = self._max_timestamp_ms(seg)
                expired = largest is not None and largest < now_ms - retention_ms
            oversize = retention_bytes >= 0 and size_bytes - seg.size_bytes >= retention_bytes
            if not (expired or oversize):
                break
            size_bytes -= seg.size_bytes
            count += 1
        return self._delete_first(count)
