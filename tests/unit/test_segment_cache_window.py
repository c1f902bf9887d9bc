"""The segment engine's page-cache window (engines/segment_cache.py): durable bytes older than
the window leave the page cache right after the fsync that made them durable -- under fsync
``interval`` on the flusher thread's job, under ``always`` in steps after the append's sync,
and in every synchronous flush -- and nothing else does: not bytes that are not yet durable,
not the window, not with the window off (-1). The drops are recorded by replacing the one
``posix_fadvise`` call; one test drops for real and reads everything back."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest
import yaml

from engines import segment_cache
from engines.api import CacheWindow, EngineConfig
from engines.batch import iter_batches
from engines.conformance import make_batch, read_all
from engines.segment import SegmentEngine
from engines.segment_cache import FOLIO_BYTES_MAX, PAGE_BYTES, cold_drops, drop_step
from fabric.config import ConfigError, load_config
from fabric.clock import ManualClock
from nodes.broker.core_timers import CACHE_ACTIVE_MS
from tests.harness import make_config
from tests.unit.builders_broker import new_broker
from tests.unit.builders_segment import SyncRecorder, cached, run_in_thread

SEGMENT_BYTES = 64 * 1024
BATCH_PAYLOAD = 1000  # ~1 KiB batches


class Drops:
    """Every drop the engine asks for, as (path of the descriptor, start, end); ``threads``
    names the thread of each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int, int]] = []
        self.threads: list[str] = []

        def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
            assert advice == os.POSIX_FADV_DONTNEED
            self.calls.append((os.readlink(f"/proc/self/fd/{fd}"), offset, offset + length))
            self.threads.append(threading.current_thread().name)
        monkeypatch.setattr(segment_cache, "_fadvise", fadvise)

    def of(self, path: str | Path) -> list[tuple[int, int]]:
        return [(a, b) for p, a, b in self.calls if p == str(path)]

    def end_of(self, path: str | Path) -> int:
        """How far ``path`` has been dropped (0: never)."""
        return max((b for _, b in self.of(path)), default=0)


def open_engine(directory: Path, window_bytes: int, fsync: str = "interval") -> SegmentEngine:
    return SegmentEngine(str(directory), EngineConfig(fsync=fsync, fsync_interval_ms=50, segment_bytes_max=SEGMENT_BYTES,
                                                      index_interval_bytes=4096, cache_window=CacheWindow(window_bytes)))


def fill_bytes(engine: SegmentEngine, nbytes: int) -> None:
    """Append ~1 KiB batches until the log has grown by at least ``nbytes``."""
    start = engine.size_bytes
    while engine.size_bytes - start < nbytes:
        engine.append(make_batch(engine.log_end_offset, record_count=1, payload_bytes=BATCH_PAYLOAD))


CLOCK = itertools.count(10_000, 1_000)  # each job's "now": an interval after the one before


def run_job(e: SegmentEngine) -> None:
    job = e.flush_job(next(CLOCK))
    assert job is not None
    run_in_thread(job)
    assert e.flush_done(job)


def page_floor(n: int) -> int:
    return n - n % PAGE_BYTES


class Seg:
    def __init__(self, size: int, dropped: int = 0) -> None:
        self.size_bytes, self.cache_dropped_to = size, dropped


def test_the_window_is_measured_across_segments_and_the_active_tail_page_stays() -> None:
    old, rolled, active = Seg(100_000, dropped=100_000), Seg(50_000), Seg(10_000)
    # 16 KiB kept: the active segment's 10,000 bytes and the rolled one's last 6,384
    assert cold_drops([old, rolled, active], 16_384) == [(rolled, 0, 50_000 - 6_384)]
    # no window: the active segment up to its last (partly written) page, the rolled one whole
    assert cold_drops([old, rolled, active], 0) == [(active, 0, page_floor(10_000)), (rolled, 0, 50_000)]
    rolled.cache_dropped_to = FOLIO_BYTES_MAX + 40_000
    rolled.size_bytes = FOLIO_BYTES_MAX + 50_000
    assert cold_drops([old, rolled, active], 1_000) == [(active, 0, page_floor(9_000)),
                                                       (rolled, FOLIO_BYTES_MAX, FOLIO_BYTES_MAX + 50_000)]
    assert cold_drops([old, rolled, active], -1) == []
    # a wholly cold segment dropped before ends the walk: older ones are not looked at
    done, last = Seg(100, dropped=100), Seg(PAGE_BYTES * 3)
    assert cold_drops([Seg(10, dropped=0), done, last], 0) == [(last, 0, PAGE_BYTES * 3)]


