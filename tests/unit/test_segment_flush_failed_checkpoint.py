"""A recovery-checkpoint replacement that fails after its rename (the directory fsync fails):
the new checkpoint may be the file on disk although the replacement raised. The owner must
then not believe the old one is on disk: a truncation back to exactly the old checkpoint's
point would skip writing its own, and the file on disk would keep vouching for bytes the
truncation cut (invariant: the checkpoint never names cut bytes)."""

from __future__ import annotations

import errno
import os
import stat
import threading
from pathlib import Path

import pytest

from engines.api import EngineError
from engines.segment_recovery import read_checkpoint
from tests.unit.builders_segment import T0, fill, open_engine, run_in_thread


def fail_directory_fsync_after_rename_on(monkeypatch: pytest.MonkeyPatch, thread_name: str) -> list[bool]:
    """After ``os.replace`` on the named thread, that thread's next fsync of a directory raises
    EIO (once). Returns a list that gets True when the failure was injected."""
    real_replace, real_fsync = os.replace, os.fsync
    renamed, injected = threading.local(), []

    def replace(src, dst, **kw):  # noqa: ANN001, ANN003, ANN202
        real_replace(src, dst, **kw)
        if threading.current_thread().name == thread_name:
            renamed.done = True

    def fsync(fd: int) -> None:
        if getattr(renamed, "done", False) and not injected and stat.S_ISDIR(os.fstat(fd).st_mode):
            injected.append(True)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        real_fsync(fd)
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "fsync", fsync)
    return injected


def assert_checkpoint_within_the_log(directory: Path, log_end_offset: int) -> None:
    cp = read_checkpoint(str(directory))
    assert cp is not None
    size = os.path.getsize(directory / f"{cp.segment_base_offset:020d}.log")
    assert cp.next_offset <= log_end_offset and cp.position <= size, (cp, log_end_offset, size)


def test_a_truncation_after_the_threads_checkpoint_rename_failed_its_fsync_writes_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(tmp_path)
    fill(e, 0, 3)
    e.flush()  # the checkpoint the owner knows: at the end of these 3 batches
    known = e.log_end_offset
    fill(e, 3, 3)  # same segment (no roll)
    job = e.flush_job(T0)
    assert job is not None and job.checkpoint is not None and job.checkpoint.segment_base_offset == 0
    injected = fail_directory_fsync_after_rename_on(monkeypatch, "job")
    run_in_thread(job)
    assert injected and job.error is not None  # renamed: on disk now, though it raised
    with pytest.raises(EngineError, match="Input/output error"):
        e.flush_done(job)
    e.truncate_to(known)  # back to exactly the point of the checkpoint the owner knew
    assert e.log_end_offset == known
    assert_checkpoint_within_the_log(tmp_path, e.log_end_offset)
    e.close()


def test_a_truncation_after_the_owners_checkpoint_rename_failed_its_fsync_writes_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on the synchronous path (the reference the flusher's path follows)."""
    e = open_engine(tmp_path)
    fill(e, 0, 3)
    e.flush()
    known = e.log_end_offset
    fill(e, 3, 3)
    injected = fail_directory_fsync_after_rename_on(monkeypatch, threading.current_thread().name)
    with pytest.raises(EngineError, match="Input/output error"):
        e.flush()
    assert injected
    monkeypatch.undo()
    e.truncate_to(known)
    assert e.log_end_offset == known
    assert_checkpoint_within_the_log(tmp_path, e.log_end_offset)
    e.close()
