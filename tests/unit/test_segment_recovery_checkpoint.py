"""The segment engine's recovery checkpoint (an interval flush moves it at most every
RECOVERY_CHECKPOINT_INTERVAL_MS) against crashes, disk-full and damaged indexes: a crash is a
second engine opened on the same directory without closing the first; a disk-full is a mocked
pwritev. Each test names the
sequence it drives and the recovery property it checks."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from unittest import mock

import pytest

from engines.api import EngineConfig, StorageFailed, StorageFull
from engines.conformance import make_batch, read_all
from engines.segment import SegmentEngine
from engines.segment_recovery import CHECKPOINT_FILE, read_checkpoint, recover

INTERVAL_MS = 50
SEGMENT_BYTES = 16 * 1024


def open_engine(directory: Path, fsync: str = "interval") -> SegmentEngine:
    return SegmentEngine(str(directory), EngineConfig(fsync=fsync, fsync_interval_ms=INTERVAL_MS,
                                                      segment_bytes_max=SEGMENT_BYTES, index_interval_bytes=512))


def fill(engine: SegmentEngine, start: int, count: int, payload_bytes: int = 500) -> None:
    for i in range(start, start + count):
        engine.append(make_batch(i, record_count=1 + i % 4, payload_bytes=payload_bytes))


def index_sizes(directory: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(directory.glob("*.index"))}


def test_a_crash_reopen_keeps_the_indexes_of_segments_it_did_not_scan(tmp_path: Path) -> None:
    """flush, append, crash: the dirty open must not cut the .index files of the segments before
    the checkpoint (it never loaded them) to zero bytes; an empty index loads as valid and is
    never rebuilt, so every later lookup in those segments walks them from byte 0."""
    e = open_engine(tmp_path)
    fill(e, 0, 100)
    e.flush()
    fill(e, 100, 10)
    before = index_sizes(tmp_path)
    expected = read_all(e)
    e2 = open_engine(tmp_path)  # crash
    after = index_sizes(tmp_path)
    older = sorted(before)[:-1]
    assert older and all(before[name] > 0 for name in older)
    assert {name: after[name] for name in older} == {name: before[name] for name in older}
    assert read_all(e2) == expected
    e2.close()


def test_a_crash_reopen_fsyncs_what_it_recovered_before_checkpointing_it(tmp_path: Path) -> None:
    """append across rolls with no flush at all, crash: the second engine validates the rolled
    segments from the page cache and writes a checkpoint vouching for them; each must be
    fdatasynced first, or a power failure after the checkpoint leaves bytes it trusts unsynced."""
    e = open_engine(tmp_path)
    fill(e, 0, 100)  # rolls; nothing fsynced
    assert len(e._segments) > 3
    synced: list[str] = []
    real_fdatasync = os.fdatasync

    def recording_fdatasync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fdatasync(fd)

    with mock.patch("engines.segment_file.os.fdatasync", recording_fdatasync):
        e2 = open_engine(tmp_path)  # crash
    logs = sorted(str(p) for p in tmp_path.glob("*.log"))
    assert read_checkpoint(str(tmp_path)).next_offset == e2.log_end_offset
    assert sorted(set(synced)) == logs
    e2.close()


def test_a_stale_index_entry_below_the_checkpoint_is_rebuilt_not_cut_at(tmp_path: Path) -> None:
    """fsync always: append_many rolls (flush: the index file names the batches written so far;
    the checkpoint stays where the call began), then the disk fills and the call cuts its
    batches again; appends re-grow the segment past the cut with other batch boundaries (each
    fdatasynced), crash. Recovery must open and keep every acknowledged record: the index file
    still names batch starts of the cut bytes, which is stale index data, not a damaged log."""
    e = open_engine(tmp_path, fsync="always")
    fill(e, 0, 5)
    real_pwritev = os.pwritev
    calls = {"n": 0}

    def full_after_a_roll(fd: int, buffers: list, position: int) -> int:
        calls["n"] += 1
        if calls["n"] == 2:  # the write after the first roll (one per segment the call spans)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwritev(fd, buffers, position)

    batches = [make_batch(i, record_count=1, payload_bytes=500) for i in range(5, 40)]
    with mock.patch("engines.segment_file.os.pwritev", full_after_a_roll), pytest.raises(StorageFull):
        e.append_many(batches)
    point = read_checkpoint(str(tmp_path))
    assert e.segment_count == 1 and point.position <= e._active.size_bytes  # vouches for no cut byte
    stale_end = max(int.from_bytes(b[4:8], "big") for b in _index_entries(tmp_path))
    assert stale_end > e._active.size_bytes  # the index file names batches of the cut bytes
    i = 5
    while e._active.size_bytes <= stale_end:
        e.append(make_batch(i, record_count=1 + i % 3, payload_bytes=333))
        i += 1
    assert e.segment_count == 1
    expected = read_all(e)
    e2 = open_engine(tmp_path, fsync="always")  # crash
    assert read_all(e2) == expected and e2.log_end_offset == e.log_end_offset
    e2.close()


def test_a_damaged_index_entry_below_the_checkpoint_does_not_cut_the_log(tmp_path: Path) -> None:
    """flush, damage one index entry of the checkpoint segment (still increasing, inside the
    log), append, crash: the index is derived data; recovery rebuilds it and keeps every record
    instead of cutting the log at the entry."""
    e = open_engine(tmp_path)
    fill(e, 0, 20)
    e.flush()
    fill(e, 20, 2)
    expected = read_all(e)
    index = sorted(tmp_path.glob("*.index"))[-1]
    raw = bytearray(index.read_bytes())
    assert len(raw) >= 16
    position = int.from_bytes(raw[-4:], "big")
    raw[-4:] = (position + 1).to_bytes(4, "big")  # the last entry now points one byte late
    index.write_bytes(bytes(raw))
    e2 = open_engine(tmp_path)  # crash
    assert read_all(e2) == expected
    e2.close()


@pytest.mark.parametrize("how", ["reset", "truncate"])
def test_truncating_an_empty_log_below_its_start_is_a_no_op(tmp_path: Path, how: str) -> None:
    """reset_to(50) (or fill, truncate_to(start): empty at 0 is the trivial case), then
    truncate_to below the start: nothing to drop, as in the memory and lmdb engines -- not a
    CorruptBatch from looking up an offset in an empty segment."""
    e = open_engine(tmp_path)
    if how == "reset":
        e.reset_to(50)
    else:
        fill(e, 0, 40)
        e.delete_before(e._segments[-1].base_offset)
        e.truncate_to(e.log_start_offset)
    start = e.log_start_offset
    assert start > 0 and e.log_end_offset == start
    e.truncate_to(start - 1)
    assert (e.log_start_offset, e.log_end_offset) == (start, start)
    fill(e, 0, 3)
    expected = read_all(e)
    e2 = open_engine(tmp_path)  # crash
    assert read_all(e2) == expected and e2.log_start_offset == start
    e2.close()


def fail_first_write_of_a_new_segment(engine: SegmentEngine, batches: list[bytes]) -> None:
    """append_many that rolls, with the disk full at the first write into the new segment: the
    call cuts its batches again (StorageFull), leaving the old segment active once more."""
    real_pwritev = os.pwritev

    def full_at_a_new_segment(fd: int, buffers: list, position: int) -> int:
        if position == 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_pwritev(fd, buffers, position)

    with mock.patch("engines.segment_file.os.pwritev", full_at_a_new_segment), pytest.raises(StorageFull):
        engine.append_many(batches)


def _index_entries(directory: Path) -> list[bytes]:
    raw = sorted(directory.glob("*.index"))[-1].read_bytes()
    return [raw[i:i + 8] for i in range(0, len(raw) - 7, 8)]


def log_bases(directory: Path) -> list[int]:
    return sorted(int(p.name[:20]) for p in directory.glob("*.log"))


@pytest.mark.parametrize("then", ["retention", "truncate"])
def test_a_segment_deleted_after_a_failed_rolling_append_stays_deleted(tmp_path: Path, then: str) -> None:
    """fill, append_many that rolls and fails (disk full) -- the old segment, active again, is
    still listed as rolled-and-unsynced --, appends roll it again (listed twice), then retention
    deletes it (or truncate_to cuts below it) and flushes: the flush must not fsync the deleted
    segment, whose file would be re-created empty. A crash then reopens a phantom empty segment:
    a log start below the real one whose records cannot be read (retention), or a segment past a
    gap (truncate)."""
    e = open_engine(tmp_path)
    fill(e, 0, 40)  # a roll: segment A, active with data, follows another
    a = e._segments[-1].base_offset
    assert a > 0
    fail_first_write_of_a_new_segment(e, [make_batch(i, record_count=1, payload_bytes=500) for i in range(40)])
    assert e._segments[-1].base_offset == a
    fill(e, 20, 40)  # A rolls again
    assert e._segments[-1].base_offset > a
    if then == "retention":
        e.delete_before(e._segments[-1].base_offset)
        assert e.log_start_offset > a
    else:
        e.truncate_to(a)
    assert log_bases(tmp_path) == e._bases
    expected = read_all(e)
    start, end = e.log_start_offset, e.log_end_offset
    e2 = open_engine(tmp_path)  # crash
    assert (e2.log_start_offset, e2.log_end_offset) == (start, end)
    assert read_all(e2) == expected
    e2.close()


@pytest.mark.parametrize("deleted", [1, 2])
def test_a_crash_while_truncation_deletes_segments_leaves_a_prefix(tmp_path: Path, deleted: int) -> None:
    """fill several segments, flush (the checkpoint names the last), truncate_to inside the
    first segment and crash after ``deleted`` segment deletions: recovery must find a prefix of
    the old log. Deleting oldest first left a hole before the checkpoint's segment, which
    recovery trusts without reading: records with a gap, read back as one log."""
    e = open_engine(tmp_path)
    fill(e, 0, 150)
    e.flush()
    assert len(e._segments) >= 4
    before = read_all(e)
    real_delete, calls = SegmentEngine._delete_segment, []

    def crash_after_some(engine: SegmentEngine, seg: object) -> None:
        if len(calls) == deleted:
            raise SimulatedCrash()
        calls.append(seg)
        real_delete(engine, seg)

    with mock.patch.object(SegmentEngine, "_delete_segment", crash_after_some), pytest.raises(SimulatedCrash):
        e.truncate_to(3)
    e2 = open_engine(tmp_path)
    after = read_all(e2)
    assert e2.log_start_offset == 0 and after == before[: len(after)]
    assert 0 < len(after) < len(before)
    e2.close()


def test_a_truncation_whose_fsync_fails_leaves_no_checkpoint_over_the_cut_bytes(tmp_path: Path) -> None:
    """flush (checkpoint at position X), truncate_to below X whose fdatasync fails (EIO): the
    checkpoint on disk must not vouch for [0, X) of the old bytes -- it is moved to the cut
    before the cut. (Before the engine refused writes after a failed fsync, appends then wrote
    other batches over the cut bytes, and a power failure leaving old bytes or a mix of pages
    had recovery trust them unvalidated.) The log then takes no more writes (StorageFailed)."""
    e = open_engine(tmp_path)
    fill(e, 0, 20)
    e.flush()
    assert e.segment_count == 1
    with mock.patch("engines.segment_file.os.fdatasync", side_effect=OSError(errno.EIO, "I/O error")), \
            pytest.raises(StorageFailed):
        e.truncate_to(5)
    cut_position = e._active.size_bytes
    point = read_checkpoint(str(tmp_path))
    assert point is not None and point.position <= cut_position, (point, cut_position)
    with pytest.raises(StorageFailed):
        fill(e, 100, 1)
    e.close()
    assert read_checkpoint(str(tmp_path)) == point


@pytest.mark.parametrize("at_a_segment_start", [False, True])
def test_a_failed_truncation_into_an_earlier_segment_leaves_the_checkpoint_at_or_below_the_cut(
        tmp_path: Path, at_a_segment_start: bool) -> None:
    """The checkpoint names the last of several segments; the cut falls inside the first one,
    or exactly at a segment's start (that segment goes, the one before ends the log)."""
    e = open_engine(tmp_path)
    fill(e, 0, 100)
    e.flush()
    assert e.segment_count >= 3
    first = e._segments[0]
    cut = e._segments[2].base_offset if at_a_segment_start else first.base_offset + (first.next_offset - first.base_offset) // 2
    with mock.patch("engines.segment_file.os.fdatasync", side_effect=OSError(errno.EIO, "I/O error")), \
            pytest.raises(StorageFailed):
        e.truncate_to(cut)
    point = read_checkpoint(str(tmp_path))
    active = e._active
    assert point is not None and point.segment_base_offset == active.base_offset, (point, active.base_offset)
    assert point.position <= active.size_bytes and point.next_offset <= e.log_end_offset <= cut


