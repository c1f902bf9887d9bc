"""One log segment (Kafka's LogSegment): ``{base_offset:020d}.log`` plus its sparse
``.index``.

The .log file is whole batches back to back; ``size_bytes`` is the end of the last valid batch
(bytes past it, e.g. a torn write, are never read and are cut by recovery). Writes use
``os.pwritev`` at an explicit position with the 8-byte base offset as its own buffer, so
stamping a batch never copies it -- or, for a run of at least ``direct_write_min_bytes``, a
direct write past the page cache (engines/direct_write.py), which may leave up to a block of
zero padding after ``size_bytes`` until the next append, a roll or a close (``trim``). Reads
use ``os.pread``. Only the segment's summary and its sparse index are kept in memory.

Not thread-safe. OSError is translated to StorageFull / EngineError for writes; reads of
damaged stored data raise CorruptBatch.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Iterator

from engines.api import CorruptBatch, EngineError
from engines.batch import (
    BASE_OFFSET,
    BATCH_BYTES_MAX,
    HEADER_BYTES,
    LENGTH_PREFIX,
    LENGTH_PREFIX_BYTES,
    OFFSET_SPAN,
    OFFSET_SPAN_BYTES,
    BatchError,
    BatchHeader,
    parse_header,
    verify,
)
from engines.checks import sync_translated, translate_os_error, whole_batches_end
from engines.direct_write import (BLOCK_BYTES, OUT_OF_DESCRIPTORS_ERRNOS, UNSUPPORTED_ERRNOS, ZEROS, open_direct,
                                  write_direct)
from engines.offset_index import IndexDamaged, OffsetIndex

WALK_BATCH_BYTES_MIN = 32 * 1024  # batches this large are read by walking their headers
WALK_PREADS_MAX = 64  # header preads per read at most (a read may return less than max_bytes)
FIND_CHUNK_BYTES = 64 * 1024  # read size when walking from an index entry to a batch
SCAN_CHUNK_BYTES = 4 * 1024 * 1024  # read size for recovery scans (memory bound of a scan)
IOV_BATCHES_MAX = 512  # batches per pwritev: two iovecs each, within Linux's IOV_MAX of 1024


def log_file_name(base_offset: int) -> str:
    return f"{base_offset:020d}.log"


def index_file_name(base_offset: int) -> str:
    return f"{base_offset:020d}.index"


@dataclass(slots=True)
class ScanResult:
    """What a recovery scan of [start, end) found. ``error`` is None when every byte was whole
    valid batches; otherwise ``end_position`` is where the first bad batch starts."""

    end_position: int
    next_offset: int
    batches: int
    last_timestamp_ms: int | None
    error: str | None
    padding_bytes: int = 0  # zero bytes from end_position to the file's end: a direct write's padding


def _unwritten(iov: list, written: int) -> list:
    """The part of ``iov`` after its first ``written`` bytes (views, no copy)."""
    rest = []
    for v in iov:
        if written >= len(v):
            written -= len(v)
            continue
        rest.append(memoryview(v)[written:] if written else v)
        written = 0
    return rest


class LogSegment:
    """One segment file and its index. ``next_offset`` is one past the last stored record."""

    def __init__(self, directory: str, base_offset: int, index_interval_bytes: int) -> None:
        self.base_offset = base_offset
        self.log_path = os.path.join(directory, log_file_name(base_offset))
        self.index = OffsetIndex(os.path.join(directory, index_file_name(base_offset)), base_offset)
        self.index_interval_bytes = index_interval_bytes
        self.size_bytes = 0
        self.next_offset = base_offset
        self.first_timestamp_ms: int | None = None  # first batch's; None: not read yet
        self.last_timestamp_ms: int | None = None  # last batch's; None: not read yet
        # the largest timestamp of any batch (Kafka's maxTimestamp; timestamps may go down
        # along a log); None: not known since open or a cut (see load_max_timestamp)
        self.max_timestamp_ms: int | None = None
        self.dirty = False  # holds data not yet fsynced
        # the page-cache window (segment_cache.py): bytes [0, cache_dropped_to) were dropped from
        # the cache; under fsync ``always`` the next drop comes once the segment is cache_drop_at long
        self.cache_dropped_to = 0
        self.cache_drop_at = 0
        self._bytes_since_index_entry = 0
        self._fd = -1
        # direct writes (engines/direct_write.py): their descriptor (-1: not open), False once
        # the file system refused one; the zero bytes the file holds past size_bytes; the bytes
        # of the log's last partial block as last written directly and where that block starts
        # (-1: unknown -- read back from the file when needed)
        self._direct_fd = -1
        self._direct_ok = True
        self.padded_bytes = 0
        self.trims = 0  # how many times ``trim`` cut the file (flush jobs compare it)
        self._tail = b""
        self._tail_at = -1

    # -- file handle --------------------------------------------------------------------------
    @property
    def fd(self) -> int:
        if self._fd < 0:
            try:
                self._fd = os.open(self.log_path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise translate_os_error(e, f"open {self.log_path}") from e
        return self._fd

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    def close_fd(self) -> None:
        # each descriptor is forgotten before its close: a close that reports an error (EIO from
        # a network file system) has released it all the same, and its number may be taken by
        # the next open -- closed again (a second close_fd, ``__del__``), it was that file's
        fd, self._fd = self._fd, -1
        try:
            if fd >= 0:
                os.close(fd)
        finally:
            self.close_direct()

    def __del__(self) -> None:
        # dropped with its descriptors open (its engine abandoned without close, as a crash
        # leaves it, or a test that stands for one): they go with it, as a file object's do
        if getattr(self, "_fd", -1) >= 0 or getattr(self, "_direct_fd", -1) >= 0:
            self.close_fd()

    def __reduce_ex__(self, protocol: object) -> object:
        """A segment owns its descriptors: a copy would close the same numbers a second time."""
        raise TypeError("a LogSegment owns its descriptors and cannot be copied")

    def file_size_bytes(self) -> int:
        return os.fstat(self.fd).st_size

    # -- append -------------------------------------------------------------------------------
    def append_many(self, batches: list[tuple[bytes | bytearray | memoryview, int, int, int, int]],
                    direct_write_min_bytes: int = -1, nbytes_total: int | None = None) -> None:
        """Write (already validated) batches at the end, each ``(batch, offset, record_count,
        first_timestamp_ms, last_timestamp_ms)`` with its first 8 bytes replaced by ``offset``
        -- in one pwritev (per IOV_BATCHES_MAX batches): no copy, no header parsing; a run of
        at least ``direct_write_min_bytes`` (-1: never) in direct writes instead, through one
        copy (engines/direct_write.py). On a write error the file is cut back to its previous
        size and StorageFull / EngineError is raised; the segment is unchanged. The choice is
        made once per call, on the bytes of all its batches (``nbytes_total``, when the caller
        has counted them)."""
        position = self.size_bytes
        fd = self._fd if self._fd >= 0 else self.fd
        if nbytes_total is None:
            nbytes_total = sum(len(b[0]) for b in batches)
        direct = 0 <= direct_write_min_bytes <= nbytes_total and self._direct_ok
        at = position
        try:
            for i in range(0, len(batches), IOV_BATCHES_MAX):
                iov: list = []
                nbytes = 0
                for batch, offset, _, _, _ in batches[i:i + IOV_BATCHES_MAX]:
                    iov += (BASE_OFFSET.pack(offset), memoryview(batch)[8:])
                    nbytes += len(batch)
                if direct and self._direct_ok:
                    self._write_direct(fd, iov, at, nbytes)
                else:
                    self._write_at(fd, iov, at, nbytes)
                at += nbytes
        except Exception:
            # earlier chunks of this call may be in the file: whole valid batches past
            # size_bytes, which recovery (re-reading past the checkpoint) would take back
            self._cut_failed_write(fd, position)
            raise
        for batch, offset, record_count, first_timestamp_ms, last_timestamp_ms in batches:
            size = len(batch)
            if self._bytes_since_index_entry >= self.index_interval_bytes:
                self.index.append(offset, position)
                self._bytes_since_index_entry = size
            else:
                self._bytes_since_index_entry += size
            if position == 0:
                self.first_timestamp_ms = first_timestamp_ms
                self.max_timestamp_ms = max(first_timestamp_ms, last_timestamp_ms)
            elif self.max_timestamp_ms is not None:
                self.max_timestamp_ms = max(self.max_timestamp_ms, first_timestamp_ms, last_timestamp_ms)
            position += size
            self.next_offset = offset + record_count
            self.last_timestamp_ms = last_timestamp_ms
        self.size_bytes = position
        self.dirty = True

    def _write_at(self, fd: int, iov: list, at: int, nbytes: int) -> None:
        """Write ``iov`` (``nbytes``) at ``at``. Raises StorageFull / EngineError (the caller
        cuts the file back to where its append began)."""
        self._tail_at = -1  # the last block is no longer what the last direct write left
        self.padded_bytes = max(0, self.padded_bytes - nbytes)
        try:
            written = os.pwritev(fd, iov, at)
            if written != nbytes:  # a short write to a regular file: almost surely disk full
                rest = _unwritten(iov, written)
                if os.pwritev(fd, rest, at + written) != nbytes - written:
                    raise OSError(28, "No space left on device (short write)")
        except OSError as e:
            raise translate_os_error(e, f"append to {self.log_path}") from e

    def _cut_failed_write(self, fd: int, start: int) -> None:
        """Cut the file back to ``start``, where a failed append began. The cut is a change to
        fsync like a ``trim`` (dirty, counted): a direct write may have put whole batches of
        the failed call on the device, and a crash before the cut is durable would bring them
        back."""
        self._tail_at = -1
        self.padded_bytes = 0
        try:
            os.ftruncate(fd, start)
            self.trims += 1
            self.dirty = True
        except OSError:
            # size_bytes excludes the bytes of this call, but the file may keep them -- whole
            # batches, not only a torn one -- and recovery (which re-reads past the
            # checkpoint) would take those back after a restart: a failed cut of a failed
            # write, as with the engine's own truncation failing before. ``trim`` (at a roll
            # or close) tries again, so that they never sit before a later segment.
            pass

    def _write_direct(self, fd: int, iov: list, at: int, nbytes: int) -> None:
        """``_write_at`` with direct writes from the block holding ``at`` (its first bytes,
        the log's, written again); buffered where the file system has no direct I/O."""
        block_at = at - at % BLOCK_BYTES
        lead_bytes = at - block_at
        if self._direct_fd < 0:
            try:
                self._direct_fd = open_direct(self.log_path)
            except OSError as e:
                if e.errno not in OUT_OF_DESCRIPTORS_ERRNOS:
                    raise translate_os_error(e, f"open {self.log_path} for direct writes") from e
                # the log's own descriptor is open: this run goes buffered, the next tries again
                self._write_at(fd, iov, at, nbytes)
                return
            if self._direct_fd < 0:
                self._direct_ok = False
                self._write_at(fd, iov, at, nbytes)
                return
        if not lead_bytes:
            lead = b""
        elif self._tail_at == block_at and len(self._tail) == lead_bytes:
            lead = self._tail
        else:
            try:
                lead = os.pread(fd, lead_bytes, block_at)
            except OSError as e:
                raise translate_os_error(e, f"read {self.log_path}") from e
            if len(lead) != lead_bytes:  # the file is shorter than the log: the disk's fault
                raise EngineError(f"{self.log_path}: short read of {len(lead)}/{lead_bytes} bytes at {block_at}")
        try:
            self.padded_bytes, self._tail = write_direct(self._direct_fd, iov, lead, block_at)
        except OSError as e:
            if e.errno in UNSUPPORTED_ERRNOS:
                # refused (alignment, or no direct I/O after all) -- at the run's first write or
                # at a later one: what the earlier ones wrote is the run's own bytes (and the
                # lead's), which the buffered write writes again over them
                self._direct_ok = False
                self.close_direct()
                self._write_at(fd, iov, at, nbytes)
                return
            if e.errno == errno.ENOMEM:
                # short of memory (the staging buffer could not be made, or the kernel could not
                # pin a write's pages): this run goes buffered -- over any pieces already
                # written, as above -- and the next tries the direct way again
                self._write_at(fd, iov, at, nbytes)
                return
            raise translate_os_error(e, f"append to {self.log_path}") from e
        self._tail_at = at + nbytes - len(self._tail)

    def close_direct(self) -> None:
        """Close the direct-write descriptor and forget the last block (a rolled segment takes
        no more appends)."""
        fd, self._direct_fd = self._direct_fd, -1  # forgotten first, as in ``close_fd``
        self._tail, self._tail_at = b"", -1
        if fd >= 0:
            os.close(fd)

    def trim(self) -> None:
        """Cut whatever the file holds past the log's end -- a direct write's zero padding, or
        the bytes of a failed append whose cut failed -- before the segment is rolled or
        closed: bytes past the end of a segment that is not the last would be read as a
        damaged batch by recovery, which would then delete every later segment. Marks the
        segment dirty and counts the cut in ``trims`` (the new size must be fsynced; a flush
        job snapshot before it must not mark the segment clean). Raises StorageFull /
        EngineError."""
        try:
            if not self.padded_bytes and os.fstat(self.fd).st_size <= self.size_bytes:
                return
            os.ftruncate(self.fd, self.size_bytes)
        except OSError as e:
            raise translate_os_error(e, f"truncate {self.log_path}") from e
        self.padded_bytes = 0
        self.trims += 1
        self.dirty = True

    def sync(self) -> None:
        """fdatasync the log (data and size). Raises StorageFull / EngineError."""
        sync_translated(os.fdatasync, self.fd, self.log_path)
        self.dirty = False

    # -- reads --------------------------------------------------------------------------------
    def read(self, position: int, max_bytes: int) -> tuple[bytes, int]:
        """Whole batches from byte ``position`` (a batch start), at most ``max_bytes`` but at
        least one batch. Returns (data, next offset after the last returned batch).

        Large batches (>= WALK_BATCH_BYTES_MIN): walk their 27-byte headers with small preads
        (at most WALK_PREADS_MAX) and then read exactly the whole batches, so the data is
        copied once. Small batches: one read of max_bytes, cut at the last whole batch."""
        remaining = self.size_bytes - position
        assert remaining > 0
        limit = min(max_bytes, remaining)
        base, length, count = OFFSET_SPAN.unpack(self._pread(OFFSET_SPAN_BYTES, position))
        size = length + LENGTH_PREFIX_BYTES
        if size < HEADER_BYTES or size > remaining:
            raise CorruptBatch(f"{self.log_path}: bad batch length {length} at byte {position}")
        if size < WALK_BATCH_BYTES_MIN and size < limit:
            return self._read_small_batches(position, limit)
        end, next_offset = size, base + count
        for _ in range(WALK_PREADS_MAX):
            if end >= limit:
                break
            base, length, count = OFFSET_SPAN.unpack(self._pread(OFFSET_SPAN_BYTES, position + end))
            size = length + LENGTH_PREFIX_BYTES
            if size < HEADER_BYTES or end + size > limit:
                break
            end, next_offset = end + size, base + count
        return self._pread(end, position), next_offset

    def _read_small_batches(self, position: int, limit: int) -> tuple[bytes, int]:
        data = self._pread(limit, position)
        end, last = whole_batches_end(data, self.base_offset)
        if end < len(data):
            data = data[:end]
        base, _, count = OFFSET_SPAN.unpack_from(data, last)
        return data, base + count

    def _pread(self, size: int, position: int) -> bytes:
        data = os.pread(self.fd, size, position)
        if len(data) != size:
            raise CorruptBatch(f"{self.log_path}: short read of {len(data)}/{size} bytes at {position}")
        return data

    def read_header(self, position: int) -> BatchHeader:
        try:
            return parse_header(os.pread(self.fd, HEADER_BYTES, position))
        except BatchError as e:
            raise CorruptBatch(f"{self.log_path} at byte {position}: {e}") from e

    def iter_headers(self, position: int, offset: int) -> Iterator[tuple[int, BatchHeader]]:
        """Yield (position, header) of each batch from ``position`` (where the batch with base
        ``offset`` starts) to the end. Raises IndexDamaged if the first batch is not ``offset``
        and CorruptBatch on a damaged header."""
        chunk_start, chunk = position, b""
        first = True
        while position < self.size_bytes:
            rel = position - chunk_start
            if rel + HEADER_BYTES > len(chunk):
                chunk_start, rel = position, 0
                chunk = os.pread(self.fd, min(FIND_CHUNK_BYTES, self.size_bytes - position), position)
            try:
                header = parse_header(chunk, rel)
            except BatchError as e:
                if first:
                    raise IndexDamaged(str(e)) from e
                raise CorruptBatch(f"{self.log_path} at byte {position}: {e}") from e
            if first and header.base_offset != offset:
                raise IndexDamaged(f"{self.index.path}: entry for {offset} finds {header.base_offset}")
            first = False
            yield position, header
            position += header.size_bytes

    def find_position(self, offset: int) -> tuple[int, BatchHeader]:
        """(position, header) of the batch containing ``offset`` (which must be in this
        segment). Cost: one index lookup plus a walk of at most index_interval_bytes + one
        batch. Raises IndexDamaged / CorruptBatch."""
        entry_offset, position = self.index.lookup(offset)
        for position, header in self.iter_headers(position, entry_offset):
            if offset < header.next_offset:
                return position, header
        raise CorruptBatch(f"{self.log_path}: offset {offset} not found before the segment end")

    def load_tail(self) -> None:
        """Set next_offset / last_timestamp_ms / the index cadence from the batches after the
        last index entry (a header walk of about index_interval_bytes). A walk that raises
        (IndexDamaged / CorruptBatch) leaves them unchanged."""
        offset, position = self.index.last_entry()
        next_offset, last_timestamp_ms, since_entry = self.base_offset, self.last_timestamp_ms, 0
        for position, header in self.iter_headers(position, offset):
            next_offset, last_timestamp_ms = header.next_offset, header.last_timestamp_ms
            since_entry = self.size_bytes - self.index.last_entry()[1]
        self.next_offset, self.last_timestamp_ms = next_offset, last_timestamp_ms
        self._bytes_since_index_entry = since_entry
        if self.size_bytes and self.first_timestamp_ms is None:
            self.first_timestamp_ms = self.read_header(0).first_timestamp_ms

    def load_max_timestamp(self) -> int | None:
        """The largest timestamp in the segment (None when empty): tracked by appends once
        known, else found by one walk of every header (a segment opened from disk and not
        appended to since; a read of the whole file, once per segment and process). Raises
        IndexDamaged / CorruptBatch on damaged data."""
        if self.max_timestamp_ms is None and self.size_bytes:
            found = None
            for _, header in self.iter_headers(0, self.base_offset):
                ts = header.max_timestamp_ms
                found = ts if found is None or ts > found else found
            self.max_timestamp_ms = found
        return self.max_timestamp_ms

    # -- recovery -----------------------------------------------------------------------------
    def scan(self, position: int, offset: int, limit_bytes: int) -> ScanResult:
        """Validate batches (header, CRC, offset continuity) from byte ``position``, where the
        batch with base ``offset`` should start, to the file end, adding index entries.
        Memory: one chunk of SCAN_CHUNK_BYTES (or one batch if larger)."""
        file_end = min(self.file_size_bytes(), limit_bytes)
        result = ScanResult(position, offset, 0, self.last_timestamp_ms, None)
        self._bytes_since_index_entry = 0  # a scan starts at byte 0 or at an index entry
        chunk_start, chunk = position, b""
        while position < file_end:
            rel = position - chunk_start
            if rel + LENGTH_PREFIX_BYTES > len(chunk) or rel + _size_at(chunk, rel) > len(chunk):
                want = SCAN_CHUNK_BYTES
                if rel + LENGTH_PREFIX_BYTES <= len(chunk):
                    want = max(want, _size_at(chunk, rel))
                chunk_start, rel = position, 0
                chunk = os.pread(self.fd, min(want, file_end - position), position)
            try:
                header = verify(chunk, rel)
            except BatchError as e:
                result.error = f"byte {position}: {e}"
                break
            if header.base_offset != result.next_offset:
                result.error = f"byte {position}: base offset {header.base_offset}, expected {result.next_offset}"
                break
            if position and self._bytes_since_index_entry >= self.index_interval_bytes:
                self.index.append(header.base_offset, position)
                self._bytes_since_index_entry = 0
            self._bytes_since_index_entry += header.size_bytes
            if position == 0:
                self.first_timestamp_ms = header.first_timestamp_ms
            position += header.size_bytes
            result.end_position, result.next_offset = position, header.next_offset
            result.last_timestamp_ms = header.last_timestamp_ms
            result.batches += 1
        file_size = self.file_size_bytes()
        if result.end_position < file_size:
            if result.batches and self._zero_padding(result.end_position, file_size):
                result.error, result.padding_bytes = None, file_size - result.end_position
            elif result.error is None:
                result.error = f"byte {result.end_position}: torn tail"
        return result

    def _zero_padding(self, start: int, end: int) -> bool:
        """Whether the bytes [start, end) after a whole batch are what a direct write pads
        with: fewer than a block, all zero, up to a file end on a block boundary. (A torn
        write can look the same; its bytes were never acknowledged as durable, and are cut
        either way -- only not counted as a cut.)"""
        size = end - start
        return 0 < size < BLOCK_BYTES and end % BLOCK_BYTES == 0 and os.pread(self.fd, size, start) == ZEROS[:size]

    def truncate_to_position(self, position: int) -> int:
        """Cut the file (and index) at byte ``position``; returns the bytes removed."""
        file_size = self.file_size_bytes()
        try:
            os.ftruncate(self.fd, position)
        except OSError as e:
            raise translate_os_error(e, f"truncate {self.log_path}") from e
        self.index.truncate_to_position(position)
        self.size_bytes = min(self.size_bytes, position)
        self.padded_bytes = 0
        self._tail_at = -1
        self.cache_dropped_to = min(self.cache_dropped_to, position)
        self.cache_drop_at = 0  # the segment grows back from here: the next sync may drop again
        self.max_timestamp_ms = None  # the cut batches may have held it
        self.dirty = True
        return max(file_size - position, 0)

    def delete(self) -> None:
        self.close_fd()
        for path in (self.log_path, self.index.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass


def _size_at(chunk: bytes, rel: int) -> int:
    """Total size the length prefix at ``rel`` claims, capped at BATCH_BYTES_MAX so a garbage
    length never makes a scan allocate more than that (verify rejects it anyway)."""
    return min(LENGTH_PREFIX.unpack_from(chunk, rel)[1] + LENGTH_PREFIX_BYTES, BATCH_BYTES_MAX)
