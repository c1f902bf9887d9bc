"""A segment engine abandoned without close -- as a crash leaves it, and as the crash tests
stand for one -- gives its descriptors back when it is collected: its directory's, each
segment's log and direct-write descriptor. Nothing is flushed or cut on the way (the files are
as the crash left them; recovery on the next open sees them so). They stayed open for the
process's life: a test process that stood for many crashes held hundreds. A descriptor whose
close reported an error is released all the same, and is never closed again at collection."""

from __future__ import annotations

import gc
import os
from pathlib import Path

import pytest

from engines.api import EngineConfig, EngineError
from engines.conformance import make_batch
from engines.segment import SegmentEngine
from engines.segment_file import LogSegment
from tests.unit.fakes import close_reports_eio, descriptor_open


def _open_under(directory: Path) -> list[str]:
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue  # the listing's own descriptor, gone
        if target.startswith(str(directory)):
            found.append(target)
    return found


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("direct", [False, True])
def test_an_abandoned_engine_gives_its_descriptors_back_and_leaves_its_files_as_written(tmp_path: Path, direct: bool) -> None:
    directory = tmp_path / "log"
    engine = SegmentEngine(str(directory), EngineConfig(fsync="interval", segment_bytes_max=16 * 1024,
                                                        direct_write_min_bytes=0 if direct else -1))
    for i in range(60):  # several segments
        engine.append(make_batch(i, record_count=1, payload_bytes=500))
    assert len(list(directory.glob("*.log"))) > 1
    assert _open_under(directory)
    sizes = {p.name: p.stat().st_size for p in directory.iterdir()}
    del engine
    gc.collect()
    assert _open_under(directory) == []
    assert {p.name: p.stat().st_size for p in directory.iterdir()} == sizes  # no flush, no trim
    reopened = SegmentEngine(str(directory), EngineConfig(fsync="interval"))
    try:
        assert reopened.log_end_offset == 60
    finally:
        reopened.close()


def test_a_descriptor_whose_close_failed_is_not_closed_again_when_its_segment_is_collected(
        tmp_path: Path) -> None:
    """close(2) that reports an error (EIO: a network file system's late writeback error) has
    released the descriptor all the same on Linux, and the next open may take its number. The
    segment's collection must not close that number again: it closed the next owner's file."""
    seg = LogSegment(str(tmp_path), 0, 4096)
    fd = seg.fd
    devnull = os.open(os.devnull, os.O_RDONLY)
    with close_reports_eio(fd), pytest.raises(OSError):
        seg.close_fd()
    reused = os.dup2(devnull, fd)  # the number's next owner (the next open could take it as well)
    os.close(devnull)
    try:
        del seg
        gc.collect()
        assert descriptor_open(reused), "the segment's collection closed the file that took its descriptor's number"
    finally:
        if descriptor_open(reused):
            os.close(reused)


def test_a_close_that_fails_for_one_segment_still_closes_the_others_and_is_the_engines_error(tmp_path: Path) -> None:
    """``SegmentEngine.close``: a segment whose close(2) reports an error left the segments
    after it and the directory's descriptor open (for the process's life: the engine counted
    as closed), and the raw OSError came out of the engine; now every descriptor is closed and
    the error is the engine's (EngineError), naming the directory."""
    directory = tmp_path / "log"
    engine = SegmentEngine(str(directory), EngineConfig(fsync="interval", segment_bytes_max=16 * 1024))
    for i in range(60):
        engine.append(make_batch(i, record_count=1, payload_bytes=500))
    assert len(engine._segments) > 2
    with close_reports_eio(engine._segments[0].fd), pytest.raises(EngineError) as e:
        engine.close()
    assert str(directory) in str(e.value) and "Input/output error" in str(e.value)
    assert _open_under(directory) == []
    engine.close()  # idempotent: nothing closed twice


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_a_flush_job_never_run_gives_its_descriptors_back_when_collected(tmp_path: Path) -> None:
    """A flush job takes dups of the dirty segments' descriptors, its index files' and the
    directory's; the flusher thread closes them when it runs the job, ``discard`` for one never
    run. One that neither happens to -- its engine abandoned as a crash leaves it, before the
    thread took the job -- kept them for the process's life."""
    directory = tmp_path / "log"
    engine = SegmentEngine(str(directory), EngineConfig(fsync="interval", fsync_interval_ms=1,
                                                        segment_bytes_max=16 * 1024))
    for i in range(60):
        engine.append(make_batch(i, record_count=1, payload_bytes=500))
    job = engine.flush_job(2**62)
    assert job is not None and len(job.syncs) > 1
    del engine, job
    gc.collect()
    assert _open_under(directory) == []


def test_objects_that_own_descriptors_refuse_to_be_copied(tmp_path: Path) -> None:
    """A flush job and a log segment close their descriptors when collected: a copy would hold
    the same numbers and close them a second time -- perhaps another file's by then. Nothing in
    Loom copies them; a copy fails loudly rather than share them."""
    import copy
    directory = tmp_path / "log"
    engine = SegmentEngine(str(directory), EngineConfig(fsync="interval", fsync_interval_ms=1))
    try:
        engine.append(make_batch(0, record_count=1, payload_bytes=100))
        job = engine.flush_job(2**62)
        assert job is not None
        for owner in (job, engine._segments[0]):
            with pytest.raises(TypeError, match="descriptors"):
                copy.copy(owner)
            with pytest.raises(TypeError, match="descriptors"):
                copy.deepcopy(owner)
        job.discard()
    finally:
        engine.close()
