"""A new segment log opens without an fsync, and its first segment's creation becomes durable
with the first data made durable in it.

Creating a 1,000-partition topic opened 1,000 new logs per broker, each flushed at once: four
fsyncs (index, segment, directory, recovery checkpoint) for a log with nothing in it, ~10 s of
a broker's reactor on this machine's disk. Nothing in a new log can be lost, so the flush waits
for data; but a record acknowledged as synced must not vanish with its file's name after a
power loss, so the flush (fsync ``interval``) or the append (fsync ``always``) that first makes
data durable fsyncs the directory too (engines/segment_durability.py, ``_sync_appended``)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engines.api import EngineConfig
from engines.conformance import make_batch, read_all
from engines.segment import SegmentEngine
from tests.unit.builders_segment import INTERVAL_MS, T0, SyncRecorder


def open_engine(directory: Path, fsync: str) -> SegmentEngine:
    return SegmentEngine(str(directory), EngineConfig(fsync=fsync, fsync_interval_ms=INTERVAL_MS))


def inode(path: Path) -> int:
    return os.stat(path).st_ino


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_a_new_log_opens_and_idles_without_an_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    fsync: str) -> None:
    recorder = SyncRecorder(monkeypatch)
    engine = open_engine(tmp_path / "log", fsync)
    assert engine.log_end_offset == 0 and engine.recovery.message == "new log"
    assert not engine.maybe_flush(T0) and not engine.maybe_flush(T0 + 10 * INTERVAL_MS)
    assert recorder.synced == []
    engine.close()  # a clean close still writes its checkpoint, durably
    assert recorder.synced


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_the_first_durable_write_makes_the_new_segment_files_name_durable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsync: str) -> None:
    directory = tmp_path / "log"
    recorder = SyncRecorder(monkeypatch)
    engine = open_engine(directory, fsync)
    engine.append(make_batch(0, record_count=3))
    if fsync == "interval":
        assert engine.maybe_flush(T0)
    segment = next(directory.glob("*.log"))
    synced = [ino for _, ino, _ in recorder.synced]
    assert inode(segment) in synced, "the record itself was not synced"
    assert inode(directory) in synced, "the segment file's creation is not durable: a power loss could take it"
    # and only once: the next durable write syncs the data alone
    recorder.synced.clear()
    engine.append(make_batch(3, record_count=1))
    if fsync == "interval":
        assert engine.maybe_flush(T0 + INTERVAL_MS)
    assert [ino for _, ino, _ in recorder.synced if ino == inode(directory)] == []
    engine.close()


def test_a_new_log_that_lost_its_file_before_any_flush_reopens_empty(tmp_path: Path) -> None:
    """A power loss before the first flush may take the new segment file (its name was never
    made durable): the directory recovers as a new log again, at the same start."""
    directory = tmp_path / "log"
    engine = open_engine(directory, "interval")
    engine.append(make_batch(0, record_count=2))  # acknowledged by replication, not yet synced
    for f in directory.iterdir():
        f.unlink()  # what the disk kept: nothing
    again = open_engine(directory, "interval")
    assert (again.log_start_offset, again.log_end_offset) == (0, 0) and read_all(again, 0) == []
    again.append(make_batch(0, record_count=2))
    assert again.log_end_offset == 2
    again.close()


def test_a_log_reopened_after_a_kill_syncs_its_directory_before_the_first_acknowledged_write(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The process that created the log was killed before any flush: the segment file's name
    may not be durable, and the reopened (empty, clean-looking) log cannot tell."""
    directory = tmp_path / "log"
    open_engine(directory, "always")  # never closed or flushed: the kill
    recorder = SyncRecorder(monkeypatch)
    again = open_engine(directory, "always")
    again.append(make_batch(0, record_count=1))  # acknowledged as synced on return
    assert inode(directory) in [ino for _, ino, _ in recorder.synced], \
        "an acknowledged record in a file whose creation was never made durable"
    again.close()
