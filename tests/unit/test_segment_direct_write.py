"""The segment engine's direct writes (engines/direct_write.py): runs of at least
``direct_write_min_bytes`` go past the page cache, smaller ones stay buffered, and the log reads
back the same either way -- across rolls, truncations, closes, crashes (a copy of the directory
taken while the engine is open) and file systems that refuse direct I/O. The zero padding a
direct write leaves past the log's end is cut at a roll and a close, and recovery takes it for
padding, not for a torn batch -- in a rolled segment too, where a cut would delete every later
segment."""

from __future__ import annotations

import errno
import os
import random
import struct
import threading
import shutil
from pathlib import Path
from typing import Callable

import pytest
import yaml

from engines import direct_write, segment_file
from engines.batch import build
from engines.api import CacheWindow, EngineConfig, EngineError, StorageFailed, StorageFull
from engines.conformance import make_batch, read_all
from engines.conformance_support import batch_index
from engines.direct_write import BLOCK_BYTES, DIRECT_WRITE_MIN_BYTES, open_direct
from engines.segment import SegmentEngine
from engines.segment_file import IOV_BATCHES_MAX, LogSegment
from engines.segment_recovery import Checkpoint, read_checkpoint, write_checkpoint
from fabric.config import ConfigError, load_config
from tests.harness import make_config
from tests.unit.builders_segment import cached

MIN_BYTES = 64 * 1024  # runs of at least this go direct in these tests
BIG_PAYLOAD = 70 * 1024  # one batch above MIN_BYTES, not a multiple of a block
SMALL_PAYLOAD = 300


def supports_direct(directory: Path) -> bool:
    probe = directory / "probe"
    probe.write_bytes(b"")
    fd = open_direct(str(probe))
    if fd >= 0:
        os.close(fd)
    probe.unlink()
    return fd >= 0


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    if not supports_direct(tmp_path):
        pytest.skip("the file system of the test directory has no direct I/O")
    return tmp_path / "log"


def open_engine(directory: Path, min_bytes: int = MIN_BYTES, segment_bytes: int = 4 * 1024 * 1024,
                fsync: str = "interval") -> SegmentEngine:
    return SegmentEngine(str(directory), EngineConfig(fsync=fsync, fsync_interval_ms=50, segment_bytes_max=segment_bytes,
                                                      direct_write_min_bytes=min_bytes))


def segment_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.log"))


def indexes(engine: SegmentEngine) -> list[int]:
    """The make_batch index of every batch in the log."""
    return [batch_index(memoryview(body)) for _, body in read_all(engine)]


def test_the_default_is_256_kib_and_minus_one_turns_it_off() -> None:
    assert EngineConfig().direct_write_min_bytes == DIRECT_WRITE_MIN_BYTES == 256 * 1024
    assert EngineConfig(direct_write_min_bytes=-1).direct_write_min_bytes == -1
    with pytest.raises(EngineError, match="direct_write_min_bytes"):
        EngineConfig(direct_write_min_bytes=-2)


def test_a_large_run_skips_the_page_cache_and_a_small_one_does_not(log_dir: Path) -> None:
    e = open_engine(log_dir)
    e.append(make_batch(0, payload_bytes=SMALL_PAYLOAD))
    big_at = e.size_bytes
    e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
    small_at = e.size_bytes
    e.append(make_batch(2, payload_bytes=SMALL_PAYLOAD))
    [path] = segment_files(log_dir)
    assert cached(path, small_at + 8)
    assert not cached(path, big_at + 8 * 4096), "the large batch went through the page cache"
    assert [h.base_offset for h, _ in read_all(e)] == [0, 3, 6]
    e.close()


def test_with_direct_writes_off_everything_is_cached(log_dir: Path) -> None:
    e = open_engine(log_dir, min_bytes=-1)
    e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
    [path] = segment_files(log_dir)
    assert cached(path, 8 * 4096)
    e.close()


