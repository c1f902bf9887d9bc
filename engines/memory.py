"""The reference engine: a partition log kept in a Python list. Simple and obviously right;
the conformance suite's other engines must behave exactly like it.

Not persistent: ``directory`` is accepted (to match the Engine constructor) and ignored.
It is the one engine that keeps batches in memory, so it keeps its own copy of each (bytes),
never the caller's buffer: that may be a view onto a libzmq message or a request's buffer that
its owner modifies later (fabric/buffers.py).
Not thread-safe: one owner calls it. Retention and truncation work per batch.
"""

from __future__ import annotations

import bisect
import itertools

from engines.api import OFFSET_LIMIT, EngineClosed, EngineConfig, EngineError, RecoveryReport
from engines.batch import BatchHeader, parse_header
from engines.batch import BASE_OFFSET
from engines.checks import check_read_range, validate_batch


class MemoryEngine:
    """One partition's log in memory. See ``engines.api.Engine`` for every method's contract."""

    name = "memory"

    def __init__(self, directory: str, config: EngineConfig) -> None:
        self.directory = directory
        self.config = config
        self.recovery = RecoveryReport(message="memory engine: nothing to recover")
        self._batches: list[bytes] = []
        self._headers: list[BatchHeader] = []
        self._base_offsets: list[int] = []  # parallel to _batches, for bisect
        self._log_start_offset = 0
        self._log_end_offset = 0
        self._size_bytes = 0
        self._closed = False

    # -- state --------------------------------------------------------------------------------
    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self._log_end_offset

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed("memory engine is closed")

    # -- writes -------------------------------------------------------------------------------
    def append(self, batch: bytes | bytearray | memoryview) -> int:
        """Raises CorruptBatch / BatchTooLarge / EngineClosed."""
        return self.append_many([batch])[0]

    def append_many(self, batches: list[bytes | bytearray | memoryview], *, crc_checked: bool = False) -> list[int]:
        """All-or-nothing: every batch is validated before any is stored."""
        self._check_open()
        for b in batches:
            validate_batch(b, self.config.batch_bytes_max, check_crc=not crc_checked)
        offsets = []
        for b in batches:
            base_offset = self._log_end_offset
            # one copy, stamped: never a reference to the caller's buffer (see the module doc)
            stored = b"".join((BASE_OFFSET.pack(base_offset), memoryview(b)[8:]))
            header = parse_header(stored)
            self._batches.append(stored)
            self._headers.append(header)
            self._base_offsets.append(base_offset)
            self._size_bytes += len(stored)
            self._log_end_offset = header.next_offset
            offsets.append(base_offset)
        return offsets

    # -- reads --------------------------------------------------------------------------------
    def _index_containing(self, offset: int) -> int:
        return bisect.bisect_right(self._base_offsets, offset) - 1

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Raises OffsetOutOfRange / EngineClosed."""
        self._check_open()
        check_read_range(offset, self._log_start_offset, self._log_end_offset)
        if offset == self._log_end_offset:
            return b""
        i = self._index_containing(offset)
        out = [self._batches[i]]
        total = len(self._batches[i])
        for b in itertools.islice(self._batches, i + 1, None):
            if total + len(b) > max_bytes:
                break
            out.append(b)
            total += len(b)
        return b"".join(out)

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        self._check_open()
        for h in self._headers:
            if h.max_timestamp_ms >= timestamp_ms:
                return h.base_offset
        return None

    # -- truncation and retention -----------------------------------------------------------
    def truncate_to(self, offset: int) -> None:
        """Below log_start_offset: everything is dropped and log_end_offset = log_start_offset."""
        self._check_open()
        if offset >= self._log_end_offset:
            return
        if offset < self._log_start_offset:
            i, new_end = 0, self._log_start_offset
        else:
            i = self._index_containing(offset)
            new_end = self._base_offsets[i]
        self._size_bytes -= sum(len(b) for b in self._batches[i:])
        del self._batches[i:], self._headers[i:], self._base_offsets[i:]
        self._log_end_offset = new_end

    def reset_to(self, offset: int) -> None:
        """Raises EngineError for offset < 0 / EngineClosed."""
        self._check_open()
        if not 0 <= offset < OFFSET_LIMIT:
            raise EngineError(f"cannot reset the log to offset {offset}")
        self._batches, self._headers, self._base_offsets = [], [], []
        self._log_start_offset = self._log_end_offset = offset
        self._size_bytes = 0

    def _drop_first(self, count: int) -> int:
        dropped = sum(len(b) for b in self._batches[:count])
        del self._batches[:count], self._headers[:count], self._base_offsets[:count]
        self._size_bytes -= dropped
        if self._base_offsets:
            self._log_start_offset = self._base_offsets[0]
        return dropped

    def delete_before(self, offset: int) -> int:
        self._check_open()
        count = 0
        # never the last batch: log_end_offset must stay derivable from the stored log
        while count < len(self._headers) - 1 and self._headers[count].next_offset <= offset:
            count += 1
        self._drop_first(count)
        return self._log_start_offset

    def apply_retention(self, now_ms: int, upper_bound_offset: int | None = None) -> int:
        self._check_open()
        count = 0
        size_bytes = self._size_bytes
        retention_ms, retention_bytes = self.config.retention_ms, self.config.retention_bytes
        while count < len(self._headers) - 1:
            h = self._headers[count]
            if upper_bound_offset is not None and h.next_offset > upper_bound_offset:
                break
            expired = retention_ms >= 0 and h.max_timestamp_ms < now_ms - retention_ms
            oversize = retention_bytes >= 0 and size_bytes - h.size_bytes >= retention_bytes
            if not (expired or oversize):
                break
            size_bytes -= h.size_bytes
            count += 1
        return self._drop_first(count)

    # -- durability ---------------------------------------------------------------------------
    def flush(self) -> None:
        self._check_open()

    def maybe_flush(self, now_ms: int) -> bool:
        self._check_open()
        return False

    def close(self) -> None:
        self._closed = True
