"""The segment engine's asynchronous interval flush (engines/segment_flush.py): a job made on the
owner's thread, run on a real other thread, applied back on the owner's thread -- with the
owner's roll, truncation, retention and close placed at exact points between those steps.

Every fsync is recorded (inode and file size at the time) by a wrapper around the real
os.fdatasync/os.fsync, so that a test can check that the recovery checkpoint never names bytes
that were not synced, and that a job never syncs a file other than the one it was made for."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from engines.api import EngineConfig, EngineError, StorageFailed, async_flush_of
from engines.conformance import make_batch, read_all
from engines.segment import SegmentEngine
from engines.segment_recovery import read_checkpoint
from tests.unit.builders_segment import INTERVAL_MS, T0, SyncRecorder, engine_with_a_job, fill, open_engine, run_in_thread


def flushed_by_a_job(e, now_ms: int):  # noqa: ANN001, ANN201
    """Make a job, run it on a thread, apply it; returns it (asserting it was applied)."""
    job = e.flush_job(now_ms)
    assert job is not None
    run_in_thread(job)
    assert e.flush_done(job) is True
    return job


def assert_checkpoint_synced(directory: Path, sync: SyncRecorder) -> None:
    """The recovery checkpoint names no byte of its segment beyond what an fsync covered."""
    cp = read_checkpoint(str(directory))
    assert cp is not None
    log_path = directory / f"{cp.segment_base_offset:020d}.log"
    if log_path.exists() and cp.position:
        assert cp.position <= sync.synced_size(str(log_path)), (cp, sync.synced)


def test_a_job_syncs_on_another_thread_and_the_completion_marks_the_log_clean(tmp_path: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(tmp_path)
    assert async_flush_of(e) is e
    sync = SyncRecorder(monkeypatch)
    fill(e, 0, 10)
    job = e.flush_job(T0)
    assert job is not None and job.checkpoint is not None  # the first interval flush checkpoints
    assert e.flush_job(T0 + 10 * INTERVAL_MS) is None  # one job per engine in flight
    assert e._active.dirty and not sync.synced  # nothing synced on the owner's thread
    run_in_thread(job)
    assert {name for name, _, _ in sync.synced} == {"job"}
    assert e.flush_done(job) is True
    assert not e._active.dirty and not e._unsynced
    assert read_checkpoint(str(tmp_path)) == job.checkpoint
    assert job.checkpoint.next_offset == e.log_end_offset
    assert_checkpoint_synced(tmp_path, sync)
    e.close()


def test_appends_and_rolls_after_the_snapshot_stay_dirty_and_the_checkpoint_stays_at_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e, sync, job = engine_with_a_job(tmp_path, monkeypatch, 10)
    snapshot_end = e.log_end_offset
    fill(e, 10, 60)  # ~30 KiB: the snapshot's segment grows, then rolls, twice
    assert e.segment_count >= 3
    run_in_thread(job)
    assert e.flush_done(job) is True
    cp = read_checkpoint(str(tmp_path))
    assert cp == job.checkpoint and cp.next_offset == snapshot_end
    assert_checkpoint_synced(tmp_path, sync)
    assert e._active.dirty and e._unsynced  # written after the snapshot: flushed by a later job
    flushed_by_a_job(e, T0 + INTERVAL_MS)
    assert not e._active.dirty and not e._unsynced
    e.close()


def test_a_truncation_before_the_job_runs_keeps_the_jobs_checkpoint_off_the_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e, sync, job = engine_with_a_job(tmp_path, monkeypatch, 20)
    e.truncate_to(10)  # the follower's KIP-101 cut, on the reactor, while the job waits
    cut = read_checkpoint(str(tmp_path))
    assert cut is not None and cut.next_offset == e.log_end_offset
    run_in_thread(job)
    assert job.error is None and not job.checkpoint_written
    assert read_checkpoint(str(tmp_path)) == cut  # the older, longer checkpoint never lands
    assert e.flush_done(job) is False  # stale: dropped
    fill(e, 100, 3)  # other data where the cut records were
    expected = read_all(e)
    assert_checkpoint_synced(tmp_path, sync)
    e2 = open_engine(tmp_path)  # a crash: a second owner reads the files as they are
    assert read_all(e2) == expected  # the truncated records never come back
    e2.close()
    e.close()


def test_a_checkpoint_the_thread_wrote_just_before_a_truncation_is_replaced_by_the_truncations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The thread replaces the checkpoint, then the owner truncates back to exactly where the
    engine's last own checkpoint was, before the completion is applied: the truncation must
    write its checkpoint (the one on disk vouches for cut bytes), not skip it as unchanged."""
    e = open_engine(tmp_path)
    sync = SyncRecorder(monkeypatch)
    fill(e, 0, 10)
    e.flush()  # the engine's own checkpoint at offset end_a
    end_a = e.log_end_offset
    fill(e, 10, 10)
    job = e.flush_job(T0)
    assert job is not None and job.checkpoint is not None and job.checkpoint.next_offset > end_a
    run_in_thread(job)
    assert job.checkpoint_written and read_checkpoint(str(tmp_path)) == job.checkpoint
    e.truncate_to(end_a)  # before the reactor has applied the completion
    cp = read_checkpoint(str(tmp_path))
    assert cp is not None and cp.next_offset == end_a, cp
    assert e.flush_done(job) is False
    assert_checkpoint_synced(tmp_path, sync)
    e.close()