def test_a_truncation_that_cannot_first_move_the_checkpoint_leaves_the_log_unchanged(tmp_path: Path) -> None:
    e = open_engine(tmp_path)
    fill(e, 0, 20)
    e.flush()
    before = read_all(e)
    with mock.patch("engines.segment_durability.write_checkpoint", side_effect=StorageFull("no space left for the checkpoint")), \
            pytest.raises(StorageFull):
        e.truncate_to(5)
    assert read_all(e) == before
    e.truncate_to(5)  # the disk has room again
    assert e.log_end_offset <= 5 and read_checkpoint(str(tmp_path)).next_offset == e.log_end_offset
    e.close()


def test_a_truncation_after_a_flush_job_whose_checkpoint_may_have_landed_flushes_first(tmp_path: Path) -> None:
    """Which checkpoint is on disk is unknown once a job that carries one is invalidated (it
    may have renamed it into place): the truncation flushes everything first, so that it knows,
    and when that flush fails the log is left as it was (and takes no more writes)."""
    e = open_engine(tmp_path)
    fill(e, 0, 20)
    job = e.flush_job(10_000)
    assert job is not None and job.checkpoint is not None
    job.run()  # the job's checkpoint (at the log end) is on disk; its completion is not applied
    assert read_checkpoint(str(tmp_path)) == job.checkpoint
    fill(e, 20, 5)
    before = read_all(e)
    with mock.patch("engines.segment_file.os.fdatasync", side_effect=OSError(errno.EIO, "I/O error")), \
            pytest.raises(StorageFailed):
        e.truncate_to(5)
    assert read_all(e) == before  # and the job's checkpoint, on disk, is true of it
    assert read_checkpoint(str(tmp_path)) == job.checkpoint
    e.close()