def test_the_step_under_fsync_always_shrinks_with_the_window() -> None:
    assert drop_step(256 * 1024 * 1024) == 1024 * 1024
    assert drop_step(512 * 1024) == 256 * 1024
    assert drop_step(0) == drop_step(10) == 64 * 1024


def test_an_interval_job_drops_what_it_made_durable_and_keeps_the_window(tmp_path: Path, monkeypatch) -> None:
    window = 16 * 1024
    e = open_engine(tmp_path, window)
    drops = Drops(monkeypatch)
    fill_bytes(e, SEGMENT_BYTES + 40 * 1024)  # one rolled segment, an active one past the window
    rolled, active = e._segments[-2], e._segments[-1]
    assert e.segment_count == 2 and active.size_bytes > window
    job = e.flush_job(next(CLOCK))
    assert job is not None and drops.calls == [], "dropped before the fsync"
    snapshot = active.size_bytes
    fill_bytes(e, 4096)  # after the job was made: not durable by it
    run_in_thread(job)
    assert e.flush_done(job)
    assert drops.of(rolled.log_path) == [(0, rolled.size_bytes)]
    assert drops.of(active.log_path) == [(0, page_floor(snapshot - window))], \
        "the window, or bytes the job did not sync, dropped"
    assert (rolled.cache_dropped_to, active.cache_dropped_to) == (rolled.size_bytes, page_floor(snapshot - window))
    drops.calls.clear()
    run_job(e)  # only what became cold since
    assert drops.of(rolled.log_path) == []
    assert drops.of(active.log_path) == [(0, page_floor(active.size_bytes - window))]  # from its last 2 MiB boundary
    e.close()


def test_a_segment_rolled_inside_the_window_is_dropped_as_the_log_grows_past_it(tmp_path: Path, monkeypatch) -> None:
    """A clean segment (synced before it rolled) is in no later job's syncs: its tail must
    still leave the cache once the window has moved past it."""
    window = 16 * 1024
    e = open_engine(tmp_path, window)
    drops = Drops(monkeypatch)
    batch_bytes = len(make_batch(0, record_count=1, payload_bytes=BATCH_PAYLOAD))
    while e.size_bytes + batch_bytes <= SEGMENT_BYTES:  # until the next batch rolls
        fill_bytes(e, 1)
    run_job(e)
    first = e._segments[0]
    assert e.segment_count == 1 and 0 < first.cache_dropped_to < first.size_bytes
    fill_bytes(e, 12 * 1024)  # rolls: the first segment is clean, its tail inside the window
    assert e.segment_count == 2 and not first.dirty
    run_job(e)
    assert first.cache_dropped_to < first.size_bytes, "the window moved before the log grew past it"
    fill_bytes(e, 2 * window)
    job = e.flush_job(next(CLOCK))
    owned = [d.fd for d in job.drops if d.owned]
    assert owned, "the clean segment's drop has no descriptor of its own"
    run_in_thread(job)
    assert e.flush_done(job)
    assert drops.end_of(first.log_path) == first.size_bytes == first.cache_dropped_to
    for fd in owned:  # the job closed its own descriptors
        with pytest.raises(OSError):
            os.fstat(fd)
    e.close()


def test_a_job_invalidated_before_it_runs_drops_nothing(tmp_path: Path, monkeypatch) -> None:
    """A truncation (or a flush on the owner's thread, which may have been told of a writeback
    error this job's fsync will not be) invalidates the job: its drops must not follow."""
    e = open_engine(tmp_path, 0)
    fill_bytes(e, 30 * 1024)
    drops = Drops(monkeypatch)
    job = e.flush_job(next(CLOCK))
    assert job is not None and job.drops
    e.truncate_to(e.log_end_offset - 5)
    run_in_thread(job)
    assert "job" not in drops.threads, "a job dropped after the owner had invalidated it"
    assert not e.flush_done(job)
    e.close()


