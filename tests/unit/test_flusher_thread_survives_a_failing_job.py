"""The broker's flusher thread survives a job that fails where no fsync is involved.

A job closes its dup'd descriptors when it is done; close(2) can fail (EIO / ENOSPC / EDQUOT
reported by a network file system's flush-on-close). If that error escaped the job, the thread
would die silently: the job would never come back for ``flush_done`` (its engine would stay
"in flight" for ever) and every later job of every partition would wait in the queue: no
interval fsync again until shutdown, with nothing logged on the reactor."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from engines.api import EngineError
from nodes.broker.flusher import Flusher
from tests.harness import wait_until
from tests.unit.builders_segment import INTERVAL_MS, T0, fill, open_engine


def collected(flusher: Flusher) -> list:
    out: list = []
    wait_until(lambda: out.extend(flusher.completed()) or out, timeout_s=5, what="the job to come back")
    return out


def test_a_failed_close_of_a_jobs_descriptor_is_reported_and_the_thread_runs_the_next_job(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(tmp_path)
    fill(e, 0, 5)
    flusher = Flusher("b")
    real_close, failed, job_fds = os.close, [], set()

    def close(fd: int) -> None:
        real_close(fd)
        if threading.current_thread().name == "b-flusher" and fd in job_fds and not failed:
            failed.append(fd)
            raise OSError(errno.EIO, os.strerror(errno.EIO))
    monkeypatch.setattr(os, "close", close)
    job = e.flush_job(T0)
    assert job is not None and job.syncs
    held = _descriptors(job)  # the job's own: checked one by one (the process's count moves with
    # descriptors that other tests' sockets close later, libzmq's reaper among them)
    job_fds.add(job.syncs[0].log_fd)  # the first the job closes when done
    assert flusher.submit("p", job)
    try:
        assert collected(flusher) == [("p", job)]
        assert failed
        with pytest.raises(EngineError, match="Input/output error"):
            e.flush_done(job)  # reported on the owner's thread, the data stays dirty
        assert not [fd for fd, ident in held.items() if _identity(fd) == ident]  # every other one closed too
        assert e._active.dirty
        again = e.flush_job(T0 + INTERVAL_MS)  # not stuck "in flight"
        assert again is not None and flusher.submit("p", again)
        assert collected(flusher) == [("p", again)]  # the thread is alive
        assert e.flush_done(again) is True and not e._active.dirty
    finally:
        assert flusher.stop()
        e.close()


def _identity(fd: int) -> tuple[int, int] | None:
    """The file an open descriptor refers to, None once it is closed."""
    try:
        st = os.fstat(fd)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _descriptors(job) -> dict[int, tuple[int, int] | None]:  # noqa: ANN001
    """The job's descriptors and the files they refer to now."""
    fds = [job.dir_fd] + [fd for sy in job.syncs for fd in (sy.log_fd, sy.index_fd)] \
        + [d.fd for d in job.drops if d.owned]
    return {fd: _identity(fd) for fd in fds if fd >= 0}


class Broken:
    """A job that breaks the promise that run never raises, with an operating error."""

    ran = False
    error: BaseException = OSError(errno.EIO, "a plugin's job let an I/O error out")

    def run(self) -> None:
        raise self.error

    def discard(self) -> None:
        pass


class Buggy(Broken):
    error = RuntimeError("bug in a job")


class Fine(Broken):
    def run(self) -> None:
        self.ran = True


def test_a_job_that_raises_an_operating_error_is_logged_handed_back_and_the_next_job_still_runs(
        caplog: pytest.LogCaptureFixture) -> None:
    flusher = Flusher("b")
    broken, fine = Broken(), Fine()
    try:
        assert flusher.submit("p", broken) and flusher.submit("q", fine)
        out: list = []
        wait_until(lambda: out.extend(flusher.completed()) or len(out) == 2, timeout_s=5, what="both jobs back")
        assert out == [("p", broken), ("q", fine)] and fine.ran and flusher.outstanding == 0
        assert "a plugin's job let an I/O error out" in caplog.text
    finally:
        assert flusher.stop()


def test_a_job_that_raises_a_programmer_error_stops_the_node_through_the_reactor() -> None:
    """A bug is not carried on with: ``completed`` (the reactor's per-pass hook) raises it, and
    a programmer error leaving the reactor stops the node, which restarts from disk."""
    flusher = Flusher("b")
    try:
        assert flusher.submit("p", Buggy())
        deadline = time.monotonic() + 5
        with pytest.raises(RuntimeError, match="bug in a job"):
            while time.monotonic() < deadline:  # the reactor's passes until the job came back
                flusher.completed()
                time.sleep(0.01)
    finally:
        assert flusher.stop()
