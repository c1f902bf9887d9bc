"""A flush job that failed on the flusher thread leaves no reference cycle behind.

``FlushJob.run`` kept its error on the job (``self.error = e``) from the frame whose ``self``
the job is: the error's traceback holds that frame -- and so does its cause's, through the
frames' callers (``f_back``) -- error -> traceback -> frame -> job -> error. ``flush_done`` then
raised ``job.error`` itself, so that the error's new traceback held the frames up to the one
that caught it, which hold the job: the broker's ``collect_flushes`` (nodes/broker/
core_timers.py) still has it in its loop. The cycles kept the error, the job and, through its
bound methods, the engine -- a closed or deleted partition's too -- until a cyclic collection,
which a broker's tuned collector (``nodes/run.py``) runs rarely. A broker keeps running after
these failures: an index fsync (the index is rebuilt from its segment), the checkpoint's
replacement (a full disk), the close of a job's descriptor. A failed data fsync fences the
engine and stops the node; it is not here. The collector is off while these run.
"""

from __future__ import annotations

import errno
import os
import threading
import weakref
from pathlib import Path
from typing import Any

import pytest

from engines.api import EngineError, StorageFull
from engines.segment_flush import FLUSHER_TEMP_SUFFIX
from tests.unit.builders_segment import T0, error_dropped, fill, open_engine, run_in_thread


def _fail_fsync_on_the_thread(monkeypatch: pytest.MonkeyPatch, suffix: str, code: int) -> None:
    """The flusher thread's ("job") first fsync of a file whose path ends in ``suffix`` raises ``code``."""
    real, failed = os.fsync, []

    def fsync(fd: int) -> None:
        if threading.current_thread().name == "job" and not failed and os.readlink(f"/proc/self/fd/{fd}").endswith(suffix):
            failed.append(fd)
            raise OSError(code, os.strerror(code))
        real(fd)
    monkeypatch.setattr(os, "fsync", fsync)


def _fail_a_close_on_the_thread(monkeypatch: pytest.MonkeyPatch, fd_failing: int) -> None:
    """The flusher thread's ("job") close of ``fd_failing`` raises EIO (after closing it)."""
    real, failed = os.close, []

    def close(fd: int) -> None:
        real(fd)
        if threading.current_thread().name == "job" and fd == fd_failing and not failed:
            failed.append(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "close", close)


FAILURES: dict[str, Any] = {
    # (the failure injected, given the job; the error raised: type, start and end of its text, cause's errno)
    "index fsync": (lambda mp, job: _fail_fsync_on_the_thread(mp, ".index", errno.EIO), EngineError, "fsync ",
                    "Input/output error", errno.EIO),
    "checkpoint on a full disk": (lambda mp, job: _fail_fsync_on_the_thread(mp, FLUSHER_TEMP_SUFFIX, errno.ENOSPC),
                                  StorageFull, "write ", "No space left on device", errno.ENOSPC),
    "descriptor close": (lambda mp, job: _fail_a_close_on_the_thread(mp, job.syncs[0].log_fd), EngineError, "close ",
                         "Input/output error", None),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_failed_flush_job_its_error_and_its_engine_are_freed_without_a_collection(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_collector: None, failure: str) -> None:
    inject, error_type, what, says, cause_errno = FAILURES[failure]
    e = open_engine(tmp_path)
    fill(e, 0, 5)
    job = e.flush_job(T0)
    assert job is not None and job.checkpoint is not None
    inject(monkeypatch, job)
    run_in_thread(job)
    monkeypatch.undo()
    refs = [weakref.ref(e)]
    # applied as the broker's collect_flushes does: its frame keeps the job when it returns
    kind, message, cause, _, _ = error_dropped(e.flush_done, (job,), EngineError, refs)
    del job
    assert kind is error_type and message.startswith(what) and message.endswith(says)
    assert cause == cause_errno
    assert e._active.dirty  # not flushed: a later job syncs it
    e.close()
    del e
    assert [r() is None for r in refs] == [True, True], "the failed job's error and engine are kept by a reference cycle"


@pytest.mark.parametrize("failure", ["index fsync", "checkpoint on a full disk"])
def test_the_error_a_failed_job_keeps_holds_no_frame_of_the_flusher_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    """Until the owner's thread collects it, the job keeps its error: with the thread's frames --
    ``run``'s, whose ``self`` is the job -- in its traceback or its cause's, that is a cycle
    (a job never collected, or the fenced one whose error stays the cause). Type, text and cause
    are kept."""
    inject, error_type, what, says, cause_errno = FAILURES[failure]
    e = open_engine(tmp_path)
    fill(e, 0, 5)
    job = e.flush_job(T0)
    assert job is not None
    inject(monkeypatch, job)
    run_in_thread(job)
    monkeypatch.undo()
    kept = job.error
    assert isinstance(kept, error_type) and str(kept).startswith(what) and str(kept).endswith(says)
    assert isinstance(kept.__cause__, OSError) and kept.__cause__.errno == cause_errno
    assert (kept.__traceback__, kept.__cause__.__traceback__) == (None, None), "the kept error holds the thread's frames"
    del kept
    with pytest.raises(error_type):
        e.flush_done(job)
    e.close()