def test_retention_deleting_the_segment_a_job_names_keeps_its_checkpoint_off_the_disk(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e, _, job = engine_with_a_job(tmp_path, monkeypatch, 10)
    named = job.checkpoint.segment_base_offset
    fill(e, 10, 80)  # rolls: the named segment is no longer active
    e.delete_before(e._segments[-1].base_offset)
    assert e.log_start_offset > named
    run_in_thread(job)
    assert not job.checkpoint_written and e.flush_done(job) is False
    cp = read_checkpoint(str(tmp_path))
    assert cp is not None and cp.segment_base_offset >= e.log_start_offset  # names a segment that exists
    expected = read_all(e)
    e2 = open_engine(tmp_path)
    assert read_all(e2) == expected and "full scan" not in e2.recovery.message
    e2.close()
    e.close()


def test_a_job_run_after_close_syncs_the_files_it_was_made_for_not_reused_descriptors(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(tmp_path)
    sync = SyncRecorder(monkeypatch)
    fill(e, 0, 10)
    log_inode = os.stat(e._active.log_path).st_ino
    engine_fd = e._active.fd
    job = e.flush_job(T0)
    assert job is not None
    e.close()  # closes the engine's descriptors; the job keeps its own
    other = tmp_path / "other-file"
    reused = os.open(other, os.O_RDWR | os.O_CREAT, 0o644)  # likely takes a freed number
    try:
        run_in_thread(job)
        assert job.error is None
        synced = {ino for name, ino, _ in sync.synced if name == "job"}
        assert log_inode in synced and os.fstat(reused).st_ino not in synced, (engine_fd, reused)
    finally:
        os.close(reused)
    assert not job.checkpoint_written  # close wrote the clean checkpoint; the job's never lands
    assert e.flush_done(job) is False
    cp = read_checkpoint(str(tmp_path))
    assert cp is not None and cp.clean
    e2 = open_engine(tmp_path)
    assert e2.log_end_offset == cp.next_offset
    e2.close()


def test_a_failed_fdatasync_in_the_thread_is_raised_on_the_owners_thread_and_moves_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(tmp_path)
    e.flush()
    before = read_checkpoint(str(tmp_path))
    sync = SyncRecorder(monkeypatch)
    fill(e, 0, 10)
    job = e.flush_job(T0)
    assert job is not None and job.checkpoint is not None
    sync.fail_with = errno.EIO
    run_in_thread(job)
    assert not job.checkpoint_written
    with pytest.raises(StorageFailed, match="fsync"):
        e.flush_done(job)
    assert read_checkpoint(str(tmp_path)) == before  # nothing vouched for
    assert e._active.dirty
    e.close()


def test_a_stale_job_leaves_the_next_flush_due_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(tmp_path)
    SyncRecorder(monkeypatch)
    fill(e, 0, 10)
    job = e.flush_job(T0)
    assert job is not None
    e.truncate_to(5)
    fill(e, 5, 5)
    run_in_thread(job)
    assert e.flush_done(job) is False
    assert e._active.dirty
    flushed_by_a_job(e, T0)
    assert not e._active.dirty
    e.close()


@pytest.mark.parametrize("completed", [True, False], ids=["job-completed", "job-never-ran"])
def test_a_crash_around_a_job_recovers_every_record_behind_a_true_checkpoint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, completed: bool) -> None:
    e = open_engine(tmp_path)
    sync = SyncRecorder(monkeypatch)
    fill(e, 0, 10)
    flushed_by_a_job(e, T0)
    fill(e, 10, 40)  # rolls
    job = e.flush_job(T0 + 20_000)
    assert job is not None and job.checkpoint is not None
    if completed:
        run_in_thread(job)
        assert e.flush_done(job)
    else:
        job.discard()
        assert e.flush_done(job) is False
    expected = read_all(e)
    assert_checkpoint_synced(tmp_path, sync)
    e2 = open_engine(tmp_path)  # the process died here: no close
    assert read_all(e2) == expected and e2.log_end_offset == e.log_end_offset
    e2.close()


def test_after_a_failed_fdatasync_the_checkpoint_never_vouches_for_the_bytes_it_covered(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may have dropped the pages a failed fdatasync covered and marked them clean
    (PostgreSQL's "fsyncgate"), so a later fsync that succeeds proves nothing about them: the
    engine takes no more writes, flushes or checkpoints (StorageFailed; the broker stops and
    recovers from the last checkpoint), and closing it writes none either."""
    e, sync, job = engine_with_a_job(tmp_path, monkeypatch, 10)
    before = read_checkpoint(str(tmp_path))
    sync.fail_with = errno.EIO
    run_in_thread(job)
    with pytest.raises(StorageFailed):
        e.flush_done(job)
    sync.fail_with = None
    for refused in (lambda: e.flush_job(T0 + 20_000), e.flush, lambda: e.maybe_flush(T0 + 20_000),
                    lambda: e.append(make_batch(0)), lambda: e.append_many([make_batch(0)]),
                    lambda: e.truncate_to(1), lambda: e.reset_to(0), lambda: e.delete_before(5),
                    lambda: e.apply_retention(T0)):
        with pytest.raises(StorageFailed):
            refused()
    assert read_all(e)  # reads go on
    e.close()
    assert read_checkpoint(str(tmp_path)) == before  # not moved, and not marked clean by close


def test_a_failed_fdatasync_under_fsync_always_refuses_the_next_append_too(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Under ``always`` the append whose fdatasync failed is cut and refused, and so is every
    later one: its fdatasync succeeding would not bring back pages the kernel dropped."""
    e = SegmentEngine(str(tmp_path), EngineConfig(fsync="always"))
    e.append(make_batch(0))
    end = e.log_end_offset
    real = os.fdatasync

    def fails(fd: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "fdatasync", fails)
    with pytest.raises(StorageFailed):
        e.append(make_batch(0))
    monkeypatch.setattr(os, "fdatasync", real)
    assert e.log_end_offset == end  # the append whose sync failed was cut
    with pytest.raises(StorageFailed):
        e.append_many([make_batch(0)])
    e.close()


def test_a_failed_fsync_of_a_job_made_stale_meanwhile_is_still_raised(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The job's descriptors are dups sharing the engine's open file description: the kernel
    reports a writeback error to that description once, so if the thread's fsync consumed it
    and the owner dropped the stale job silently, no later fsync would ever report it."""
    e, sync, job = engine_with_a_job(tmp_path, monkeypatch, 10)
    e.truncate_to(5)  # the job is stale from here on
    sync.fail_with = errno.EIO
    run_in_thread(job)
    with pytest.raises(StorageFailed, match="Input/output error"):
        e.flush_done(job)
    e.close()


def test_a_job_that_cannot_dup_its_descriptors_leaks_none_and_leaves_the_engine_flushable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(tmp_path)
    fill(e, 0, 30)  # rolls: several segments to dup
    open_before = len(os.listdir("/proc/self/fd"))
    real_dup, calls = os.dup, []

    def dup_then_emfile(fd: int) -> int:
        calls.append(fd)
        if len(calls) >= 2:  # after the directory, a log and an index are open: all must be closed
            raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
        return real_dup(fd)
    monkeypatch.setattr(os, "dup", dup_then_emfile)
    with pytest.raises(EngineError, match="Too many open files"):
        e.flush_job(T0)
    assert len(os.listdir("/proc/self/fd")) == open_before  # the partial job closed what it had
    monkeypatch.setattr(os, "dup", real_dup)
    SyncRecorder(monkeypatch)
    flushed_by_a_job(e, T0 + INTERVAL_MS)  # not stuck "in flight"
    assert not e._active.dirty and not e._unsynced
    e.close()


def test_the_owner_waits_for_a_checkpoint_the_thread_is_writing_and_then_writes_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exact order: the thread is inside its checkpoint's rename (its commit point, under the
    lock; its fsyncs are outside it: test_segment_flush_lock_hold.py) when the owner truncates;
    the owner waits for it, then cuts and writes the checkpoint that stays."""
    e, _, job = engine_with_a_job(tmp_path, monkeypatch, 20)
    inside, release = threading.Event(), threading.Event()
    real_replace = os.replace

    def slow_replace(*args, **kw) -> None:  # noqa: ANN002, ANN003
        if threading.current_thread().name == "job":
            inside.set()
            assert release.wait(10)
        real_replace(*args, **kw)
    monkeypatch.setattr(os, "replace", slow_replace)
    runner = threading.Thread(target=job.run, name="job")
    runner.start()
    assert inside.wait(10)
    owner = threading.Thread(target=e.truncate_to, args=(10,), name="owner")
    owner.start()
    owner.join(0.3)  # bounded: the owner must be waiting on the lock, not cutting
    assert owner.is_alive() and e.log_end_offset > 10
    release.set()
    runner.join(10)
    owner.join(10)
    assert job.checkpoint_written  # it was current when it began
    cp = read_checkpoint(str(tmp_path))
    assert cp is not None and cp.next_offset == e.log_end_offset <= 10  # the truncation's, written after
    assert e.flush_done(job) is False
    e.close()


@pytest.mark.parametrize("then", ["flush", "truncate", "reset", "retention", "append", "close"])
def test_a_failed_fsync_on_the_thread_fences_the_engine_before_its_completion_is_applied(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, then: str) -> None:
    """The thread's fdatasync failed and the job waits in the flusher's completions; before the
    reactor collects it, the owner flushes (a truncation, a reset, retention, close, or a plain
    flush). The owner's own fdatasync succeeds -- the kernel reported the writeback error once,
    to the thread's dup of the same open file -- so without the fence it would checkpoint
    (close: a clean one) over the pages the failed one covered."""
    e, sync, job = engine_with_a_job(tmp_path, monkeypatch, 40)  # rolls: retention has a segment to delete
    before = read_checkpoint(str(tmp_path))
    sync.fail_with = errno.EIO
    run_in_thread(job)
    assert job.error is not None
    steps = {"flush": e.flush, "truncate": lambda: e.truncate_to(5), "reset": lambda: e.reset_to(0),
             "retention": lambda: e.delete_before(e._segments[-1].base_offset),
             "append": lambda: e.append(make_batch(40)), "close": e.close}
    if then == "close":
        e.close()
    else:
        with pytest.raises(StorageFailed):
            steps[then]()
    assert read_checkpoint(str(tmp_path)) == before
    with pytest.raises(StorageFailed):
        e.flush_done(job)
    e.close()
    assert read_checkpoint(str(tmp_path)) == before


@pytest.mark.parametrize("call", ["append", "append_many"])
def test_an_append_whose_fsync_failed_raises_storage_failed_even_when_cutting_it_back_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: str) -> None:
    """fsync always: the fdatasync fails (EIO) and so does the ftruncate cutting the batch back
    (a disk that is gone fails both). The caller must still see StorageFailed -- an EngineError
    is an operating error the broker answers and serves on after."""
    e = SegmentEngine(str(tmp_path), EngineConfig(fsync="always"))
    e.append(make_batch(0))

    def eio(*args: object) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "fdatasync", eio)
    monkeypatch.setattr(os, "ftruncate", eio)
    with pytest.raises(StorageFailed):
        if call == "append":
            e.append(make_batch(1))
        else:
            e.append_many([make_batch(1), make_batch(2)])
    monkeypatch.undo()
    e.close()


def test_a_flush_that_overlaps_a_jobs_failing_fsync_waits_for_it_and_vouches_for_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel reports a writeback error once per open file, and the job's descriptors are
    dups of the engine's: when the thread's fdatasync takes it, the owner's own fdatasync of the
    same file returns success. A synchronous flush (a close, a truncation) overlapping the job
    must not write its checkpoint before it knows how the job's fsyncs ended."""
    e, _, job = engine_with_a_job(tmp_path, monkeypatch, 10)
    before = read_checkpoint(str(tmp_path))
    inside, release = threading.Event(), threading.Event()
    real = os.fdatasync

    def held_then_failing(fd: int) -> None:
        if threading.current_thread().name == "job":
            inside.set()
            assert release.wait(10)
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # the error the owner is not told
        real(fd)
    monkeypatch.setattr(os, "fdatasync", held_then_failing)
    runner = threading.Thread(target=job.run, name="job")
    runner.start()
    assert inside.wait(10)
    owner_waits = threading.Event()
    real_wait = job.synced.wait

    def wait(timeout: float | None = None) -> bool:
        owner_waits.set()
        return real_wait(timeout)
    job.synced.wait = wait  # type: ignore[method-assign]
    outcome: list[BaseException | None] = []

    def owner() -> None:
        try:
            e.flush()
            outcome.append(None)
        except BaseException as err:  # noqa: BLE001 -- the test looks at it
            outcome.append(err)
    t = threading.Thread(target=owner, name="owner")
    t.start()
    try:
        assert owner_waits.wait(10)  # its own fdatasync succeeded; it waits for the job's
        assert read_checkpoint(str(tmp_path)) == before
    finally:
        release.set()
        runner.join(10)
        t.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], StorageFailed), outcome
    assert read_checkpoint(str(tmp_path)) == before
    with pytest.raises(StorageFailed):
        e.flush_done(job)
    e.close()
    assert read_checkpoint(str(tmp_path)) == before


def test_a_job_opens_the_directory_of_its_own_rather_than_dup_the_engines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel reports a writeback error once per open file: had the job a dup of the
    engine's directory descriptor, a failure of the fsync ending its checkpoint replacement
    (which does not fence: the checkpoint fails safe) would be reported to the job only, and the
    engine's next directory fsync -- vouching for the segments it created or removed since --
    would succeed. With a descriptor of its own, that fsync sees the error too."""
    e = open_engine(tmp_path)
    fill(e, 0, 10)
    duped: list[int] = []
    real_dup = os.dup

    def dup(fd: int) -> int:
        duped.append(fd)
        return real_dup(fd)
    monkeypatch.setattr(os, "dup", dup)
    job = e.flush_job(T0)
    assert job is not None
    assert e._dir_fd not in duped and job.dir_fd != e._dir_fd
    assert os.path.samestat(os.fstat(job.dir_fd), os.fstat(e._dir_fd))
    job.discard()
    e.flush_done(job)
    e.close()