def test_truncation_past_a_damaged_index_entry_rebuilds_the_index(tmp_path: Path) -> None:
    """fill, close, damage one index entry of the segment (one byte late, still increasing),
    reopen, truncate_to the offset of the entry after it: the cut leaves the damaged entry last,
    and reading the new tail from it raised IndexDamaged (an internal exception, not an
    EngineError: out of the broker's handlers) instead of rebuilding the index as reads do."""
    e = open_engine(tmp_path)
    fill(e, 0, 20)
    e.close()
    index = sorted(tmp_path.glob("*.index"))[-1]
    raw = bytearray(index.read_bytes())
    assert len(raw) >= 24
    relative, position = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
    raw[4:8] = (int.from_bytes(raw[4:8], "big") + 1).to_bytes(4, "big")  # entry 0 one byte late
    index.write_bytes(bytes(raw))
    e2 = open_engine(tmp_path)
    before = read_all(e2)
    e2.truncate_to(relative)  # the batch entry 1 names: cut exactly at its position
    assert e2.log_end_offset == relative and e2._active.size_bytes == position
    assert read_all(e2) == [b for b in before if b[0].base_offset < relative]
    e2.close()


def crash_and_compare(e: SegmentEngine, directory: Path) -> SegmentEngine:
    """A second engine on ``e``'s files (a crash): the same range and byte-identical batches."""
    expected, bounds = read_all(e), (e.log_start_offset, e.log_end_offset)
    e2 = open_engine(directory)
    assert (e2.log_start_offset, e2.log_end_offset) == bounds
    assert read_all(e2) == expected
    return e2