def test_padding_is_cut_at_a_roll_and_at_a_close(log_dir: Path) -> None:
    e = open_engine(log_dir, segment_bytes=200 * 1024)
    for i in range(5):  # two batches per segment
        e.append(make_batch(i, payload_bytes=BIG_PAYLOAD))
    files = segment_files(log_dir)
    assert len(files) == 3
    assert files[-1].stat().st_size % BLOCK_BYTES == 0 and files[-1].stat().st_size > e._active.size_bytes
    for seg, path in zip(e._segments[:-1], files[:-1]):
        assert path.stat().st_size == seg.size_bytes
    e.close()
    assert files[-1].stat().st_size == e._segments[-1].size_bytes
    again = open_engine(log_dir, segment_bytes=200 * 1024)
    assert again.recovery.truncated_bytes == 0 and "clean" in again.recovery.message
    assert [h.base_offset for h, _ in read_all(again)] == [0, 3, 6, 9, 12]
    again.close()


def test_a_crash_leaves_padding_that_recovery_cuts_without_counting_it(log_dir: Path, tmp_path: Path) -> None:
    e = open_engine(log_dir)
    e.append(make_batch(0, payload_bytes=BIG_PAYLOAD))
    e.flush()
    e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
    crashed = tmp_path / "crashed"
    shutil.copytree(log_dir, crashed)  # what a kill -9 leaves (the page cache is the kernel's)
    [path] = segment_files(crashed)
    assert path.stat().st_size > e.size_bytes
    reopened = open_engine(crashed)
    assert reopened.recovery.truncated_bytes == 0, reopened.recovery
    assert [h.base_offset for h, _ in read_all(reopened)] == [0, 3]
    assert path.stat().st_size == reopened.size_bytes
    reopened.close()
    e.close()


def rolled_log_with_a_first_segment_tail(directory: Path, tail: bytes | None) -> list[int]:
    """A log of two segments whose checkpoint names the first (so recovery scans both), with
    ``tail`` appended to the first segment's file (None: zeros up to the next block, as a direct
    write pads): what a crash between a roll's cut of the padding and its fsync may leave.
    Returns the base offsets written."""
    e = open_engine(directory, min_bytes=-1, segment_bytes=200 * 1024)
    for i in range(4):
        e.append(make_batch(i, payload_bytes=BIG_PAYLOAD))
    e.close()
    assert len(segment_files(directory)) == 2
    dir_fd = os.open(directory, os.O_RDONLY)
    write_checkpoint(str(directory), dir_fd, Checkpoint(0, 0, 0, False))
    os.close(dir_fd)
    first = segment_files(directory)[0]
    if tail is None:
        tail = bytes(-first.stat().st_size % BLOCK_BYTES)
        assert tail
    with open(first, "ab") as f:
        f.write(tail)
    return [0, 3, 6, 9]


def test_zero_padding_in_a_rolled_segment_keeps_the_later_segments(log_dir: Path) -> None:
    written = rolled_log_with_a_first_segment_tail(log_dir, None)
    e = open_engine(log_dir, segment_bytes=200 * 1024)
    assert [h.base_offset for h, _ in read_all(e)] == written
    assert e.recovery.truncated_bytes == 0, e.recovery
    first = segment_files(log_dir)[0]
    assert first.stat().st_size == e._segments[0].size_bytes
    e.close()


@pytest.mark.parametrize("tail", [b"\x01" + bytes(999), bytes(BLOCK_BYTES), bytes(1000)],
                         ids=["not-zero", "a-whole-block", "not-to-a-block-end"])
def test_other_bytes_after_a_rolled_segment_are_still_a_damaged_tail(log_dir: Path, tail: bytes) -> None:
    rolled_log_with_a_first_segment_tail(log_dir, tail)
    e = open_engine(log_dir, segment_bytes=200 * 1024)
    assert e.recovery.truncated_bytes > 0
    assert [h.base_offset for h, _ in read_all(e)] == [0, 3]  # cut there, as before direct writes
    e.close()


def test_a_file_system_without_direct_io_gets_buffered_writes(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_write, "_O_DIRECT", 0)
    e = open_engine(log_dir)
    e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
    [path] = segment_files(log_dir)
    assert cached(path, 8 * 4096) and path.stat().st_size == e.size_bytes
    e.close()