def test_a_job_whose_fsync_fails_drops_nothing(tmp_path: Path, monkeypatch) -> None:
    e = open_engine(tmp_path, 0)
    fill_bytes(e, 20 * 1024)
    sync = SyncRecorder(monkeypatch)
    drops = Drops(monkeypatch)
    job = e.flush_job(next(CLOCK))
    sync.fail_with = 5  # EIO
    run_in_thread(job)
    assert drops.calls == []
    with pytest.raises(Exception):
        e.flush_done(job)


def test_a_synchronous_flush_drops_what_is_cold(tmp_path: Path, monkeypatch) -> None:
    e = open_engine(tmp_path, 8 * 1024)
    drops = Drops(monkeypatch)
    fill_bytes(e, 30 * 1024)
    e.flush()
    active = e._segments[-1]
    assert drops.of(active.log_path) == [(0, page_floor(active.size_bytes - 8 * 1024))]
    drops.calls.clear()
    e.flush()  # nothing became cold since
    assert drops.calls == []
    e.close()


def test_under_fsync_always_drops_come_in_steps_and_a_roll_drops_no_more(tmp_path: Path, monkeypatch) -> None:
    window = 256 * 1024
    step = drop_step(window)
    e = SegmentEngine(str(tmp_path), EngineConfig(fsync="always", segment_bytes_max=2 * 1024 * 1024,
                                                  cache_window=CacheWindow(window)))
    drops = Drops(monkeypatch)
    fill_bytes(e, window + step // 2)
    assert drops.calls == [], "dropped before a step past the window"
    fill_bytes(e, 5 * 1024 * 1024)  # rolls twice
    assert e.segment_count >= 3
    assert drops.calls and max(b - a for _, a, b in drops.calls) <= FOLIO_BYTES_MAX + step + 2 * PAGE_BYTES, \
        "a drop much larger than a step on the appending thread (a roll dropped a whole segment)"
    for path in {p for p, _, _ in drops.calls}:
        ends = [b for _, b in drops.of(path)]
        assert max(b - a for a, b in zip([0] + ends, ends)) <= step + BATCH_PAYLOAD + 2 * PAGE_BYTES, \
            f"{path}: more than a step newly dropped at once"
    assert len(drops.calls) <= 3 * (e.size_bytes // step), "dropped per append, not per step"
    for seg in e._segments[:-2]:
        assert drops.end_of(seg.log_path) == seg.size_bytes
    e.close()


def test_a_cut_segment_drops_again_as_it_grows_back(tmp_path: Path, monkeypatch) -> None:
    window = 64 * 1024
    e = SegmentEngine(str(tmp_path), EngineConfig(fsync="always", segment_bytes_max=64 * 1024 * 1024,
                                                  cache_window=CacheWindow(window)))
    drops = Drops(monkeypatch)
    fill_bytes(e, 3 * 1024 * 1024)
    e.truncate_to(e.log_end_offset // 4)
    active = e._segments[-1]
    assert active.cache_dropped_to <= active.size_bytes
    drops.calls.clear()
    fill_bytes(e, 2 * 1024 * 1024)
    assert drops.end_of(active.log_path) >= active.size_bytes - window - drop_step(window) - PAGE_BYTES
    e.close()


def test_with_the_window_off_nothing_is_dropped(tmp_path: Path, monkeypatch) -> None:
    drops = Drops(monkeypatch)
    for fsync in ("interval", "always"):
        e = open_engine(tmp_path / fsync, -1, fsync)
        fill_bytes(e, SEGMENT_BYTES + 10 * 1024)
        job = e.flush_job(next(CLOCK))
        if job is not None:
            run_in_thread(job)
            e.flush_done(job)
        e.flush()
        e.close()
    assert drops.calls == []


def test_dropped_pages_read_back_from_disk_and_unsynced_ones_are_kept(tmp_path: Path) -> None:
    """Real posix_fadvise: everything reads back the same after drops of durable bytes, and a
    drop over bytes not yet synced (which DONTNEED never discards) loses nothing either."""
    e = open_engine(tmp_path, 0)
    fill_bytes(e, 3 * SEGMENT_BYTES)
    before = read_all(e)
    for seg in e._segments:
        segment_cache.drop_cached(seg.fd, 0, seg.size_bytes)  # not yet fsynced
    e.flush()  # drops everything it synced
    assert read_all(e) == before
    e.close()
    reopened = open_engine(tmp_path, 0)
    assert read_all(reopened) == before
    reopened.close()


def test_a_broker_divides_its_page_cache_among_the_partitions_written_to_lately(tmp_path: Path) -> None:
    b = new_broker(tmp_path)
    clock = ManualClock(start_ms=1_000_000)
    b.core.clock = clock
    try:
        budget = b.core.storage.page_cache_tail_bytes
        assert budget == 256 * 1024 * 1024  # the default
        for p in range(4):
            b.core.open_partition("t", p, {})
        assert all(part.engine.config.cache_window is b.core.cache_window for part in b.partitions.values())
        b.core.share_page_cache()
        assert b.core.cache_window.window_bytes == budget, "partitions nobody wrote to took shares"
        for p in (0, 1):
            part = b.partitions[("t", p)]
            part.engine.append(make_batch(part.log_end_offset, record_count=1, payload_bytes=100))
        clock.advance(1_000)
        b.core.share_page_cache()
        assert b.core.cache_window.window_bytes == budget // 2
        clock.advance(CACHE_ACTIVE_MS - 500)  # 500 ms short of a minute since the write was seen
        b.core.share_page_cache()
        assert b.core.cache_window.window_bytes == budget // 2, "a partition written to lately lost its share"
        clock.advance(500)
        b.core.share_page_cache()
        assert b.core.cache_window.window_bytes == budget, "idle for a minute and still sharing"
        part = b.partitions[("t", 3)]
        part.engine.append(make_batch(part.log_end_offset, record_count=1, payload_bytes=100))
        b.core.retire_partition(("t", 0), ())
        b.core.share_page_cache()
        assert b.core.cache_window.window_bytes == budget and ("t", 0) not in b.core._log_ends
    finally:
        b.close()


def test_the_budget_is_configured_per_cluster_and_per_broker(tmp_path: Path) -> None:
    path = make_config(tmp_path, brokers=2, overrides={"storage": {"page_cache_tail_bytes": -1}})
    doc = yaml.safe_load(path.read_text())
    doc["nodes"]["broker-2"]["storage"] = {"page_cache_tail_bytes": 1 << 20}
    path.write_text(yaml.safe_dump(doc))
    config = load_config(path, environ={})
    assert config.storage_for("broker-1").page_cache_tail_bytes == -1
    assert config.storage_for("broker-2").page_cache_tail_bytes == 1 << 20
    doc["storage"]["page_cache_tail_bytes"] = -2
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="page_cache_tail_bytes"):
        load_config(path, environ={})


def disk_read_bytes() -> int:
    """Bytes this process has read from the block layer (/proc/self/io)."""
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("read_bytes:"))


@pytest.mark.parametrize("fsync", ["always", "interval"])
def test_with_no_window_an_append_after_a_drop_reads_nothing_from_disk(tmp_path: Path, fsync: str) -> None:
    """Real posix_fadvise, window 0: the active segment's last page, partly written, is where
    the next append writes; had it been dropped, that append (on the reactor) would read it
    back from disk first."""
    if not os.path.exists("/proc/self/io"):
        pytest.skip("no /proc/self/io")
    e = open_engine(tmp_path, 0, fsync)
    reads = []
    for _ in range(4):
        fill_bytes(e, 300 * 1024)  # under always: several drop steps
        if fsync == "interval":
            run_job(e)
        else:
            e.flush()
        before = disk_read_bytes()
        e.append(make_batch(e.log_end_offset, record_count=1, payload_bytes=BATCH_PAYLOAD))
        reads.append(disk_read_bytes() - before)
    e.close()
    assert reads == [0, 0, 0, 0], f"appends after drops read {reads} bytes from disk"


def test_a_log_keeps_about_its_window_in_the_page_cache(tmp_path: Path) -> None:
    """Real posix_fadvise, measured with util-linux ``fincore``: a log of a 1,000-partition
    broker's share keeps at most ~2 windows cached, large folios included (a drop that ended
    inside a folio drops it next time)."""
    if shutil.which("fincore") is None:
        pytest.skip("util-linux fincore is not installed")
    window = (256 << 20) // 1000
    e = SegmentEngine(str(tmp_path), EngineConfig(fsync="always", segment_bytes_max=64 << 20,
                                                  cache_window=CacheWindow(window)))
    worst = 0
    while e.size_bytes < 3 << 20:
        e.append(make_batch(e.log_end_offset, record_count=1, payload_bytes=60_000))
        out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "-o", "RES", e._segments[-1].log_path],
                             check=True, capture_output=True, text=True, timeout=30).stdout.strip()
        worst = max(worst, int(out or 0))
    e.close()
    assert worst <= 2 * window, f"a log held {worst} bytes in the page cache, its window is {window}"