def test_truncation_below_the_trusted_position_then_regrowth_past_it(tmp_path: Path) -> None:
    """checkpoint at X (interval flush), truncate_to inside the same segment below X, appends of
    other sizes re-grow it past X, interval flushes not due for the checkpoint, crash: the
    checkpoint truncate_to wrote (at the cut) is the one on disk, never X over rewritten bytes."""
    e = open_engine(tmp_path)
    fill(e, 0, 20)
    t = 100_000
    assert e.maybe_flush(t)
    high = read_checkpoint(str(tmp_path))
    e.truncate_to(7)
    low = read_checkpoint(str(tmp_path))
    assert low.segment_base_offset == high.segment_base_offset and low.position < high.position
    i = 50
    while e._active.size_bytes <= high.position + 1000:
        fill(e, i, 1, payload_bytes=333)
        i += 1
    assert e.segment_count == 1
    assert e.maybe_flush(t + INTERVAL_MS)
    assert read_checkpoint(str(tmp_path)) == low
    crash_and_compare(e, tmp_path).close()


def test_a_roll_then_retention_of_every_older_segment_behind_a_stale_checkpoint(tmp_path: Path) -> None:
    """checkpoint in segment 0, rolls, interval flushes not due, retention deletes every segment
    but the active one (the checkpoint's among them): a new checkpoint at once; crash."""
    e = open_engine(tmp_path)
    fill(e, 0, 5)
    t = 100_000
    e.maybe_flush(t)
    fill(e, 5, 100)
    e.maybe_flush(t + INTERVAL_MS)
    assert read_checkpoint(str(tmp_path)).segment_base_offset == 0
    e.delete_before(e.log_end_offset)
    assert e.segment_count == 1
    assert read_checkpoint(str(tmp_path)).segment_base_offset == e._active.base_offset
    fill(e, 105, 3)
    e.maybe_flush(t + 2 * INTERVAL_MS)
    crash_and_compare(e, tmp_path).close()


