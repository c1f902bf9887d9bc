"""The LMDB engine: one LMDB environment per partition directory.

Database ``batches``: key = base offset as 8-byte big-endian, value = the stored batch (base
offset stamped). Database ``meta``: key ``state`` = (log_start_offset, log_end_offset,
size_bytes), updated in the same transaction as every change, so the three are always
consistent with the batches (LMDB transactions are atomic). When ``batches`` is empty the
state is what says where the log starts (after reset_to).

One write transaction per append; append_many uses one for all its batches. The map starts
at ``options.map_size_bytes`` (default 64 MiB) and doubles on MapFullError up to
``options.map_size_max_bytes`` (default 64 GiB), past which appends raise StorageFull.
fsync ``always``: the env syncs at every commit; ``interval``/``never``: the env is opened with
sync=False, metasync=False and flush() calls env.sync(True). A failed sync (or LMDB giving the
env up: MDB_PANIC) fences the engine: every write and flush raises ``StorageFailed`` after it.

Recovery on open checks the last batch's CRC and cuts corrupt tail batches. Retention and
truncation work per batch. Not thread-safe: one owner calls it.
"""

from __future__ import annotations

import os
import struct
from typing import Callable, TypeVar

import lmdb

from engines.api import (
    OFFSET_LIMIT,
    FSYNC_ALWAYS,
    FSYNC_INTERVAL,
    EngineClosed,
    EngineConfig,
    EngineError,
    RecoveryReport,
    StorageFailed,
    StorageFull,
)
from engines.batch import BatchError, BatchHeader, parse_header, set_base_offset, verify
from engines.checks import check_read_range, fence, translate_os_error, validate_batch

MAP_SIZE_BYTES_DEFAULT = 64 * 1024 * 1024
MAP_SIZE_MAX_BYTES_DEFAULT = 64 * 1024**3
RECOVERY_CUT_BATCHES_MAX = 1_000_000  # bound on the tail-cutting loop
_KEY = struct.Struct(">Q")
_STATE = struct.Struct(">qqq")
_STATE_KEY = b"state"
T = TypeVar("T")


def _key(offset: int) -> bytes:
    return _KEY.pack(offset)


def _seek_containing(cursor: lmdb.Cursor, offset: int) -> bool:
    """Position ``cursor`` on the batch whose base offset is the greatest <= ``offset``."""
    if cursor.set_range(_key(offset)):
        return _KEY.unpack(cursor.key())[0] <= offset or cursor.prev()
    return cursor.last()