def test_a_direct_write_refused_with_einval_is_written_buffered(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def refuse(fd: int, view: memoryview, at: int) -> None:
        calls.append(at)
        raise OSError(errno.EINVAL, "Invalid argument")
    monkeypatch.setattr(direct_write, "_write_all", refuse)
    e = open_engine(log_dir)
    e.append(make_batch(0, payload_bytes=BIG_PAYLOAD))
    e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
    assert len(calls) == 1, "refused once, the segment then writes buffered"
    assert [h.base_offset for h, _ in read_all(e)] == [0, 3]
    e.close()


@pytest.mark.parametrize("fail_at_write", [0, 2])
def test_a_failed_direct_write_leaves_the_log_as_it_was(log_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                        fail_at_write: int) -> None:
    monkeypatch.setattr(direct_write, "STAGE_BYTES_MAX", 16 * 1024)  # several writes per run
    e = open_engine(log_dir)
    e.append(make_batch(0, payload_bytes=BIG_PAYLOAD))
    before = e.size_bytes
    real = direct_write._write_all
    writes = []

    def fail(fd: int, view: memoryview, at: int) -> None:
        writes.append(at)
        if len(writes) > fail_at_write:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd, view, at)
    monkeypatch.setattr(direct_write, "_write_all", fail)
    with pytest.raises(StorageFull):
        e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
    [path] = segment_files(log_dir)
    assert e.size_bytes == before and e.log_end_offset == 3 and path.stat().st_size == before
    monkeypatch.setattr(direct_write, "_write_all", real)
    e.append(make_batch(2, payload_bytes=BIG_PAYLOAD))
    assert [h.base_offset for h, _ in read_all(e)] == [0, 3] and indexes(e) == [0, 2]
    e.close()
    again = open_engine(log_dir)
    assert again.recovery.truncated_bytes == 0 and len(read_all(again)) == 2
    again.close()


def test_a_flush_job_in_flight_at_a_roll_does_not_vouch_for_the_cut_padding(log_dir: Path) -> None:
    e = open_engine(log_dir, segment_bytes=200 * 1024)
    e.append(make_batch(0, payload_bytes=BIG_PAYLOAD))
    e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
    first = e._active
    assert first.padded_bytes
    job = e.flush_job(10_000)
    assert job is not None
    job.run()  # synced the first segment with its padding
    e.append(make_batch(2, payload_bytes=BIG_PAYLOAD))  # rolls: the padding is cut after the job's fsync
    assert e._active is not first and first.padded_bytes == 0
    e.flush_done(job)
    assert first.dirty and first in e._unsynced, "the cut of the padding would never be fsynced"
    e.close()


def test_seeded_appends_truncations_and_reopens_read_back_what_was_written(log_dir: Path) -> None:
    for seed in range(12):
        directory = log_dir / str(seed)
        rng = random.Random(seed)
        e = open_engine(directory, segment_bytes=rng.choice([300 * 1024, 1024 * 1024]))
        model: list[int] = []  # the batch index of every batch, in log order
        next_index = 0
        for _ in range(40):
            op = rng.random()
            if op < 0.55:
                count = rng.choice([1, 1, 2, 5])
                sizes = [rng.choice([SMALL_PAYLOAD, 5000, 40_000, BIG_PAYLOAD, 200_000]) for _ in range(count)]
                batches = [make_batch(next_index + k, record_count=1, payload_bytes=s) for k, s in enumerate(sizes)]
                e.append_many(batches)
                model += range(next_index, next_index + count)
                next_index += count
            elif op < 0.7 and model:
                keep = rng.randrange(len(model))
                e.truncate_to(keep)
                del model[keep:]
            elif op < 0.8:
                e.flush()
            elif op < 0.9:
                e.close()
                e = open_engine(directory, segment_bytes=e.config.segment_bytes_max)
                assert e.recovery.truncated_bytes == 0, (seed, e.recovery)
            else:
                crashed = log_dir / f"{seed}-crash"
                shutil.rmtree(crashed, ignore_errors=True)
                shutil.copytree(directory, crashed)
                copy = open_engine(crashed, segment_bytes=e.config.segment_bytes_max)
                assert indexes(copy) == model, seed
                copy.close()
            assert indexes(e) == model, seed
            for seg, path in zip(e._segments[:-1], segment_files(directory)[:-1]):
                assert path.stat().st_size == seg.size_bytes, (seed, path)
        e.close()
        again = open_engine(directory, segment_bytes=e.config.segment_bytes_max)
        assert again.recovery.truncated_bytes == 0 and indexes(again) == model, seed
        again.close()