def test_a_read_before_the_window_drops_what_it_read_a_window_ago_and_one_inside_keeps_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drops = Drops(monkeypatch)
    window = 8 * 1024
    e = open_engine(tmp_path, window_bytes=window)
    for i in range(200):  # ~200 KiB over four segments
        e.append(make_batch(i, payload_bytes=BATCH_PAYLOAD))
    e.flush()
    first = e._segments[0]
    drops.calls.clear()
    data = e.read(0, 16 * 1024)
    cut = len(data) - window
    assert drops.of(first.log_path) == [(0, cut - cut % PAGE_BYTES)]
    drops.calls.clear()
    e.read(e._active.next_offset - 3, 16 * 1024)  # the last batch: inside the window
    assert drops.calls == []
    e.close()


def test_a_read_of_a_segment_not_yet_synced_drops_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The drops of bytes not yet durable are the flusher's, after its fsync."""
    drops = Drops(monkeypatch)
    e = open_engine(tmp_path, window_bytes=8 * 1024)
    for i in range(40):  # one segment, not flushed
        e.append(make_batch(i, payload_bytes=BATCH_PAYLOAD))
    assert e._active.dirty
    e.read(0, 32 * 1024)
    assert drops.calls == []
    e.close()


def test_with_the_window_off_reads_drop_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    drops = Drops(monkeypatch)
    e = open_engine(tmp_path, window_bytes=-1)
    for i in range(200):
        e.append(make_batch(i, payload_bytes=BATCH_PAYLOAD))
    e.flush()
    drops.calls.clear()
    e.read(0, 16 * 1024)
    assert drops.calls == []
    e.close()