class LmdbEngine:
    """One partition's log in LMDB. See ``engines.api.Engine`` for the contract."""

    name = "lmdb"

    def __init__(self, directory: str, config: EngineConfig) -> None:
        self.directory = directory
        self.config = config
        options = config.options or {}
        self._map_size_bytes = int(options.get("map_size_bytes", MAP_SIZE_BYTES_DEFAULT))
        self._map_size_max_bytes = int(options.get("map_size_max_bytes", MAP_SIZE_MAX_BYTES_DEFAULT))
        if not 0 < self._map_size_bytes <= self._map_size_max_bytes:
            raise EngineError("lmdb needs 0 < map_size_bytes <= map_size_max_bytes")
        sync = config.fsync == FSYNC_ALWAYS
        try:
            os.makedirs(directory, exist_ok=True)
            self._env = lmdb.open(directory, map_size=self._map_size_bytes, subdir=True, max_dbs=2,
                                  sync=sync, metasync=sync, readahead=False, meminit=False)
        except (lmdb.Error, OSError) as e:
            raise EngineError(f"cannot open lmdb env {directory}: {e}") from e
        self._map_size_bytes = max(self._map_size_bytes, self._env.info()["map_size"])
        self._batches = self._env.open_db(b"batches")
        self._meta = self._env.open_db(b"meta")
        self._closed = False
        self._failed: StorageFailed | None = None  # env.sync failed: no write again (see StorageFailed)
        self._dirty = False
        self._last_flush_ms = 0
        self._log_start_offset = self._log_end_offset = self._size_bytes = 0
        self.recovery = self._recover()

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

    @property
    def map_size_bytes(self) -> int:
        return self._map_size_bytes

    def _check_open(self) -> None:
        if self._closed:
            raise EngineClosed(f"lmdb engine {self.directory} is closed")

    def _check_writable(self) -> None:
        """Open, and no sync has failed (StorageFailed)."""
        self._check_open()
        if self._failed is not None:
            raise StorageFailed(str(self._failed))

    def _put_state(self, txn: lmdb.Transaction, start: int, end: int, size_bytes: int) -> None:
        txn.put(_STATE_KEY, _STATE.pack(start, end, size_bytes), db=self._meta)

    # -- write transactions -------------------------------------------------------------------
    def _write(self, body: Callable[[lmdb.Transaction], T]) -> T:
        """Run ``body`` in one write transaction, growing the map on MapFullError (doubling, up
        to map_size_max_bytes). Raises StorageFull / EngineError / StorageFailed; on error nothing
        changed."""
        self._check_writable()
        for _ in range(64):  # bounded: each retry doubles the map
            try:
                with self._env.begin(write=True) as txn:
                    result = body(txn)
                self._dirty = True
                return result
            except lmdb.MapFullError as e:
                if self._map_size_bytes >= self._map_size_max_bytes:
                    raise StorageFull(f"lmdb map of {self.directory} is full at "
                                      f"map_size_max_bytes={self._map_size_max_bytes}") from e
                self._map_size_bytes = min(self._map_size_bytes * 2, self._map_size_max_bytes)
                self._env.set_mapsize(self._map_size_bytes)
            except lmdb.DiskError as e:
                raise StorageFull(f"lmdb {self.directory}: {e}") from e
            except lmdb.PanicError as e:  # LMDB itself gave the env up after a failed write
                raise self._fence(e) from e
            except lmdb.Error as e:
                raise EngineError(f"lmdb {self.directory}: {e}") from e
            except OSError as e:
                raise translate_os_error(e, f"lmdb {self.directory}") from e
        raise AssertionError("unreachable: map growth loop exceeded its bound")

    def append(self, batch: bytes | bytearray | memoryview) -> int:
        """Raises CorruptBatch / BatchTooLarge / StorageFull / EngineClosed."""
        return self.append_many([batch])[0]

    def append_many(self, batches: list[bytes | bytearray | memoryview], *, crc_checked: bool = False) -> list[int]:
        """One write transaction for all: all-or-nothing."""
        self._check_writable()
        headers = [validate_batch(b, self.config.batch_bytes_max, check_crc=not crc_checked) for b in batches]
        if not batches:
            return []

        def body(txn: lmdb.Transaction) -> tuple[list[int], int, int]:
            offset, size_bytes, offsets = self._log_end_offset, self._size_bytes, []
            for batch, header in zip(batches, headers):
                value = bytearray(batch)
                set_base_offset(value, offset)
                txn.put(_key(offset), value, append=True, db=self._batches)
                offsets.append(offset)
                offset += header.record_count
                size_bytes += len(value)
            self._put_state(txn, self._log_start_offset, offset, size_bytes)
            return offsets, offset, size_bytes

        offsets, self._log_end_offset, self._size_bytes = self._write(body)
        return offsets

    # -- reads --------------------------------------------------------------------------------
    def read(self, offset: int, max_bytes: int) -> bytes:
        """One read transaction; copies each value once (the join). Raises OffsetOutOfRange /
        EngineClosed."""
        self._check_open()
        check_read_range(offset, self._log_start_offset, self._log_end_offset)
        if offset == self._log_end_offset:
            return b""
        with self._env.begin(db=self._batches, buffers=True) as txn:
            cursor = txn.cursor()
            if not _seek_containing(cursor, offset):
                raise EngineError(f"lmdb {self.directory}: offset {offset} not found")
            first = cursor.value()
            parts, total = [first], len(first)
            while cursor.next():
                value = cursor.value()
                if total + len(value) > max_bytes:
                    break
                parts.append(value)
                total += len(value)
            return b"".join(parts)

    def _headers(self, txn: lmdb.Transaction):
        """Yield (key, header) of every batch, oldest first (reads 57 bytes of each value)."""
        cursor = txn.cursor(db=self._batches)
        for key, value in cursor:
            yield key, parse_header(value)

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Linear in the number of batches before the match (LMDB is keyed by offset)."""
        self._check_open()
        with self._env.begin(buffers=True) as txn:
            for _, header in self._headers(txn):
                if header.max_timestamp_ms >= timestamp_ms:
                    return header.base_offset
        return None

    # -- truncation and retention -------------------------------------------------------------
    def truncate_to(self, offset: int) -> None:
        """See Engine.truncate_to; below log_start_offset everything is dropped. One txn."""
        self._check_writable()
        if offset >= self._log_end_offset:
            return

        def body(txn: lmdb.Transaction) -> tuple[int, int]:
            cursor = txn.cursor(db=self._batches)
            if offset < self._log_start_offset:
                found = cursor.first()
            else:
                found = _seek_containing(cursor, offset)
            new_end, freed = self._log_start_offset, 0
            if found:
                new_end = max(_KEY.unpack(cursor.key())[0], self._log_start_offset)
                while cursor.key():
                    freed += len(cursor.value())
                    if not cursor.delete():
                        break
            self._put_state(txn, self._log_start_offset, new_end, self._size_bytes - freed)
            return new_end, self._size_bytes - freed

        self._log_end_offset, self._size_bytes = self._write(body)
        self.flush()

    def reset_to(self, offset: int) -> None:
        """See Engine.reset_to. One write transaction empties ``batches`` and records
        (offset, offset, 0) in ``meta``: recovery of an empty log takes its start from there."""
        self._check_writable()
        if not 0 <= offset < OFFSET_LIMIT:
            raise EngineError(f"cannot reset the log to offset {offset}")

        def body(txn: lmdb.Transaction) -> None:
            txn.drop(self._batches, delete=False)
            self._put_state(txn, offset, offset, 0)

        self._write(body)
        self._log_start_offset = self._log_end_offset = offset
        self._size_bytes = 0
        self.flush()

    def _delete_first_where(self, should_delete: Callable[[BatchHeader, int], bool]) -> int:
        """Delete batches from the oldest while should_delete(header, size_bytes_left) holds,
        never the last one. Returns bytes freed."""

        def body(txn: lmdb.Transaction) -> tuple[int, int]:
            cursor = txn.cursor(db=self._batches)
            freed, start = 0, self._log_start_offset
            if not cursor.first():
                return freed, start
            while True:
                header = parse_header(cursor.value())
                if header.next_offset >= self._log_end_offset:  # the last batch stays
                    break
                if not should_delete(header, self._size_bytes - freed):
                    break
                freed += header.size_bytes
                start = header.next_offset
                if not cursor.delete():
                    break
            self._put_state(txn, start, self._log_end_offset, self._size_bytes - freed)
            return freed, start

        freed, self._log_start_offset = self._write(body)
        self._size_bytes -= freed
        return freed

    def delete_before(self, offset: int) -> int:
        self._check_writable()
        self._delete_first_where(lambda h, _: h.next_offset <= offset)
        return self._log_start_offset

    def apply_retention(self, now_ms: int, upper_bound_offset: int | None = None) -> int:
        self._check_writable()
        retention_ms, retention_bytes = self.config.retention_ms, self.config.retention_bytes
        if retention_ms < 0 and retention_bytes < 0:
            return 0

        def should_delete(h: BatchHeader, size_bytes: int) -> bool:
            if upper_bound_offset is not None and h.next_offset > upper_bound_offset:
                return False
            expired = retention_ms >= 0 and h.max_timestamp_ms < now_ms - retention_ms
            return expired or (retention_bytes >= 0 and size_bytes - h.size_bytes >= retention_bytes)

        return self._delete_first_where(should_delete)

    # -- durability and recovery --------------------------------------------------------------
    def flush(self) -> None:
        """Raises EngineClosed / StorageFailed: a failed sync fences the engine, as the segment
        engine's (pages of transactions committed without a sync may have been dropped, and a
        later sync that succeeds would make a meta page pointing at them durable)."""
        self._check_writable()
        if self.config.fsync != FSYNC_ALWAYS:
            try:
                self._env.sync(True)
            except lmdb.Error as e:
                raise self._fence(e) from e
        self._dirty = False

    def _fence(self, e: BaseException) -> StorageFailed:
        self._failed = fence(self._failed, f"lmdb sync {self.directory}", e)
        return StorageFailed(str(self._failed))

    def maybe_flush(self, now_ms: int) -> bool:
        self._check_open()
        if self.config.fsync != FSYNC_INTERVAL or now_ms - self._last_flush_ms < self.config.fsync_interval_ms:
            return False
        self._last_flush_ms = now_ms
        if not self._dirty:
            return False
        self.flush()
        return True

    def close(self) -> None:
        """Flush and close the env. Idempotent."""
        if self._closed:
            return
        try:
            if self._failed is None:
                self.flush()
        finally:
            self._closed = True
            self._env.close()

    def _recover(self) -> RecoveryReport:
        """Load the state; CRC-check the last batch and cut corrupt tail batches."""

        def body(txn: lmdb.Transaction) -> tuple[int, int, int, int, int]:
            raw = txn.get(_STATE_KEY, db=self._meta)
            start, end, size_bytes = _STATE.unpack(raw) if raw else (0, 0, 0)
            cursor = txn.cursor(db=self._batches)
            scanned = cut_bytes = 0
            while cursor.last() and scanned < RECOVERY_CUT_BATCHES_MAX:
                scanned += 1
                value = cursor.value()
                try:
                    header = verify(value)
                    if header.size_bytes == len(value) and header.base_offset == _KEY.unpack(cursor.key())[0]:
                        end = header.next_offset
                        break
                except BatchError:
                    pass
                cut_bytes += len(value)
                size_bytes -= len(value)
                end = _KEY.unpack(cursor.key())[0]
                cursor.delete()
            start = _KEY.unpack(cursor.key())[0] if cursor.first() else end
            self._put_state(txn, start, end, size_bytes)
            return start, end, size_bytes, scanned, cut_bytes

        start, end, size_bytes, scanned, cut = self._write(body)
        self._log_start_offset, self._log_end_offset, self._size_bytes = start, end, size_bytes
        if cut:
            self.flush()
        message = f"verified last batch; cut {cut} corrupt tail bytes" if cut else "clean"
        return RecoveryReport(batches_scanned=scanned, truncated_bytes=cut, message=message)