def test_the_setting_is_configured_per_cluster_and_per_broker_and_reaches_the_engine(tmp_path: Path) -> None:
    path = make_config(tmp_path, brokers=2, overrides={"storage": {"direct_write_min_bytes": -1}})
    doc = yaml.safe_load(path.read_text())
    doc["nodes"]["broker-2"]["storage"] = {"direct_write_min_bytes": 1 << 20}
    path.write_text(yaml.safe_dump(doc))
    config = load_config(path, environ={})
    assert config.storage_for("broker-1").direct_write_min_bytes == -1
    two = config.storage_for("broker-2")
    assert two.direct_write_min_bytes == 1 << 20
    assert two.engine_config(-1, -1, 1 << 20, CacheWindow()).direct_write_min_bytes == 1 << 20
    for bad in (-2, True):
        doc["storage"]["direct_write_min_bytes"] = bad
        path.write_text(yaml.safe_dump(doc))
        with pytest.raises(ConfigError, match="direct_write_min_bytes"):
            load_config(path, environ={})


def test_zeros_after_a_wrong_index_entry_are_no_padding(log_dir: Path) -> None:
    """A scan that found no batch where the checkpoint segment's index entry points (a stale
    index: derived data) rebuilds the index from byte 0; zeros after that entry -- the rest of
    a batch with a zero payload -- are not taken for padding and cut."""
    config = EngineConfig(fsync="always", index_interval_bytes=1 << 20)
    e = SegmentEngine(str(log_dir), config)
    e.append(make_batch(0, payload_bytes=200))
    last_at = e.size_bytes
    e.append(build(bytes(3000), 1, 5, 6))
    size, end = e.size_bytes, e.log_end_offset
    e.close()
    with open(log_dir / f"{0:020d}.index", "wb") as f:
        f.write(struct.pack(">II", 3, last_at + 200))  # inside the last batch's zero payload
    again = SegmentEngine(str(log_dir), config)
    assert (again.size_bytes, again.log_end_offset, len(read_all(again))) == (size, end, 2), again.recovery
    again.close()