def test_a_cold_reader_leaves_cached_what_a_reader_a_window_behind_it_needs(tmp_path: Path) -> None:
    """For real: a reader catching up drops what it read more than a window ago, so another
    reader (a second consumer group) up to a window behind still finds its pages cached."""
    window = 64 * 1024
    e = open_engine(tmp_path, window_bytes=window)
    for i in range(400):  # ~400 KiB over seven segments
        e.append(make_batch(i, payload_bytes=BATCH_PAYLOAD))
    e.flush()  # durable: the window drops everything before it
    first = Path(e._segments[0].log_path)
    assert not cached(first, 4 * 1024)
    offset = 0
    for _ in range(4):  # reader A: 4 reads of ~8 KiB
        data = e.read(offset, 8 * 1024)
        offset += sum(1 for _ in iter_batches(data)) * 3
    assert cached(first, 4 * 1024), "reader B, ~32 KiB behind A, reads the disk"
    while offset < e._segments[1].next_offset:  # A reads on, into the next segment: a window past byte 4 KiB
        data = e.read(offset, 8 * 1024)
        offset += sum(1 for _ in iter_batches(data)) * 3
    assert not cached(first, 4 * 1024), "what A read more than a window ago stayed cached"
    last = Path(e._active.log_path)
    e.read(e._active.next_offset - 3, 16 * 1024)
    assert cached(last, e._active.size_bytes - 100)
    e.close()
