"""The owner (the broker's reactor) never waits for the flusher thread's checkpoint fsyncs.

The thread replaces the recovery checkpoint (temp file, fsync, rename, directory fsync); a
truncation, retention or close on the owner's thread first invalidates the job under the
engine's checkpoint lock. If the thread held that lock across its fsyncs, a slow disk would
stall the reactor for them whenever such an operation met a checkpoint replacement -- the
stall the flusher exists to remove. Only the rename is under the lock."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from engines.segment_recovery import read_checkpoint
from tests.unit.builders_segment import engine_with_a_job

HELD_S = 10.0  # the thread's checkpoint fsync is held until released (at most this long)
OWNER_WAIT_MAX_S = 2.0  # the owner's truncation must finish well within the hold


def hold_the_threads_temp_fsync(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """On the thread named "job", an fsync of a *.tmp file waits for ``release`` (after setting
    ``inside``). Returns (inside, release)."""
    inside, release = threading.Event(), threading.Event()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if threading.current_thread().name == "job" and os.readlink(f"/proc/self/fd/{fd}").endswith(".tmp"):
            inside.set()
            assert release.wait(HELD_S)
        real_fsync(fd)
    monkeypatch.setattr(os, "fsync", fsync)
    return inside, release


@pytest.mark.parametrize("operation", ["truncate", "close"])
def test_the_owner_does_not_wait_for_the_threads_checkpoint_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                   operation: str) -> None:
    e, _, job = engine_with_a_job(tmp_path, monkeypatch, 20)
    inside, release = hold_the_threads_temp_fsync(monkeypatch)
    runner = threading.Thread(target=job.run, name="job")
    runner.start()
    try:
        assert inside.wait(10)  # the thread is in its checkpoint replacement, its fsync held
        owner = threading.Thread(target=e.truncate_to if operation == "truncate" else e.close,
                                 args=(10,) if operation == "truncate" else (), name="owner")
        owner.start()
        owner.join(OWNER_WAIT_MAX_S)
        assert not owner.is_alive(), "the owner waited for the flusher thread's checkpoint fsync"
    finally:
        release.set()
        runner.join(10)
    assert not runner.is_alive() and job.error is None
    assert not job.checkpoint_written  # it went stale before its rename: the owner's stays
    cp = read_checkpoint(str(tmp_path))
    assert cp is not None
    if operation == "truncate":
        assert cp.next_offset == e.log_end_offset <= 10
        assert e.flush_done(job) is False
        e.close()
    else:
        assert cp.clean
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]  # the thread's temp file removed


class _Probe:
    """The owner's side of the engine's checkpoint lock: notes whether the owner found it
    held (``waited``: the thread holds it while it creates its temp file) or free (``free``)."""

    def __init__(self, lock: threading.Lock) -> None:
        self.lock, self.waited, self.free = lock, threading.Event(), threading.Event()

    def __enter__(self) -> bool:
        if self.lock.acquire(blocking=False):
            self.free.set()
        else:
            self.waited.set()
            self.lock.acquire()
        return True

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def test_the_thread_creates_no_file_in_the_directory_after_the_owner_closed_the_engine(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A partition deleted (close, then its directory removed) while the thread is about to
    write its checkpoint's temp file: a file created after the close could land while the
    directory is being removed (its removal then fails and a stray directory stays). The
    temp file is created under the lock, only while the job is current."""
    e, _, job = engine_with_a_job(tmp_path, monkeypatch, 20)
    about_to_create, release = threading.Event(), threading.Event()
    created_after_close: list[bool] = []
    real_open = os.open

    def open_(path, flags, *args, **kw):  # noqa: ANN001, ANN002, ANN003, ANN202
        mine = threading.current_thread().name == "job" and str(path).endswith(".flusher.tmp")
        if mine:
            about_to_create.set()
            assert release.wait(HELD_S)
        fd = real_open(path, flags, *args, **kw)
        if mine:
            created_after_close.append(e._closed)
        return fd
    monkeypatch.setattr(os, "open", open_)
    probe = _Probe(e._checkpoint_lock)
    e._checkpoint_lock = probe  # the owner's side; the job keeps the bare lock
    runner = threading.Thread(target=job.run, name="job")
    runner.start()
    owner = threading.Thread(target=e.close, name="owner")
    try:
        assert about_to_create.wait(10)
        owner.start()
        # the close invalidates the job under the lock: the thread must be holding it while it
        # creates its temp file (the owner waits); a lock found free means it does not -- the
        # close then runs to its end before the thread is let go, and the file lands after it
        deadline = time.monotonic() + 10
        while not (probe.waited.is_set() or probe.free.is_set()):
            assert time.monotonic() < deadline, "the close never reached the lock"
            probe.waited.wait(0.01)
        if probe.free.is_set():
            owner.join(10)
    finally:
        release.set()
        runner.join(10)
        if owner.ident is not None:
            owner.join(10)
    assert not runner.is_alive() and not owner.is_alive()
    assert created_after_close in ([], [False]), created_after_close
    # the thread, let go, may still take the lock for its rename before the waiting close does
    # (a lock is not fair): its checkpoint then lands first, and the close's replaces it
    assert job.error is None
    cp = read_checkpoint(str(tmp_path))
    assert cp is not None and cp.clean
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