def test_a_call_that_fails_after_writing_part_of_itself_leaves_nothing_behind(log_dir: Path,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(log_dir)
    e.append(make_batch(0, record_count=1, payload_bytes=100))
    e.flush()
    fail_the_second_write_of_a_call(monkeypatch)
    with pytest.raises(EngineError):
        e.append_many(two_write_call())
    monkeypatch.undo()
    assert e.log_end_offset == 1 and segment_files(log_dir)[0].stat().st_size == e.size_bytes
    e.close()
    again = open_engine(log_dir)
    assert again.log_end_offset == 1 and len(read_all(again)) == 1
    again.close()


@pytest.mark.parametrize("failure", ["open", "lead-read"])
def test_a_direct_write_that_fails_before_writing_leaves_the_log_as_it_was(log_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                           failure: str) -> None:
    e = open_engine(log_dir)
    e.append(make_batch(0, record_count=1, payload_bytes=100))
    if failure == "open":
        def eio(path: str) -> int:
            raise OSError(errno.EIO, "Input/output error")
        monkeypatch.setattr(segment_file, "open_direct", eio)
    else:
        e._active._direct_fd = segment_file.open_direct(e._active.log_path)
        real = os.pread

        def pread(fd: int, n: int, at: int) -> bytes:
            if n < BLOCK_BYTES and fd == e._active._fd:
                raise OSError(errno.EIO, "Input/output error")
            return real(fd, n, at)
        monkeypatch.setattr(segment_file.os, "pread", pread)
    with pytest.raises(EngineError):
        e.append_many([make_batch(1, record_count=1, payload_bytes=BIG_PAYLOAD)])
    monkeypatch.undo()
    assert e.log_end_offset == 1
    e.append(make_batch(2, record_count=1, payload_bytes=BIG_PAYLOAD))
    assert indexes(e) == [0, 2]
    e.close()


def test_a_run_of_small_batches_is_one_run(log_dir: Path) -> None:
    """The threshold is compared with all of a call's bytes, not with each pwritev's share."""
    e = open_engine(log_dir)
    e.append_many([make_batch(i, record_count=1, payload_bytes=40) for i in range(2 * IOV_BATCHES_MAX)])
    assert e.size_bytes < 2 * MIN_BYTES  # each pwritev of 512 batches is under the threshold
    assert e.size_bytes > MIN_BYTES
    [path] = segment_files(log_dir)
    assert not cached(path, 4 * 4096) and not cached(path, e.size_bytes - 8 * 4096)
    e.close()


def test_flush_jobs_still_apply_when_rolls_cut_padding_during_each(log_dir: Path) -> None:
    """A roll's cut of the padding keeps only the rolled segment dirty (it counts ``trims``),
    it does not make the job stale: under a load that rolls during every job the checkpoint
    still moves and the unsynced segments stay few."""
    e = open_engine(log_dir, segment_bytes=200 * 1024)
    now, i, applied = 100_000, 0, 0
    for _ in range(20):
        e.append(make_batch(i, payload_bytes=BIG_PAYLOAD))
        i += 1
        job = e.flush_job(now)
        assert job is not None
        for _ in range(3):
            e.append(make_batch(i, payload_bytes=BIG_PAYLOAD))
            i += 1
        job.run()
        applied += e.flush_done(job)
        now += 20_000
    assert applied == 20 and read_checkpoint(str(log_dir)) is not None and len(e._unsynced) <= 2
    e.close()


def test_a_rolled_segment_keeps_no_direct_descriptor(log_dir: Path) -> None:
    e = open_engine(log_dir, segment_bytes=200 * 1024)
    for i in range(6):
        e.append(make_batch(i, payload_bytes=BIG_PAYLOAD))
    assert len(e._segments) == 3
    assert all(seg._direct_fd < 0 and not seg._tail for seg in e._segments[:-1])
    assert e._active._direct_fd >= 0
    e.close()


def test_close_still_flushes_when_the_padding_cut_fails(log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(log_dir, fsync="never")
    e.append(make_batch(0, payload_bytes=100))
    e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
    assert e._active.padded_bytes
    real = os.ftruncate

    def ftruncate(fd: int, size: int) -> None:
        if os.readlink(f"/proc/self/fd/{fd}").endswith(".log"):
            raise OSError(errno.EIO, "Input/output error")
        real(fd, size)
    monkeypatch.setattr(segment_file.os, "ftruncate", ftruncate)
    e.close()
    monkeypatch.undo()
    cp = read_checkpoint(str(log_dir))
    assert cp is not None and cp.clean and cp.next_offset == 6
    again = open_engine(log_dir)
    assert again.recovery.truncated_bytes == 0 and indexes(again) == [0, 1]
    again.close()


@pytest.mark.parametrize("errno_", [errno.EMFILE, errno.ENFILE])
def test_out_of_descriptors_for_the_direct_one_writes_that_run_buffered(log_dir: Path, monkeypatch: pytest.MonkeyPatch,
                                                                        errno_: int) -> None:
    e = open_engine(log_dir)
    real = segment_file.open_direct

    def out(path: str) -> int:
        raise OSError(errno_, os.strerror(errno_))
    monkeypatch.setattr(segment_file, "open_direct", out)
    e.append(make_batch(0, payload_bytes=BIG_PAYLOAD))
    [path] = segment_files(log_dir)
    assert cached(path, 8 * 4096), "written buffered"
    monkeypatch.setattr(segment_file, "open_direct", real)
    at = e.size_bytes
    e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
    assert not cached(path, at + 8 * 4096), "the next run tries direct again"
    assert indexes(e) == [0, 1]
    e.close()


def fail_the_second_write_of_a_call(monkeypatch: pytest.MonkeyPatch, between: Callable[[], object] | None = None) -> None:
    real = LogSegment._write_direct
    calls = []

    def second_fails(self: LogSegment, fd: int, iov: list, at: int, nbytes: int) -> None:
        calls.append(at)
        if len(calls) == 2:
            if between is not None:
                between()
            raise EngineError("the disk went away")
        real(self, fd, iov, at, nbytes)
    monkeypatch.setattr(LogSegment, "_write_direct", second_fails)


def two_write_call() -> list[bytes]:
    return [make_batch(1 + i, record_count=1, payload_bytes=200) for i in range(IOV_BATCHES_MAX + 1)]


@pytest.mark.parametrize("fsync", ["interval", "always"])
def test_the_cut_of_a_failed_append_is_fsynced(log_dir: Path, monkeypatch: pytest.MonkeyPatch, fsync: str) -> None:
    """Under interval by the next flush; under always before the error is raised."""
    e = open_engine(log_dir, fsync=fsync)
    e.append(make_batch(0, record_count=1, payload_bytes=100))
    e.flush()
    seg = e._active
    synced: list[int] = []
    real = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real(fd))[1])
    fail_the_second_write_of_a_call(monkeypatch)
    with pytest.raises(EngineError):
        e.append_many(two_write_call())
    if fsync == "interval":
        assert not synced
        e.flush()
    assert seg.fd in synced, "the ftruncate that removed the failed call's batches was never fsynced"
    monkeypatch.undo()
    e.close()


