"""The segment engine's asynchronous interval flush: a ``FlushJob`` made on the owner's thread,
run on a flusher thread, and applied back on the owner's thread.

Why: under fsync ``interval`` the broker flushed every partition it appended to lately on its
single reactor thread, once per ``fsync_interval_ms``: each fdatasync stalled every request and
replication message for 3-7 ms (and the recovery checkpoint's replacement 0.7 ms median, 10-70 ms
in the tail). ``SegmentEngine.flush_job`` / ``flush_done`` move those waits onto one flusher
thread per broker (``nodes/broker/flusher.py``); ``os.fdatasync``/``os.fsync`` release the GIL.

Design (what a job is, and why nothing the reactor does meanwhile can be undone or confused):

* A job is made on the owner's thread (``SegmentEngine.flush_job``): pending index entries are
  written there (a pwrite; the index's memory is the owner's), and the job takes
  ``os.dup``'d descriptors of every file it syncs -- each dirty segment's log and index, the
  directory when a roll created a file since the last directory fsync. A roll, retention
  deleting a segment, a truncation or close on the owner's thread closes the engine's own
  descriptors, never the job's: the thread never fsyncs a closed descriptor, nor a number the
  process has reused for another file. The thread closes the job's descriptors when it is done
  (``discard`` does for a job that never ran, and the job's collection for one nobody ran or
  discarded).
* A job vouches for what was snapshotted when it was made: per segment its ``size_bytes``;
  and, when a recovery-checkpoint move is due, the checkpoint of that moment (active segment,
  its size, the log end). Bytes written after the snapshot stay dirty for a later flush.
* The thread runs the job in today's order -- data fdatasyncs, index fsyncs, directory fsync,
  the log's bytes outside the page-cache window dropped from the cache (segment_cache.py;
  in pieces, each while the job is current),
  then the checkpoint (temp, fsync, rename, directory fsync) -- and stops at the first error.
  The checkpoint is written only when every sync before it succeeded, so it never names bytes
  that are not durable.
* Generations: every owner-side change that alters bytes a job or a checkpoint may vouch for,
  or writes a checkpoint itself -- a truncation, ``reset_to``, retention deleting segments, a
  synchronous ``flush()`` (truncate/reset/close/open) -- first bumps the engine's generation
  while holding the engine's checkpoint lock. The thread creates its checkpoint's own temp
  file and later renames it over the checkpoint holding the same lock, each only if the
  generation is still the job's (its fsyncs are outside the lock), so a job's older
  checkpoint can never overwrite a newer one, nor one that the owner is about to write after
  cutting the log, and nothing is added to a directory being deleted; the owner never waits
  for the thread's fsyncs, only for a file creation or rename in progress. A bump also
  forgets which checkpoint is on disk (the thread may have written one just before the bump),
  so the next synchronous flush always writes its own.
* ``flush_done(job)`` on the owner's thread applies a completion only if the generation is
  still the job's: the segments whose size is still the snapshotted one become clean, the
  directory clean if no roll created a file since, and the checkpoint the thread wrote becomes
  the engine's. A stale completion is dropped (returns False): its data stays dirty and is
  flushed again later. A job that failed (EIO, ENOSPC) raises its error from ``flush_done`` on
  the owner's thread, as the synchronous ``flush`` raises it: the data stays dirty and the
  checkpoint did not move. A failed data or directory fsync is ``StorageFailed``, and it
  fences the engine from the thread at once (``on_sync_failed``): until the reactor collects
  the completion the owner may flush itself, and its fdatasync would succeed (the kernel
  reported the writeback error once, to the job's dup of the same open file), so without the
  fence it would checkpoint over the pages the failed one covered.
* At most one job per engine is in flight; ``close`` does not wait for it (it bumps the
  generation, which cancels the job's checkpoint and completion, then flushes synchronously;
  the job's own descriptors keep its files' inodes alive until the thread closes them).

``AsyncFlushMixin`` is that half of ``SegmentEngine`` (``flush_job``, ``flush_done`` and the
invalidation the engine's other operations call first).

Thread-safety: a FlushJob is made and applied on the engine owner's thread; ``run`` is called
once, on the flusher thread, and touches only the job's own descriptors, the engine's
checkpoint lock and generation (read under that lock), the partition directory's
checkpoint file (its own temp file, renamed over the checkpoint under that lock), and, when a
data fsync fails, the engine's fence (one attribute set once, read by the owner).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from engines.api import EngineError, StorageFailed
from engines.checks import sync_translated, translate_os_error
from engines.durable import TEMP_SUFFIX
from engines.segment_cache import CACHE_DROP_CHUNK_BYTES, cold_drops, drop_cached
from engines.segment_recovery import Checkpoint, write_checkpoint

# the thread's own temp file beside the checkpoint (the owner's is CHECKPOINT_FILE + TEMP_SUFFIX;
# recovery removes both after a crash)
FLUSHER_TEMP_SUFFIX = ".flusher" + TEMP_SUFFIX

if TYPE_CHECKING:
    from engines.api import EngineConfig
    from engines.segment_file import LogSegment


@dataclass(slots=True)
class SegmentSync:
    """One segment a job syncs: its log and index descriptors (the job's own dups) and the
    log size the job vouches for."""

    segment: "LogSegment"  # the engine's (read and marked clean on the owner's thread only)
    size_bytes: int
    log_path: str
    log_fd: int
    index_path: str
    index_fd: int  # -1: the index is not synced (the segment was not dirty)
    trims: int  # the segment's ``trims`` then: a cut since is not covered by this job's fsync


@dataclass(slots=True)
class CacheDrop:
    """Bytes [start, end) of a segment that leave the page cache once the job's syncs have
    made the whole log durable (segment_cache.py), through ``fd``: the job's dup of the log
    it syncs, or (``owned``) one of its own for a segment that was already clean."""

    segment: "LogSegment"
    fd: int
    start: int
    end: int
    owned: bool


@dataclass(slots=True)
class FlushJob:
    """One asynchronous flush of one segment engine (see the module docstring)."""

    directory: str
    generation: int
    created_ms: int
    syncs: list[SegmentSync]
    dir_fd: int  # the directory opened for this job, for the checkpoint and (dir_dirty) its fsync
    dir_dirty: bool
    dir_version: int
    checkpoint: Checkpoint | None  # moved to this when the syncs succeeded (None: not due)
    lock: threading.Lock
    current_generation: Callable[[], int]
    checkpoint_written: bool = False
    error: BaseException | None = None
    sync_failed: bool = False  # the error is a data or directory fsync's (StorageFailed for the owner)
    # called on the thread the moment a data or directory fsync fails (the engine's fence), so
    # that the owner writes no checkpoint and takes no write before it collects the completion
    on_sync_failed: Callable[[BaseException], object] | None = None
    syncing: bool = False  # the thread has begun its fsyncs
    synced: threading.Event = field(default_factory=threading.Event, repr=False)  # ... and ended them
    ran: bool = False
    drops: list[CacheDrop] = field(default_factory=list)  # after the syncs (segment_cache.py)
    _closed: bool = field(default=False, repr=False)

    @classmethod
    def make(cls, directory: str, segments: list, now_ms: int,
             generation: tuple[int, Callable[[], int], threading.Lock], dir_state: tuple[bool, int]) -> FlushJob:
        """On the owner's thread: write the pending index entries of ``segments`` (LogSegments)
        and take dups of the log descriptors of the dirty ones, descriptors of their index files,
        and one of the directory.
        ``generation``: (the engine's generation now, a reader of it, its checkpoint lock);
        ``dir_state``: (directory dirty, its version). Raises StorageFull / EngineError."""
        number, current_generation, lock = generation
        # the directory is opened again, not dup'ed: the kernel reports a writeback error once
        # per open file, and a failure of the fsync that ends the job's checkpoint replacement
        # (not fenced: the checkpoint fails safe) must still reach the engine's own next
        # directory fsync, which vouches for the segments the owner created or removed since
        job = cls(directory, number, now_ms, [], open_for_sync(directory, directory=True), dir_state[0], dir_state[1],
                  None, lock, current_generation)
        try:
            for seg in segments:
                try:
                    seg.index.write_pending(sync=False)
                except OSError as e:
                    raise translate_os_error(e, f"write {seg.index.path}") from e
                if seg.dirty:
                    job.syncs.append(SegmentSync(seg, seg.size_bytes, seg.log_path, dup_fd(seg.fd, seg.log_path),
                                                 seg.index.path, -1, seg.trims))
                    job.syncs[-1].index_fd = open_for_sync(seg.index.path)
        except BaseException:
            job.discard()
            raise
        return job

    def run(self) -> None:
        """On the flusher thread: sync, then (if due and still current) write the checkpoint.
        Never raises: an error is kept in ``error`` for ``flush_done`` on the owner's thread
        (an EngineError without its tracebacks, ``untraced``; a programmer error too, with its
        traceback, so that it crashes the owner rather than vanish here).
        Closes the job's descriptors."""
        try:
            self.syncing = True
            try:
                self._sync_all()
            finally:
                self.synced.set()
            self._drop_cold()
            if self.checkpoint is not None:
                self.checkpoint_written = write_checkpoint(self.directory, self.dir_fd, self.checkpoint,
                                                           temp_suffix=FLUSHER_TEMP_SUFFIX, guard=self._while_current)
        except EngineError as e:  # handed to the owner's thread, which raises it
            self.error = untraced(e)
        except BaseException as e:  # a programmer error: raised on the owner's thread, which stops
            self.error = e  # with the traceback that says where (the node stops: a cycle is moot)
        finally:
            self.ran = True
            closing = self.discard()
            if self.error is None:
                self.error = closing  # the thread must not die of it (nothing would come back)

    def _drop_cold(self) -> None:
        """The log is durable up to the job's snapshot: drop its cold bytes from the page cache,
        a piece at a time, each while the job is still current (under the lock the owner takes
        to invalidate it): a drop never follows a truncation, nor a flush on the owner's thread
        whose fsync may have been told of a writeback error that this job's was not (the kernel
        reports one once per open file, and the descriptors are dups of the engine's)."""
        for d in self.drops:
            for start in range(d.start, d.end, CACHE_DROP_CHUNK_BYTES):
                with self.lock:
                    if self.current_generation() != self.generation:
                        return
                    drop_cached(d.fd, start, min(d.end, start + CACHE_DROP_CHUNK_BYTES))

    def _while_current(self, step: Callable[[], object]) -> bool:
        """Run a step of the checkpoint's replacement that adds a name to the directory (its
        temp file's creation, its rename) under the lock, only while this job is current:
        after the owner's invalidation the thread adds nothing to the directory (which a
        deletion may be removing). The fsyncs are outside the lock: the owner never waits
        for them."""
        with self.lock:
            if self.current_generation() != self.generation:
                return False
            step()
            return True

    def _sync_all(self) -> None:
        for s in self.syncs:
            self._sync_data(os.fdatasync, s.log_fd, s.log_path)
            if s.index_fd >= 0:  # an index is rebuilt from its segment when damaged: no fence
                sync_translated(os.fsync, s.index_fd, s.index_path)
        if self.dir_dirty:
            self._sync_data(os.fsync, self.dir_fd, self.directory)

    def _sync_data(self, sync: Callable[[int], None], fd: int, path: str) -> None:
        try:
            sync_translated(sync, fd, path)
        except EngineError as e:
            self.sync_failed = True
            if self.on_sync_failed is not None:
                self.on_sync_failed(e)
            raise

    def hand_over_error(self) -> BaseException:
        """The job's error, for ``flush_done`` to raise, once: the job lets go of it and counts as
        never run from then on (a later ``flush_done`` of it applies nothing: its data stays
        dirty). Kept, the error raised would hold in its traceback the frames up to the caller
        that catches it, which hold this job (the broker's ``collect_flushes`` does, in its
        loop): a reference cycle keeping the job, the error and the engine (the job's bound
        methods) until a cyclic collection."""
        error, self.error, self.ran = self.error, None, False
        assert error is not None, "a job without an error has none to hand over"
        return error

    def __del__(self) -> None:
        """A job collected before the thread ran it or anyone discarded it (its engine
        abandoned, as a crash leaves it): its descriptors go back; nothing else is done."""
        if not getattr(self, "_closed", True):  # a half-built object owns nothing
            self.discard()

    def __reduce_ex__(self, protocol: object) -> object:
        """A job owns its descriptors: a copy would close the same numbers a second time."""
        raise TypeError("a FlushJob owns its descriptors and cannot be copied")

    def discard(self) -> EngineError | None:
        """Close the job's descriptors (idempotent): after ``run``, or for a job never run.
        Closes every one even if closing one fails (close can report EIO / ENOSPC on a network
        file system) and returns the first such error, translated, instead of raising."""
        if self._closed:
            return None
        self._closed = True
        first = None
        fds = [(self.dir_fd, self.directory)]
        for s in self.syncs:
            fds += [(s.log_fd, s.log_path), (s.index_fd, s.index_path)]
        fds += [(d.fd, d.segment.log_path) for d in self.drops if d.owned]
        for fd, path in fds:
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError as e:
                first = first or translate_os_error(e, f"close {path}")
        return first


def untraced(error: EngineError) -> EngineError:
    """``error`` -- and the errors it was raised from -- without their tracebacks, to be kept on
    its job until the owner's thread raises it. A traceback holds the frame that caught the
    error (``run``'s, whose ``self`` is the job that keeps it) and, through each frame's caller,
    every frame of the flusher thread's call: a reference cycle that kept the job, the error and
    the engine until a cyclic collection, at every failed job of a broker that serves on. The
    thread's frames say nothing to the owner's thread that raises the error: type, text and
    cause are what it reports, and are kept."""
    seen: set[int] = set()
    links: list[BaseException | None] = [error]
    while links:
        link = links.pop()
        if link is not None and id(link) not in seen:
            seen.add(id(link))
            link.__traceback__ = None
            links += (link.__cause__, link.__context__)
    return error


def dup_fd(fd: int, path: str) -> int:
    """``os.dup(fd)`` with the error translated (EMFILE: too many open files). Raises EngineError."""
    try:
        return os.dup(fd)
    except OSError as e:
        raise translate_os_error(e, f"dup {path}") from e


def open_for_sync(path: str, *, directory: bool = False) -> int:
    """A read-only descriptor of ``path`` for fsync (enough on Linux), created if missing --
    or, ``directory``, of the existing directory ``path`` (a descriptor of its own, not a dup).
    Raises EngineError."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if directory else os.O_CREAT)
    try:
        return os.open(path, flags, 0o644)
    except OSError as e:
        raise translate_os_error(e, f"open {path}") from e


class AsyncFlushMixin:
    """``SegmentEngine``'s asynchronous interval flush (``flush_job`` / ``flush_done``) and the
    invalidation its other operations call first. Part of SegmentEngine (its state is the
    engine's own; kept here beside FlushJob so that both halves of the design read together)."""

    # the engine's state this half uses (set by SegmentEngine.__init__)
    directory: str
    config: "EngineConfig"
    _checkpoint_lock: threading.Lock
    _generation: int
    _dir_version: int
    _dir_dirty: bool
    _dir_fd: int
    _flush_in_flight: FlushJob | None
    _checkpoint: Checkpoint | None
    _checkpoint_base: int
    _last_flush_ms: int
    _last_checkpoint_ms: int | None
    _closed: bool
    _unsynced: list["LogSegment"]
    _segments: list["LogSegment"]
    _active: "LogSegment"

    if TYPE_CHECKING:  # SegmentEngine's, never these
        def _check_open(self) -> None: ...
        def _check_writable(self) -> None: ...
        def _fence(self, e: BaseException) -> StorageFailed: ...
        def _interval_flush_due(self, now_ms: int) -> bool: ...
        def _checkpoint_due(self, now_ms: int) -> bool: ...
        def _touch(self, seg: "LogSegment") -> None: ...

    def _invalidate_flushes(self) -> None:
        """Before anything that changes bytes a job may vouch for, or writes a checkpoint here:
        a job in flight may no longer write its checkpoint, nor be applied. Waits only for a
        checkpoint temp-file creation or rename the flusher thread is in the middle of (never
        for its fsyncs)."""
        with self._checkpoint_lock:
            self._generation += 1
        job = self._flush_in_flight
        if job is not None and job.checkpoint is not None:
            self._checkpoint = None  # the thread may have written it: what is on disk is unknown

    def _current_generation(self) -> int:
        return self._generation

    def flush_job(self, now_ms: int) -> FlushJob | None:
        """maybe_flush's asynchronous half: under fsync ``interval``, when the interval has passed
        and there is unflushed data and no job of this engine is in flight, a FlushJob for the
        caller's flusher thread (``job.run()``), whose completion the caller hands back to
        ``flush_done`` on this thread; else None. Writes pending index entries and dups the
        descriptors to sync (EMFILE raises EngineError). Raises StorageFull / EngineError /
        EngineClosed."""
        self._check_writable()
        if self._flush_in_flight is not None or not self._interval_flush_due(now_ms):
            return None
        job = FlushJob.make(self.directory, self._unsynced + [self._active], now_ms,
                            (self._generation, self._current_generation, self._checkpoint_lock),
                            (self._dir_dirty, self._dir_version))
        try:
            self._plan_drops(job)
        except BaseException:
            job.discard()
            raise
        due = self._checkpoint_due(now_ms)
        active = self._active
        point = Checkpoint(active.base_offset, active.size_bytes, active.next_offset, False)
        if due and point != self._checkpoint:
            job.checkpoint = point
        elif due:
            self._last_checkpoint_ms = now_ms
        job.on_sync_failed = self._fence
        self._flush_in_flight = job
        return job

    def _plan_drops(self, job: FlushJob) -> None:
        """What ``job`` drops from the page cache after its syncs: the log's cold bytes as of the
        snapshot, all durable once the job has synced (segment_cache.py). EMFILE raises
        EngineError."""
        window = self.config.cache_window.window_bytes
        if window < 0:
            return
        synced = {id(s.segment): s.log_fd for s in job.syncs}
        for seg, start, end in cold_drops(self._segments, window):
            fd = synced.get(id(seg))
            if fd is None:  # clean already: the job takes a descriptor of its own
                if seg is not self._active:
                    self._touch(seg)  # keep the descriptors the reader LRU leaves open bounded
                job.drops.append(CacheDrop(seg, dup_fd(seg.fd, seg.log_path), start, end, True))
            else:
                job.drops.append(CacheDrop(seg, fd, start, end, False))

    def flush_done(self, job: FlushJob) -> bool:
        """Apply a job's completion (on this engine's owner thread, after ``job.run()`` or for a
        job that was never run). Returns True if applied; False for a stale job (a truncation,
        reset, retention, synchronous flush or close came after it was made), or one never run:
        its data stays dirty and a later flush syncs it. Raises the job's error (StorageFull /
        EngineError, as ``flush`` would; anything else is a programmer error) even when stale:
        a failed fsync is never forgotten (a failed data fsync raises StorageFailed, the fence's,
        each time; any other error is handed over, ``FlushJob.hand_over_error``, raised once)."""
        if job is self._flush_in_flight:
            self._flush_in_flight = None
        stale = self._closed or not job.ran or job.generation != self._generation
        if stale or job.error is not None:
            # not flushed after all: the next flush_job is due at once, not an interval later
            self._last_flush_ms = min(self._last_flush_ms, job.created_ms - self.config.fsync_interval_ms)
        if job.error is not None:
            if job.checkpoint is not None:
                self._checkpoint = None  # its replacement may have failed after the rename
            if job.sync_failed:
                raise self._fence(job.error) from job.error
            error = job.hand_over_error()
            try:
                raise error
            finally:  # this frame is in its traceback too
                del error
        if stale:
            return False
        for s in job.syncs:
            if s.segment.size_bytes == s.size_bytes and s.segment.trims == s.trims:
                s.segment.dirty = False
        self._unsynced = [s for s in self._unsynced if s.dirty]
        if job.dir_dirty and job.dir_version == self._dir_version:
            self._dir_dirty = False
        for d in job.drops:
            d.segment.cache_dropped_to = max(d.segment.cache_dropped_to, d.end)
        if job.checkpoint_written and job.checkpoint is not None:
            self._checkpoint = job.checkpoint
            self._checkpoint_base = job.checkpoint.segment_base_offset
            self._last_checkpoint_ms = job.created_ms
        return True
