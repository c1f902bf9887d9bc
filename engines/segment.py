"""The segment engine (Kafka's Log): an ordered list of LogSegments in one partition
directory, with roll, retention, truncation, flush and recovery.

This module holds ``SegmentEngine`` itself: opening (recovery: ``engines.segment_recovery``),
the log's state, appends and rolls, reads with their index lookups and the reader LRU, and
close. Its other halves are mixins in their own modules, each over the engine's own state:
``engines.segment_durability`` (fsyncs, flush, the recovery checkpoint: when data is durable),
``engines.segment_retention`` (truncation, reset, retention: what removes records), and
``engines.segment_flush`` (the interval flush run on a flusher thread).

Files: ``{base_offset:020d}.log`` / ``.index`` per segment and ``recovery.checkpoint``
(see ``engines.segment_recovery``). Memory: O(#segments + index entries); file descriptors:
the active segment (two, once it has taken a direct write: engines/direct_write.py) plus at
most OPEN_SEGMENTS_MAX older ones (LRU), and the directory's; an engine abandoned without
``close`` (as a crash leaves it) gives them back when it is collected, flushing nothing.

Not thread-safe: one owner (the broker reactor) calls it; only a FlushJob's ``run`` runs on
another thread (and touches only its own descriptors and the checkpoint, under the lock).
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
from collections import OrderedDict
from typing import Callable, TypeVar

from engines.api import CorruptBatch, EngineClosed, EngineConfig, EngineError, FSYNC_ALWAYS, StorageFailed
from engines.batch import BatchHeader
from engines.checks import check_read_range, translate_os_error, validate_batch_fields
from engines.offset_index import POSITION_MAX, RELATIVE_OFFSET_MAX, IndexDamaged
from engines.segment_cache import drop_cached, read_drop_range
from engines.segment_durability import RECOVERY_CHECKPOINT_INTERVAL_MS, DurabilityMixin
from engines.segment_file import LogSegment
from engines.segment_flush import AsyncFlushMixin, FlushJob
from engines.segment_recovery import Checkpoint, recover
from engines.segment_retention import RetentionMixin

__all__ = ["SegmentEngine", "OPEN_SEGMENTS_MAX", "RECOVERY_CHECKPOINT_INTERVAL_MS"]

OPEN_SEGMENTS_MAX = 16  # older segments kept open for reads (LRU); the active one always is
log = logging.getLogger(__name__)
T = TypeVar("T")


class SegmentEngine(DurabilityMixin, RetentionMixin, AsyncFlushMixin):
    """One partition's log as segment files. See ``engines.api.Engine`` for the contract."""

    name = "segment"

    def __init__(self, directory: str, config: EngineConfig) -> None:
        if not 0 < config.segment_bytes_max <= POSITION_MAX:
            raise EngineError(f"segment_bytes_max must be in (0, {POSITION_MAX}]")
        if config.index_interval_bytes <= 0:
            raise EngineError("index_interval_bytes must be > 0")
        self.directory = directory
        self.config = config
        try:
            os.makedirs(directory, exist_ok=True)
            self._dir_fd = os.open(directory, os.O_RDONLY)
        except OSError as e:
            raise translate_os_error(e, f"open {directory}") from e
        self._closed = False
        self._failed: StorageFailed | None = None  # an fsync failed: no write or checkpoint again
        # asynchronous flushes (engines/segment_flush.py): the lock orders checkpoint writes of
        # the flusher thread against this owner's; the generation invalidates jobs in flight
        self._checkpoint_lock = threading.Lock()
        self._generation = 0
        self._dir_version = 0  # bumped whenever a file is created or removed (dir dirty)
        self._flush_in_flight: FlushJob | None = None
        self._segments, self.recovery, needs_flush, self._checkpoint_base = recover(directory, config)
        self._bases = [s.base_offset for s in self._segments]
        for s in self._segments:  # what an earlier process left in the page cache is the kernel's
            s.cache_dropped_to = s.size_bytes
        self._size_bytes = sum(s.size_bytes for s in self._segments)
        self._readers: OrderedDict[int, LogSegment] = OrderedDict()  # LRU by base offset
        self._read_hint: tuple[int, LogSegment, int] | None = None  # (offset, segment, position)
        self._unsynced: list[LogSegment] = []  # rolled segments not yet fsynced
        # A new log is not flushed here: nothing in it can be lost, and its four fsyncs (index,
        # segment, directory, checkpoint) made a 1,000-partition topic's creation take 10 s.
        # Its directory counts as dirty, so the flush that first makes data durable -- under
        # fsync ``always`` the first append (_sync_appended) -- makes the file's creation
        # durable with it (Kafka does the same since KAFKA-3968); an idle partition never
        # fsyncs. So does every directory at open: a process killed before that first flush
        # (or in reset_to) left names this open cannot know to be durable.
        self._dir_dirty = True
        self._checkpoint: Checkpoint | None = None
        self._last_flush_ms = 0
        self._last_checkpoint_ms: int | None = None  # of maybe_flush's clock; None: at the next one
        if needs_flush:
            # what recovery validated (marked dirty) is fsynced before the new checkpoint names
            # it; the segments before the old checkpoint keep their index files untouched
            self._unsynced = [s for s in self._segments[:-1] if s.dirty]
            self._active.dirty = True
            self.flush()
        log.debug("opened %s: %s", directory, self.recovery)

    # -- state --------------------------------------------------------------------------------
    @property
    def _active(self) -> LogSegment:
        return self._segments[-1]

    @property
    def log_start_offset(self) -> int:
        return self._segments[0].base_offset

    @property
    def log_end_offset(self) -> int:
        return self._segments[-1].next_offset  # the active segment's (read often: no second property)

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    @property
    def segment_count(self) -> int:
        return len(self._segments)

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed(f"segment engine {self.directory} is closed")

    def _check_writable(self) -> None:
        """Open, and no fsync has failed (StorageFailed)."""
        self._check_open()
        if self._failed is not None:
            raise StorageFailed(str(self._failed))

    # -- append -------------------------------------------------------------------------------
    def append(self, batch: bytes | bytearray | memoryview) -> int:
        """Raises CorruptBatch / BatchTooLarge / StorageFull / EngineClosed. The hot path: one
        CRC, one pwritev, (fsync always) one fdatasync; no BatchHeader is built."""
        if self._closed or self._failed is not None:
            self._check_writable()
        config = self.config
        fields = validate_batch_fields(batch, config.batch_bytes_max)
        try:
            [offset] = self._append_grouped([batch], [fields])
        except EngineError:
            self._sync_cut()
            raise
        if config.fsync == FSYNC_ALWAYS:
            try:
                self._sync_appended()
            except StorageFailed:
                self._cut_back(offset)
                raise
        return offset

    def append_many(self, batches: list[bytes | bytearray | memoryview], *, crc_checked: bool = False) -> list[int]:
        """Validate all, then write all, then (fsync always) one fdatasync. On StorageFull the
        batches of this call already written are cut again, so the log is unchanged."""
        if self._closed or self._failed is not None:
            self._check_writable()
        batch_bytes_max = self.config.batch_bytes_max
        check_crc = not crc_checked
        if len(batches) == 1:  # the common call (one partition's batch of a request): no comprehension
            headers = [validate_batch_fields(batches[0], batch_bytes_max, check_crc=check_crc)]
        else:
            headers = [validate_batch_fields(b, batch_bytes_max, check_crc=check_crc) for b in batches]
        start_offset = self._segments[-1].next_offset
        try:
            offsets = self._append_grouped(batches, headers)
            if self.config.fsync == FSYNC_ALWAYS and offsets:
                self._sync_appended()
        except (EngineError, StorageFailed):
            if self.log_end_offset > start_offset:
                self._cut_back(start_offset)
            self._sync_cut()
            raise
        return offsets

    def _cut_back(self, offset: int) -> None:
        """Cut a failed append's batches again. An error of the cut itself (a disk that is
        gone fails the ftruncate, the unlink or the read too) is StorageFailed, after a failed
        fsync or not: the log would still hold batches of a call about to be answered as not
        written -- never an operating error the broker answers and then serves on after (its
        followers would replicate them, and the producer's retry land after them). Fenced, the
        node stops; its restart recovers what the disk holds (a batch of the failed call there
        is then one that may have been written, as after any error the client sees)."""
        try:
            self._truncate(offset)
        except Exception as e:
            raise self._fence(e) from e

    def _append_grouped(self, batches: list, headers: list[tuple]) -> list[int]:
        """Write validated batches (``headers``: their raw header fields, see
        batch.verify_fields), rolling first wherever one would not fit the active segment's
        size, age or offset range, and every run of them that lands in one segment in one
        write (one pwritev per request, not per batch). Returns their base offsets."""
        config = self.config
        offsets: list[int] = []
        group: list[tuple] = []
        active = self._segments[-1]
        offset, size_bytes, first_ts = active.next_offset, active.size_bytes, active.first_timestamp_ms
        began = (active.base_offset, size_bytes, offset)  # where this call began (a roll's checkpoint)
        group_bytes = 0
        for batch, fields in zip(batches, headers):
            _, _, _, _, _, _, record_count, first_timestamp_ms, last_timestamp_ms, _, _, _ = fields
            batch_bytes = len(batch)
            # Roll by age compares batch timestamps, so no clock is read per append.
            if size_bytes and (
                size_bytes + batch_bytes > config.segment_bytes_max
                or last_timestamp_ms - (first_ts or 0) >= config.segment_ms_max
                or offset + record_count - active.base_offset > RELATIVE_OFFSET_MAX
            ):
                self._write_group(active, group, group_bytes)
                group, group_bytes = [], 0
                self._roll(offset, Checkpoint(*began, False))
                active = self._segments[-1]
                size_bytes, first_ts = 0, None
            if not size_bytes:
                first_ts = first_timestamp_ms
            group.append((batch, offset, record_count, first_timestamp_ms, last_timestamp_ms))
            offsets.append(offset)  # returned once every group is written (an error raises)
            offset += record_count
            size_bytes += batch_bytes
            group_bytes += batch_bytes
        self._write_group(active, group, group_bytes)
        return offsets

    def _write_group(self, active: LogSegment, group: list[tuple], group_bytes: int) -> None:
        """Write ``group`` (``group_bytes`` in all) to ``active``."""
        if group:
            active.append_many(group, self.config.direct_write_min_bytes, group_bytes)
            self._size_bytes += group_bytes

    def _roll(self, offset: int, began: Checkpoint) -> None:
        """Close the active segment for appends and start a new one at ``offset``. Under fsync
        ``always`` the flush moves the checkpoint only to ``began``, where the appending call
        began: the call's own batches before the roll may yet be cut back (append_many, when a
        later write fails), and the checkpoint must never vouch for cut bytes."""
        old = self._active
        old.trim()  # nothing past its end: recovery would take it for a damaged batch
        old.close_direct()
        if self.config.fsync == FSYNC_ALWAYS:
            self.flush(checkpoint=False)
            if began != self._checkpoint:
                self._write_checkpoint(began)
        else:
            try:
                old.index.write_pending(sync=False)
            except OSError as e:
                raise translate_os_error(e, f"write {old.index.path}") from e
            # listed already when a failed append_many rolled it before and cut back into it
            if old.dirty and old not in self._unsynced:
                self._unsynced.append(old)
        new = LogSegment(self.directory, offset, self.config.index_interval_bytes)
        new.index.reset()
        new.fd  # create the file
        self._segments.append(new)
        self._bases.append(offset)
        self._dir_dirty = True
        self._dir_version += 1
        self._touch(old)
        if self.config.fsync == FSYNC_ALWAYS:
            self._fsync_dir()
        log.debug("rolled %s at offset %d", self.directory, offset)

    # -- reads --------------------------------------------------------------------------------
    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from one segment (see Engine.read). Sequential reads resume from the
        previous read's end position without an index lookup. Raises OffsetOutOfRange /
        CorruptBatch / EngineClosed."""
        self._check_open()
        check_read_range(offset, self.log_start_offset, self.log_end_offset)
        if offset == self.log_end_offset:
            return b""
        hint = self._read_hint
        if hint is not None and hint[0] == offset and hint[2] < hint[1].size_bytes:
            _, seg, position = hint
        else:
            seg = self._segment_for(offset)
            position = self._find(seg, offset)[0]
        self._touch(seg)
        data, next_offset = seg.read(position, max_bytes)
        end_position = position + len(data)
        window = self.config.cache_window.window_bytes
        if 0 <= window < self._size_bytes and self._bytes_after(seg, end_position, window) > window:
            self._drop_behind(seg, position - window, end_position - window)
        if end_position >= seg.size_bytes and seg is not self._active:
            seg, end_position = self._segment_for(next_offset), 0
        self._read_hint = (next_offset, seg, end_position)
        return data

    def _bytes_after(self, seg: LogSegment, position: int, limit: int) -> int:
        """The log's bytes after ``position`` of ``seg`` -- or, once past ``limit``, some number
        above it (the walk from the newest segment stops there: O(limit / segment size) steps)."""
        after = seg.size_bytes - position
        for s in reversed(self._segments):
            if s is seg or after > limit:
                break
            after += s.size_bytes
        return after

    def _drop_behind(self, seg: LogSegment, start: int, end: int) -> None:
        """After a read before the window: drop what that reader read a window earlier, the
        bytes [start, end) counted from ``seg``'s first byte (negative: in the segments before
        it), so that a reader up to a window behind it still finds them cached. Segments with
        bytes not yet fsynced are left to the flusher's drops."""
        i = bisect.bisect_right(self._bases, seg.base_offset) - 1
        while i >= 0:  # O(window / segment size) steps back
            s = self._segments[i]
            if end > 0 and start < s.size_bytes and not s.dirty:
                lo, hi = read_drop_range(max(start, 0), min(end, s.size_bytes))
                if hi > lo:
                    if s is not seg:
                        self._touch(s)  # a descriptor the reader LRU closed opens again: keep them bounded
                    drop_cached(s.fd, lo, hi)
            if start >= 0:
                break
            i -= 1
            if i >= 0:
                start += self._segments[i].size_bytes
                end += self._segments[i].size_bytes

    def _segment_for(self, offset: int) -> LogSegment:
        return self._segments[max(bisect.bisect_right(self._bases, offset) - 1, 0)]

    def _find(self, seg: LogSegment, offset: int) -> tuple[int, BatchHeader]:
        return self._walk_from_index(seg, lambda: seg.find_position(offset))

    def _walk_from_index(self, seg: LogSegment, walk: Callable[[], T]) -> T:
        """``walk()``, a header walk from one of seg's index entries; when the entry does not
        name the batch at its position (IndexDamaged), rebuild the index and walk again."""
        self._ensure_index(seg)
        try:
            return walk()
        except IndexDamaged as e:
            log.warning("rebuilding damaged index %s: %s", seg.index.path, e)
            self._rebuild_index(seg)
            return walk()

    def _ensure_index(self, seg: LogSegment) -> None:
        if not seg.index.loaded and not seg.index.load(seg.size_bytes):
            log.warning("rebuilding missing or damaged index %s", seg.index.path)
            self._rebuild_index(seg)

    def _rebuild_index(self, seg: LogSegment) -> None:
        """Rebuild a (non-active) segment's index by a full CRC scan of it."""
        seg.index.reset()
        result = seg.scan(0, seg.base_offset, seg.size_bytes)
        if result.error is not None or result.next_offset != seg.next_offset:
            raise CorruptBatch(f"segment {seg.log_path} is damaged: {result.error or 'offset gap'}")
        seg.last_timestamp_ms = result.last_timestamp_ms
        try:
            seg.index.write_pending(sync=False)
        except OSError as e:
            raise translate_os_error(e, f"write {seg.index.path}") from e

    def _touch(self, seg: LogSegment) -> None:
        """Mark an older segment recently used; close the least recently used fds past
        OPEN_SEGMENTS_MAX."""
        if seg is self._active:
            return
        self._readers[seg.base_offset] = seg
        self._readers.move_to_end(seg.base_offset)
        while len(self._readers) > OPEN_SEGMENTS_MAX:
            _, old = self._readers.popitem(last=False)
            if old is not self._active:
                old.close_fd()

    def _max_timestamp_ms(self, seg: LogSegment) -> int | None:
        """The largest timestamp in ``seg`` (see LogSegment.load_max_timestamp)."""
        try:
            found = seg.load_max_timestamp()
        except IndexDamaged as e:
            raise CorruptBatch(f"segment {seg.log_path} is damaged: {e}") from e
        self._touch(seg)
        return found

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Base offset of the first batch whose largest timestamp (BatchHeader.max_timestamp_ms)
        is >= timestamp_ms, or None. Cost: the largest timestamp of each segment before the
        match (known, or one header walk per segment and process) plus a header walk of the
        segment that matches."""
        self._check_open()
        for seg in self._segments:
            largest = self._max_timestamp_ms(seg)
            if largest is None or largest < timestamp_ms:
                continue
            for _, header in seg.iter_headers(0, seg.base_offset):
                if header.max_timestamp_ms >= timestamp_ms:
                    return header.base_offset
        return None

    # -- close --------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush (marking the checkpoint clean) and close every file. Idempotent."""
        if self._closed:
            return
        try:
            if self._failed is None:  # else no checkpoint: recovery validates what came after the last
                try:
                    self._active.trim()
                except EngineError as e:  # recovery cuts the padding of the last segment anyway
                    log.warning("closing %s without cutting the bytes past its end: %s", self.directory, e)
                self.flush(clean=True)
        finally:
            self._closed = True
            # every descriptor, whichever close fails (each is released all the same), and the
            # first failure raised as the engine's error
            failed: OSError | None = None
            for seg in self._segments:
                try:
                    seg.close_fd()
                except OSError as e:
                    failed = failed or e
            try:
                os.close(self._dir_fd)
            except OSError as e:
                failed = failed or e
            if failed is not None:
                raise translate_os_error(failed, f"close {self.directory}") from failed

    def __del__(self) -> None:
        # abandoned without close (as a crash leaves it): the directory's descriptor goes with it
        # (each segment closes its own); nothing is flushed or cut
        if not getattr(self, "_closed", True):
            self._closed = True
            os.close(self._dir_fd)