def test_a_flush_job_synced_before_the_cut_of_a_failed_append_does_not_mark_the_segment_clean(
        log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    e = open_engine(log_dir)
    e.append(make_batch(0, record_count=1, payload_bytes=100))
    job = e.flush_job(10_000)
    assert job is not None
    seg = e._active
    # the flusher's fdatasync lands after the call's first direct write, before the cut
    fail_the_second_write_of_a_call(monkeypatch, between=job.run)
    with pytest.raises(EngineError):
        e.append_many(two_write_call())
    monkeypatch.undo()
    assert e.flush_done(job)
    assert seg.dirty, "the job vouches for a file size the cut has since changed"
    e.close()


def test_under_fsync_always_a_failed_append_cut_back_across_a_roll_is_fsynced_before_the_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The roll in the middle of the call fsynced its first batches into the old segment; the
    cut of them must be durable before the client is told they were not written. (Buffered
    writes: this is no matter of direct ones.)"""
    directory, crash = tmp_path / "log", tmp_path / "crash"
    e = SegmentEngine(str(directory), EngineConfig(fsync="always", segment_bytes_max=16 * 1024,
                                                   index_interval_bytes=512, direct_write_min_bytes=-1))
    e.append(make_batch(0, record_count=1, payload_bytes=4000))
    old = e._active
    real = LogSegment._write_at

    def fail_in_the_new_segment(self: LogSegment, fd: int, iov: list, at: int, nbytes: int) -> None:
        if self is not old:
            shutil.copytree(directory, crash)  # all of it fsynced by the roll
            raise StorageFull("disk full")
        real(self, fd, iov, at, nbytes)
    monkeypatch.setattr(LogSegment, "_write_at", fail_in_the_new_segment)
    with pytest.raises(StorageFull):
        e.append_many([make_batch(1 + i, record_count=1, payload_bytes=4000) for i in range(5)])  # rolls after 3
    monkeypatch.undo()
    assert e.log_end_offset == 1 and e._active is old
    assert not old.dirty, "the cut back across the roll was not fsynced before the error was raised"
    e.close()
    reopened = SegmentEngine(str(crash), e.config)
    assert reopened.log_end_offset == 4  # what the crash image holds: why the cut must be synced
    reopened.close()


def test_the_staging_buffer_is_made_whole_once_per_thread() -> None:
    def grab() -> list:
        return [direct_write.staging_buffer(n).obj for n in (1, 300_000, 5_000_000, 100_000_000)]
    result: list = []
    worker = threading.Thread(target=lambda: result.extend(grab()))
    worker.start()
    worker.join()
    assert len({id(b) for b in result}) == 1 and len(result[0]) == direct_write.STAGE_BYTES_MAX
    assert result[0] is not direct_write.staging_buffer(1).obj  # another thread, another buffer


def test_a_direct_write_refused_with_einval_part_way_through_a_run_is_written_buffered(
        log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file system that takes the first direct write of a run and refuses a later one
    (EINVAL: alignment or no direct I/O after all, not a failing disk) gets the whole run
    written buffered, as when it refuses the first: the pieces already written hold the run's
    own bytes, which the buffered write writes again. The append must not fail."""
    monkeypatch.setattr(direct_write, "STAGE_BYTES_MAX", 16 * 1024)  # several writes per run
    real = direct_write._write_all
    writes = []

    def refuse_after_the_first(fd: int, view: memoryview, at: int) -> None:
        writes.append(at)
        if len(writes) > 1:
            raise OSError(errno.EINVAL, "Invalid argument")
        real(fd, view, at)
    monkeypatch.setattr(direct_write, "_write_all", refuse_after_the_first)
    e = open_engine(log_dir)
    e.append(make_batch(0, payload_bytes=SMALL_PAYLOAD))
    e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))  # raised EngineError
    e.append(make_batch(2, payload_bytes=BIG_PAYLOAD))
    assert len(writes) == 2, "refused once, the segment then writes buffered"
    assert indexes(e) == [0, 1, 2]
    e.close()
    monkeypatch.undo()
    again = open_engine(log_dir)
    assert again.recovery.truncated_bytes == 0 and indexes(again) == [0, 1, 2]
    again.close()