def test_reset_then_rolls_behind_a_stale_checkpoint(tmp_path: Path) -> None:
    """interval checkpoint, reset_to above the end (checkpoint names the new empty segment at
    position 0), appends across rolls, interval flushes not due, crash: a full scan from the
    reset offset finds every record and nothing of the old log."""
    e = open_engine(tmp_path)
    fill(e, 0, 30)
    t = 100_000
    e.maybe_flush(t)
    e.reset_to(5_000)
    fill(e, 0, 80)
    assert e.segment_count > 2
    e.maybe_flush(t + INTERVAL_MS)
    assert read_checkpoint(str(tmp_path)).segment_base_offset == 5_000
    e2 = crash_and_compare(e, tmp_path)
    assert e2.log_start_offset == 5_000
    e2.close()


class SimulatedCrash(BaseException):
    """Raised by a mock where the process dies: nothing after it runs, no handler sees it."""


def test_a_rolling_append_cut_back_under_fsync_always_leaves_no_checkpoint_over_its_batches(tmp_path: Path) -> None:
    """fsync always: append_many writes batches into the active segment, rolls (the roll
    flushes and moves the checkpoint), and the disk is full at the new segment: the call cuts
    its batches again (StorageFull, an operating error: the log goes on). The checkpoint must
    not vouch for the cut bytes: later appends write other batches there, and recovery trusts
    the bytes before the checkpoint's last index entry without validating them, so a power
    failure before those appends' fdatasync (old and new pages mixed) would serve damage."""
    e = open_engine(tmp_path, fsync="always")
    fill(e, 0, 20)
    active, end = e._active, e.log_end_offset
    size = active.size_bytes
    fail_first_write_of_a_new_segment(e, [make_batch(i, record_count=1, payload_bytes=500) for i in range(20)])
    assert e._active is active and (e.log_end_offset, active.size_bytes) == (end, size)
    point = read_checkpoint(str(tmp_path))
    assert point is not None
    assert (point.segment_base_offset, point.position) <= (active.base_offset, size), (point, size)
    assert point.next_offset <= end
    fill(e, 100, 3)
    e.close()
    e2 = open_engine(tmp_path, fsync="always")
    assert e2.log_end_offset == e.log_end_offset
    e2.close()


def test_recovery_names_the_checkpoint_on_disk_and_none_where_there_is_none(tmp_path: Path) -> None:
    """``recover`` says which segment the checkpoint on disk names: a clean close's; -1 for a
    new log, a log without checkpoint (even one that scans clean: one empty segment), and a
    dirty open (its opener rewrites the checkpoint)."""
    config = EngineConfig(fsync="interval", segment_bytes_max=SEGMENT_BYTES, index_interval_bytes=512)
    (tmp_path / "new").mkdir()
    found = recover(str(tmp_path / "new"), config)
    assert not found.needs_flush and found.checkpoint_base == -1

    e = open_engine(tmp_path / "log")
    fill(e, 0, 60)  # several segments
    e.close()
    found = recover(str(tmp_path / "log"), config)
    assert not found.needs_flush and found.checkpoint_base == read_checkpoint(str(tmp_path / "log")).segment_base_offset
    assert found.checkpoint_base == found.segments[-1].base_offset > 0

    empty = tmp_path / "empty"
    open_engine(empty).close()
    (empty / CHECKPOINT_FILE).unlink()
    found = recover(str(empty), config)
    assert not found.needs_flush and len(found.segments) == 1 and found.checkpoint_base == -1

    crashed = open_engine(tmp_path / "crashed")
    fill(crashed, 0, 30)  # not closed: a crash
    found = recover(str(tmp_path / "crashed"), config)
    assert found.needs_flush and found.checkpoint_base == -1
