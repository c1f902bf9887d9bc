"""The storage-engine interface: one partition's log of record batches.

An engine stores whole batches (``engines.batch``) in offset order and never unpacks their
payload. Offsets are logical record numbers; byte positions are never called offsets.

Thread-safety: an engine instance is NOT thread-safe; one owner (the broker's reactor thread)
calls it. Different instances (different partitions / directories) are independent. The one
exception: the ``run()`` of a job from the optional ``AsyncFlush.flush_job`` runs on the
broker's flusher thread (its fsyncs off the reactor).

Errors: every failure an operator can cause (bad input, full disk, corrupt files, offsets out
of range) raises a subclass of ``EngineError``; third-party errors are translated at the
boundary (``raise EngineError(...) from e``). Programmer errors (calling after close) may
raise AssertionError.
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from engines.errors import LoomError
from engines.direct_write import DIRECT_WRITE_MIN_BYTES

FSYNC_ALWAYS = "always"
FSYNC_INTERVAL = "interval"
FSYNC_NEVER = "never"
FSYNC_POLICIES = (FSYNC_ALWAYS, FSYNC_INTERVAL, FSYNC_NEVER)
OFFSET_LIMIT = 1 << 63  # offsets are signed 64-bit in the batch header: 0 <= offset < this


class EngineError(LoomError):
    """Root of every error raised by an engine."""


class OffsetOutOfRange(EngineError):
    """The offset is below log_start_offset or above log_end_offset."""

    def __init__(self, offset: int, log_start_offset: int, log_end_offset: int) -> None:
        super().__init__(
            f"offset {offset} out of range [{log_start_offset}, {log_end_offset}]"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.log_end_offset = log_end_offset


class CorruptBatch(EngineError):
    """A stored or offered batch failed validation (bad header, length or CRC)."""


class BatchTooLarge(CorruptBatch):
    """An offered batch is larger than ``EngineConfig.batch_bytes_max`` (Kafka's
    MESSAGE_TOO_LARGE). A subclass of CorruptBatch so callers that only know that still
    reject it."""


class StorageFull(EngineError):
    """The disk (or the LMDB map, past its growth limit) is full; the log stays readable."""


class EngineClosed(EngineError):
    """The engine was used after close()."""


class StorageFailed(Exception):
    """An fsync of the log's data (or of its directory) failed -- or the cut of a failed append's
    batches did (segment engine: the log would serve batches its caller is told were not
    written). After a failed fsync the kernel may have dropped the pages it covered and marked
    them clean, so a later fsync that succeeds proves nothing about them (PostgreSQL's
    "fsyncgate"): nothing written since the last checkpoint can be vouched for. The engine
    refuses every write and checkpoint from then on, and closing it writes no checkpoint.
    Deliberately not an ``EngineError`` (an operating error a handler answers and the node
    serves on): the node stops, and its restart recovers the log from disk, validating
    everything after the last good checkpoint -- as Kafka stops a broker whose log directory
    failed and PostgreSQL panics."""


@dataclass(slots=True)
class CacheWindow:
    """How many bytes at the end of a log to keep in the page cache once durable; -1: leave
    the cache to the kernel. One object may be shared by many logs: a broker divides its
    ``storage.page_cache_tail_bytes`` among the partitions written to lately and updates
    ``window_bytes`` every second (nodes/broker/core_timers.py ``share_page_cache``), and each log
    reads it when it drops."""

    window_bytes: int = -1


@dataclass(slots=True)
class EngineConfig:
    """Settings for one partition log. Units are in the names.

    ``options`` carries engine-specific settings (e.g. ``map_size_bytes`` for lmdb) as given
    in the YAML ``storage.options`` mapping.
    """

    fsync: str = FSYNC_INTERVAL
    fsync_interval_ms: int = 1000
    segment_bytes_max: int = 128 * 1024 * 1024
    segment_ms_max: int = 7 * 24 * 3600 * 1000
    index_interval_bytes: int = 4096
    retention_ms: int = -1  # -1: keep forever
    retention_bytes: int = -1  # -1: no size limit
    batch_bytes_max: int = 16 * 1024 * 1024
    options: dict = field(default_factory=dict)
    # the segment engine drops durable bytes older than this window from the page cache
    # (engines/segment_cache.py); other engines ignore it
    cache_window: CacheWindow = field(default_factory=CacheWindow)
    # the segment engine writes runs of at least this many bytes past the page cache (O_DIRECT,
    # engines/direct_write.py); -1: never. Other engines ignore it
    direct_write_min_bytes: int = DIRECT_WRITE_MIN_BYTES

    def __post_init__(self) -> None:
        if self.fsync not in FSYNC_POLICIES:
            raise EngineError(f"fsync must be one of {FSYNC_POLICIES}, not {self.fsync!r}")
        if self.direct_write_min_bytes < -1:
            raise EngineError(f"direct_write_min_bytes must be -1 (never) or >= 0, not {self.direct_write_min_bytes}")

    def to_json(self) -> str:
        """These settings as JSON, the window as its bytes: for another process to open a log
        with them (``from_json``). The window is a copy there, no longer shared."""
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields["cache_window"] = self.cache_window.window_bytes
        return json.dumps(fields)

    @classmethod
    def from_json(cls, text: str) -> EngineConfig:
        fields = json.loads(text)
        fields["cache_window"] = CacheWindow(fields["cache_window"])
        return cls(**fields)


@dataclass(frozen=True, slots=True)
class RecoveryReport:
    """What open() found and did. ``truncated_bytes`` > 0 means a torn or corrupt tail was cut."""

    batches_scanned: int = 0
    truncated_bytes: int = 0
    rebuilt_indexes: int = 0
    message: str = ""


@runtime_checkable
class Engine(Protocol):
    """One partition's log. Constructed as ``EngineClass(directory: str, config: EngineConfig)``;
    the constructor opens (creating if needed) and recovers the log, and records what it did
    in ``recovery``."""

    name: str
    recovery: RecoveryReport
    # The settings the engine was opened with. Retention (``retention_ms``,
    # ``retention_bytes``) is read from here at every apply_retention(), so the owner may
    # change those two fields at run time (topic configs altered); the rest are fixed.
    config: EngineConfig

    @property
    def log_start_offset(self) -> int:
        """First offset still stored (0 for a new log; moves up with retention)."""
        ...

    @property
    def log_end_offset(self) -> int:
        """The offset the next appended record gets (one past the last stored record)."""
        ...

    @property
    def size_bytes(self) -> int:
        """Bytes of batches stored (what retention by size counts)."""
        ...

    def append(self, batch: bytes | bytearray | memoryview) -> int:
        """Validate the batch (header, length, CRC; raises CorruptBatch), stamp its base offset
        with log_end_offset, store it and return that base offset. Under fsync ``always`` the
        data is durable on return; otherwise after the next flush()."""
        ...

    def append_many(self, batches: list[bytes | bytearray | memoryview], *, crc_checked: bool = False) -> list[int]:
        """Append several batches with one durability point (one fsync under ``always``):
        group commit. Returns their base offsets. All-or-nothing on validation failure.
        ``crc_checked``: the caller has verified every batch's CRC (``engines.batch.verify``)
        and changed none of the bytes it covers since (stamping the base offset and leader
        epoch does not touch them): the engine checks everything else but not the CRC again
        (the broker verifies each batch once, to answer a corrupt one on its own)."""
        ...

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches, concatenated, starting with the batch that contains ``offset``, up to
        ``max_bytes`` -- but always at least one batch when offset < log_end_offset, even if
        it is larger than max_bytes. Empty bytes when offset == log_end_offset. Raises
        OffsetOutOfRange when offset < log_start_offset or offset > log_end_offset."""
        ...

    def truncate_to(self, offset: int) -> None:
        """Drop every batch at and after ``offset``. ``offset`` must be a batch boundary or
        inside a batch (the whole batch containing it is dropped, so log_end_offset becomes
        that batch's base offset). No-op if offset >= log_end_offset."""
        ...

    def reset_to(self, offset: int) -> None:
        """Drop every batch and make the log empty, starting at ``offset``: afterwards
        log_start_offset == log_end_offset == offset, and the next append gets base offset
        ``offset``. ``offset`` may be below, at or above the current log_end_offset (a
        follower behind the leader's log start restarts there: Kafka's
        truncateFullyAndStartAt). Durable on return (survives a crash and reopen) whatever
        the fsync policy. Raises EngineError for offset < 0, StorageFull / EngineError on
        I/O failure."""
        ...

    def delete_before(self, offset: int) -> int:
        """Retention: drop whole batches (segment engine: whole segments) that end before
        ``offset``; returns the new log_start_offset. Never removes the active segment's last
        batch, so log_end_offset is unchanged."""
        ...

    def apply_retention(self, now_ms: int, upper_bound_offset: int | None = None) -> int:
        """Delete what retention_ms / retention_bytes allow; returns the bytes deleted. Time
        retention judges a batch (segment engine: a segment) by the largest timestamp it
        holds, never by its last one: timestamps may go down along a log. Nothing at or past
        ``upper_bound_offset`` is deleted (only batches / segments that end at or below it):
        the broker passes the high watermark, as Kafka does, so retention never removes
        records that are not on every in-sync replica yet."""
        ...

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Base offset of the first batch whose largest timestamp (``BatchHeader.max_timestamp_ms``,
        the larger of its first and last) is >= timestamp_ms, or None."""
        ...

    def flush(self) -> None:
        """Make everything appended so far durable (fsync)."""
        ...

    def maybe_flush(self, now_ms: int) -> bool:
        """Under fsync ``interval``: flush if the interval has passed since the last flush and
        there is unflushed data. Returns whether it flushed. No-op for other policies."""
        ...

    def close(self) -> None:
        """Flush and release files. Idempotent."""
        ...


def verified_append_kwargs(engine: Any) -> dict[str, bool]:
    """The keyword arguments with which a caller that verified every batch's CRC calls
    ``engine.append_many``: ``{"crc_checked": True}`` when the engine takes that keyword (every
    built-in does), none for an engine written to the older ``append_many(batches)``, which
    checks each CRC itself (passing the keyword would raise TypeError on every append). Pure."""
    try:
        params = inspect.signature(engine.append_many).parameters.values()
    except (TypeError, ValueError):  # no signature to read: call it the old way
        return {}
    takes = any(p.kind is p.VAR_KEYWORD or (p.name == "crc_checked" and p.kind is not p.POSITIONAL_ONLY)
                for p in params)
    return {"crc_checked": True} if takes else {}


@runtime_checkable
class FlushJobLike(Protocol):
    """What an asynchronous flush job offers its runner (``nodes/broker/flusher.py``)."""

    def run(self) -> None:
        """On the runner's thread, once: do the job's fsyncs; never raises (errors are kept for
        ``flush_done``)."""
        ...

    def discard(self) -> Any:
        """Release what the job holds without running it (idempotent; never raises)."""
        ...


@runtime_checkable
class AsyncFlush(Protocol):
    """Optional for an engine: the interval flush in two halves, so that its fsyncs run on
    another thread than the owner's (the segment engine: ``engines/segment_flush.py``). An
    engine without these keeps ``maybe_flush`` on the owner's thread (``async_flush_of``)."""

    def flush_job(self, now_ms: int) -> FlushJobLike | None:
        """On the owner's thread, as maybe_flush decides whether to flush: a job to run on
        another thread, or None (nothing due, or a job of this engine still in flight). Raises
        EngineError."""
        ...

    def flush_done(self, job: Any) -> bool:
        """On the owner's thread, once per job made (run or not): apply it. True if applied;
        False if the engine changed meanwhile so that it vouches for nothing (its data is flushed
        again later). Raises the job's error (EngineError) as ``flush`` would have."""
        ...


def async_flush_of(engine: Any) -> AsyncFlush | None:
    """``engine`` if it offers both ``flush_job`` and ``flush_done``, else None (an engine written
    to the older interface, or lmdb / memory: flushed by ``maybe_flush``). Pure."""
    has = callable(getattr(engine, "flush_job", None)) and callable(getattr(engine, "flush_done", None))
    return engine if has else None