def test_a_failed_append_whose_cut_back_across_a_roll_fails_is_not_left_in_the_log(
        log_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A call that rolled wrote its first batches (directly) into the old segment; its write
    into the new segment fails, and so does the cut of the old segment back to where the call
    began (a disk going bad). The engine must not answer the error and go on serving those
    batches -- followers would replicate them, the high watermark pass them, and the producer,
    told they were not written, send them again after them: it fences (StorageFailed: the node
    stops, and its restart recovers what the disk holds)."""
    e = open_engine(log_dir, segment_bytes=200 * 1024)
    e.append(make_batch(0, record_count=1, payload_bytes=BIG_PAYLOAD))
    old = e._active
    end, size = e.log_end_offset, e.size_bytes
    real_write, real_ftruncate = LogSegment._write_direct, os.ftruncate

    def fail_in_the_new_segment(self: LogSegment, fd: int, iov: list, at: int, nbytes: int) -> None:
        if self is not old:
            raise OSError(errno.EIO, "Input/output error")
        real_write(self, fd, iov, at, nbytes)

    def fail_on_the_old_segment(fd: int, length: int) -> None:
        if os.path.samestat(os.fstat(fd), os.stat(old.log_path)):
            raise OSError(errno.EIO, "Input/output error")
        real_ftruncate(fd, length)
    monkeypatch.setattr(LogSegment, "_write_direct", fail_in_the_new_segment)
    monkeypatch.setattr(segment_file.os, "ftruncate", fail_on_the_old_segment)
    with pytest.raises(StorageFailed):  # was the ftruncate's EngineError, the batches kept
        e.append_many([make_batch(1 + i, record_count=1, payload_bytes=BIG_PAYLOAD) for i in range(3)])  # rolls after 1
    monkeypatch.undo()
    with pytest.raises(StorageFailed):
        e.append(make_batch(9, record_count=1, payload_bytes=100))
    e.close()


@pytest.mark.parametrize("failure", [OSError(errno.ENOMEM, "Cannot allocate memory"), MemoryError()])
def test_a_staging_buffer_that_cannot_be_made_leaves_the_run_to_a_buffered_write(
        log_dir: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException) -> None:
    """The staging buffer is made at a thread's first direct write (8 MiB, touched whole): a
    broker short of memory then failed the append (EngineError from ENOMEM; a MemoryError, not
    a storage error at all, stopped the node). The page cache's memory is still there: the run
    is written buffered, and a later run tries the direct way again."""
    made = []

    def mmap_failing_once(fileno: int, size: int) -> object:
        made.append(size)
        if len(made) == 1:
            raise failure
        return real_mmap(fileno, size)
    real_mmap = direct_write.mmap.mmap
    monkeypatch.setattr(direct_write.mmap, "mmap", mmap_failing_once)
    result: list = []

    def in_a_thread_without_a_buffer() -> None:
        e = open_engine(log_dir)
        try:
            e.append(make_batch(0, payload_bytes=BIG_PAYLOAD))
            e.append(make_batch(1, payload_bytes=BIG_PAYLOAD))
            result.append(indexes(e))
        except BaseException as ex:  # noqa: BLE001 -- handed to the test thread
            result.append(ex)
        finally:
            e.close()
    worker = threading.Thread(target=in_a_thread_without_a_buffer)
    worker.start()
    worker.join()
    assert result == [[0, 1]], result
    assert len(made) == 2, "the next run did not try the direct way again"
    monkeypatch.undo()
    again = open_engine(log_dir)
    assert again.recovery.truncated_bytes == 0 and indexes(again) == [0, 1]
    again.close()
