"""Builders for the segment engine's flush and checkpoint tests, once each: an interval-fsync
engine, batches to fill it, fsyncs recorded, a flush job run on its own thread, whether a page
is in the page cache, an engine error caught and dropped as a broker does.

Kept apart from ``fakes.py`` (which stays under the ~500-line module limit); engine-level only.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import threading
import weakref
from pathlib import Path
from typing import Callable

import pytest

from engines.api import EngineConfig
from engines.conformance import make_batch
from engines.segment import SegmentEngine


INTERVAL_MS = 50  # the engines' fsync interval (fsync_interval_ms)


def open_engine(directory: Path) -> SegmentEngine:
    """A segment engine in ``directory``: interval fsync, 16 KiB segments, an index entry per 512 bytes."""
    return SegmentEngine(str(directory), EngineConfig(fsync="interval", fsync_interval_ms=INTERVAL_MS,
                                                      segment_bytes_max=16 * 1024, index_interval_bytes=512))


def cached(path: Path, position: int) -> bool:
    """Whether the page holding byte ``position`` of ``path`` is in the page cache: mincore(2)
    on a private mapping of that page, which touches nothing (a probing read -- even one that
    may not wait, RWF_NOWAIT -- starts the kernel's readahead, and the pages after it then
    arrive in the cache while the test looks)."""
    page = position - position % mmap.PAGESIZE
    with open(path, "rb") as f:
        length = min(mmap.PAGESIZE, os.fstat(f.fileno()).st_size - page)  # the file's last page may be partial
        mapped = mmap.mmap(f.fileno(), length, access=mmap.ACCESS_COPY, offset=page)
    try:
        anchor = ctypes.c_char.from_buffer(mapped)
        vec = (ctypes.c_ubyte * 1)()
        rc = _libc.mincore(ctypes.c_void_p(ctypes.addressof(anchor)), ctypes.c_size_t(mmap.PAGESIZE), vec)
        del anchor
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return bool(vec[0] & 1)
    finally:
        mapped.close()


_libc = ctypes.CDLL(None, use_errno=True)


def fill(engine: SegmentEngine, start: int, count: int) -> None:
    """Append batches ``start`` .. ``start + count - 1`` (1-4 records of ~500 bytes each)."""
    for i in range(start, start + count):
        engine.append(make_batch(i, record_count=1 + i % 4, payload_bytes=500))


T0 = 100_000  # ms: the clock reading the flush jobs are made at


class SyncRecorder:
    """Wraps os.fdatasync / os.fsync: records (thread name, inode, size) of each synced fd in
    ``synced`` and its path in ``paths``; ``fail_with`` makes the next data sync on the
    flusher thread raise that errno."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.synced: list[tuple[str, int, int]] = []
        self.paths: list[str] = []
        self.fail_with: int | None = None
        real_fdatasync, real_fsync = os.fdatasync, os.fsync

        def wrap(real):  # noqa: ANN001, ANN202
            def sync(fd: int) -> None:
                st = os.fstat(fd)
                path = os.readlink(f"/proc/self/fd/{fd}")
                name = threading.current_thread().name
                if self.fail_with is not None and name == "job" and real is real_fdatasync:
                    code, self.fail_with = self.fail_with, None
                    raise OSError(code, os.strerror(code))
                real(fd)
                self.synced.append((name, st.st_ino, st.st_size))
                self.paths.append(path)
            return sync
        monkeypatch.setattr(os, "fdatasync", wrap(real_fdatasync))
        monkeypatch.setattr(os, "fsync", wrap(real_fsync))

    def clear(self) -> None:
        self.synced.clear()
        self.paths.clear()

    def synced_size(self, path: str) -> int:
        """The largest size at which the file at ``path`` was synced (0 if never)."""
        ino = os.stat(path).st_ino
        return max([size for _, i, size in self.synced if i == ino], default=0)

    def first(self, suffix: str) -> int:
        """Index in ``paths`` of the first sync of a path ending in ``suffix``; AssertionError
        if none."""
        found = [i for i, p in enumerate(self.paths) if p.endswith(suffix)]
        assert found, f"nothing ending in {suffix} was synced: {self.paths}"
        return found[0]


def run_in_thread(job) -> None:  # noqa: ANN001
    """Run a flush job on a thread named \"job\" and wait for it (at most 10 s)."""
    t = threading.Thread(target=job.run, name="job")
    t.start()
    t.join(10)
    assert not t.is_alive()


def engine_with_a_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, batches: int):  # noqa: ANN201
    """An engine with ``batches`` appended, fsyncs recorded, and a job made (checkpoint due)."""
    e = open_engine(tmp_path)
    sync = SyncRecorder(monkeypatch)
    fill(e, 0, batches)
    job = e.flush_job(T0)
    assert job is not None and job.checkpoint is not None
    return e, sync, job


def error_dropped(call: Callable[..., object], args: tuple, error_type: type[BaseException],
                  refs: list[weakref.ref]) -> tuple:
    """``call(*args)``'s error, caught as a broker catches an engine's: answered -- its type and
    text, its cause's errno, text and ``written`` (``described``) -- and dropped, only weakly in
    ``refs``. This frame keeps ``args`` when it returns, as a broker's loop keeps what it
    handled."""
    try:
        call(*args)
    except error_type as e:
        refs.append(weakref.ref(e))
        return described(e)
    raise AssertionError(f"{call.__qualname__} raised nothing")


def described(error: BaseException) -> tuple:
    """(type, text, cause's errno, cause's text, cause's ``written``; None where there is none).
    Read in a frame of its own: the cause's traceback holds the frames that raised it and,
    through them, their callers' -- which must not hold the cause."""
    cause = error.__cause__
    if not isinstance(cause, OSError):
        return type(error), str(error), None, None, None
    return type(error), str(error), cause.errno, cause.strerror, getattr(cause, "written", None)
