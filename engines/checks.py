"""Validation and small helpers shared by every engine.

Pure functions, thread-safe (but for the fault-injection hook of ``sync_translated``, which
any thread may consume). Each engine validates an offered batch the same way, so the
conformance suite sees the same errors whatever the engine.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Callable

from engines.api import BatchTooLarge, CorruptBatch, EngineError, OffsetOutOfRange, StorageFailed, StorageFull
from engines.batch import (
    HEADER_BYTES,
    LENGTH_PREFIX,
    LENGTH_PREFIX_BYTES,
    BatchError,
    BatchHeader,
    verify_fields,
)

log = logging.getLogger(__name__)

_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


def validate_batch_fields(batch: bytes | bytearray | memoryview, batch_bytes_max: int, *,
                          check_crc: bool = True) -> tuple:
    """Check an offered batch: exactly one whole batch, length and CRC right (the CRC only with
    ``check_crc``), not over ``batch_bytes_max`` bytes. Returns its raw header fields
    (``engines.batch.verify_fields``: a tuple in BatchHeader field order, no BatchHeader built;
    for append hot paths). Raises CorruptBatch / BatchTooLarge."""
    size_bytes = len(batch)
    if size_bytes > batch_bytes_max:
        raise BatchTooLarge(f"batch of {size_bytes} bytes exceeds batch_bytes_max {batch_bytes_max}")
    try:
        fields = verify_fields(batch, check_crc=check_crc)
    except BatchError as e:
        raise CorruptBatch(str(e)) from e
    if fields[1] + LENGTH_PREFIX_BYTES != size_bytes:
        raise CorruptBatch(
            f"buffer holds {size_bytes} bytes but the batch header says {fields[1] + LENGTH_PREFIX_BYTES}"
        )
    return fields


def validate_batch(batch: bytes | bytearray | memoryview, batch_bytes_max: int, *,
                   check_crc: bool = True) -> BatchHeader:
    """``validate_batch_fields`` returning a BatchHeader. Raises CorruptBatch / BatchTooLarge."""
    return BatchHeader(*validate_batch_fields(batch, batch_bytes_max, check_crc=check_crc))


def check_read_range(offset: int, log_start_offset: int, log_end_offset: int) -> None:
    """Raise OffsetOutOfRange unless log_start_offset <= offset <= log_end_offset."""
    if offset < log_start_offset or offset > log_end_offset:
        raise OffsetOutOfRange(offset, log_start_offset, log_end_offset)


def whole_batches_end(buf: bytes | bytearray | memoryview, base_offset: int = -1) -> tuple[int, int]:
    """Walk the length prefixes in ``buf``; return (bytes of whole batches, position of the last
    whole batch). Only length prefixes are read (per-batch cost, no CRC). Raises CorruptBatch
    on an impossible length (stored data damaged after recovery)."""
    n = len(buf)
    pos = 0
    last_pos = -1
    while n - pos >= LENGTH_PREFIX_BYTES:
        _, batch_length = LENGTH_PREFIX.unpack_from(buf, pos)
        size = batch_length + LENGTH_PREFIX_BYTES
        if size < HEADER_BYTES:
            raise CorruptBatch(f"stored batch near offset {base_offset} has bad length {batch_length}")
        if pos + size > n:
            break
        last_pos = pos
        pos += size
    return pos, last_pos


def translate_os_error(e: OSError, what: str) -> EngineError:
    """Map an OSError to StorageFull (disk full / quota) or EngineError."""
    if e.errno in _DISK_FULL_ERRNOS:
        return StorageFull(f"{what}: {e.strerror}")
    return EngineError(f"{what}: {e}")


_injected_sync_errno: list[int] = []  # fault injection: the next fdatasync fails with this errno


def inject_sync_failure(code: int) -> None:
    """Fault injection (a broker's FAULTS ``fail_next_fsync``, only with ``faults.enabled``):
    the next fdatasync through ``sync_translated``, on any thread, fails with ``code``."""
    _injected_sync_errno.append(code)


def _raise_injected() -> None:
    try:
        code = _injected_sync_errno.pop()
    except IndexError:  # another thread's sync took it
        return
    raise OSError(code, os.strerror(code))


def sync_translated(sync: Callable[[int], None], fd: int, path: str) -> None:
    """``sync(fd)`` (``os.fsync`` / ``os.fdatasync``) of the file at ``path``, its error
    translated. Raises StorageFull / EngineError."""
    try:
        if _injected_sync_errno and sync is os.fdatasync:
            _raise_injected()
        sync(fd)
    except OSError as e:
        raise translate_os_error(e, f"fsync {path}") from e


def fence(failed: StorageFailed | None, what: str, e: BaseException) -> StorageFailed:
    """An engine's fence after a failed fsync (see StorageFailed): the failure it keeps -- the
    first one, logged once; ``failed`` is the one it kept before, if any. The engine raises a
    fresh ``StorageFailed(str(kept))``."""
    if failed is not None:
        return failed
    failed = StorageFailed(f"{what}: {e} -- the log takes no more writes; the broker restarts and recovers it")
    log.critical("%s", failed)
    return failed
