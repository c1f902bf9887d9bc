"""The segment engine's page-cache window (engines/segment_cache.py): durable bytes older than
the window leave the page cache right after the fsync that made them durable -- under fsync
``interval`` on the flusher thread's job, under ``always`` in steps after the append's sync,
and in every synchronous flush -- and nothing else does: not bytes that are not yet durable,
not the window, not with the window off (-1). The drops are recorded by replacing the one
``posix_fadvise`` call; one test drops for real and reads everything back."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from engines import segment_cache
from engines.api import CacheWindow, EngineConfig
from engines.conformance import make_batch, read_all
from engines.segment import SegmentEngine
from engines.segment_cache import CACHE_DROP_STEP_BYTES, cold_end
from fabric.config import ConfigError, load_config
from tests.harness import make_config
from tests.unit.builders_broker import new_broker
from tests.unit.builders_segment import SyncRecorder, run_in_thread

SEGMENT_BYTES = 64 * 1024
BATCH_PAYLOAD = 1000  # ~1 KiB batches


class Drops:
    """Every drop the engine asks for, as (path of the descriptor, end): DONTNEED from 0."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[tuple[str, int]] = []

        def fadvise(fd: int, offset: int, length: int, advice: int) -> None:
            assert offset == 0 and advice == os.POSIX_FADV_DONTNEED
            self.calls.append((os.readlink(f"/proc/self/fd/{fd}"), length))
        monkeypatch.setattr(segment_cache, "_fadvise", fadvise)

    def of(self, path: str | Path) -> list[int]:
        return [end for p, end in self.calls if p == str(path)]


def open_engine(directory: Path, window_bytes: int, fsync: str = "interval") -> SegmentEngine:
    return SegmentEngine(str(directory), EngineConfig(fsync=fsync, fsync_interval_ms=50, segment_bytes_max=SEGMENT_BYTES,
                                                      index_interval_bytes=4096, cache_window=CacheWindow(window_bytes)))


def fill_bytes(engine: SegmentEngine, nbytes: int) -> None:
    """Append ~1 KiB batches until the log has grown by at least ``nbytes``."""
    start = engine.size_bytes
    while engine.size_bytes - start < nbytes:
        engine.append(make_batch(engine.log_end_offset, record_count=1, payload_bytes=BATCH_PAYLOAD))


def test_the_rule_drops_a_rolled_segment_whole_and_the_active_one_before_its_window() -> None:
    assert cold_end(10_000, active=False, window_bytes=4096) == 10_000
    assert cold_end(10_000, active=True, window_bytes=4096) == 10_000 - 4096
    assert cold_end(3_000, active=True, window_bytes=4096) == 0
    assert cold_end(10_000, active=True, window_bytes=0) == 10_000
    assert cold_end(10_000, active=False, window_bytes=-1) == 0 and cold_end(10_000, True, -1) == 0


def test_an_interval_job_drops_what_it_made_durable_and_keeps_the_window(tmp_path: Path, monkeypatch) -> None:
    window = 16 * 1024
    e = open_engine(tmp_path, window)
    drops = Drops(monkeypatch)
    fill_bytes(e, SEGMENT_BYTES + 40 * 1024)  # one rolled segment, an active one past the window
    rolled, active = e._segments[-2], e._segments[-1]
    assert e.segment_count == 2 and active.size_bytes > window
    job = e.flush_job(10_000)
    assert job is not None and drops.calls == [], "dropped before the fsync"
    snapshot = active.size_bytes
    fill_bytes(e, 4096)  # after the job was made: not durable by it
    run_in_thread(job)
    assert e.flush_done(job)
    assert drops.of(rolled.log_path) == [rolled.size_bytes]
    assert drops.of(active.log_path) == [snapshot - window], "the window, or bytes the job did not sync, dropped"
    e.close()


def test_a_job_whose_fsync_fails_drops_nothing(tmp_path: Path, monkeypatch) -> None:
    e = open_engine(tmp_path, 0)
    fill_bytes(e, 20 * 1024)
    sync = SyncRecorder(monkeypatch)
    drops = Drops(monkeypatch)
    job = e.flush_job(10_000)
    sync.fail_with = 5  # EIO
    run_in_thread(job)
    assert drops.calls == []
    with pytest.raises(Exception):
        e.flush_done(job)


def test_a_synchronous_flush_drops_what_it_synced(tmp_path: Path, monkeypatch) -> None:
    e = open_engine(tmp_path, 8 * 1024)
    drops = Drops(monkeypatch)
    fill_bytes(e, 30 * 1024)
    e.flush()
    active = e._segments[-1]
    assert drops.of(active.log_path) == [active.size_bytes - 8 * 1024]
    drops.calls.clear()
    e.flush()  # nothing dirty: nothing synced, nothing dropped
    assert drops.calls == []
    e.close()


def test_under_fsync_always_the_active_segment_drops_in_steps_and_a_rolled_one_whole(tmp_path: Path,
                                                                                      monkeypatch) -> None:
    window = 8 * 1024
    e = SegmentEngine(str(tmp_path), EngineConfig(fsync="always", segment_bytes_max=4 * CACHE_DROP_STEP_BYTES,
                                                  cache_window=CacheWindow(window)))
    drops = Drops(monkeypatch)
    fill_bytes(e, window + CACHE_DROP_STEP_BYTES // 2)
    assert drops.calls == [], "dropped less than a step"
    fill_bytes(e, CACHE_DROP_STEP_BYTES)
    first = e._segments[0]
    ends = drops.of(first.log_path)
    assert len(ends) == 1 and CACHE_DROP_STEP_BYTES <= ends[0] <= first.size_bytes - window
    fill_bytes(e, 4 * CACHE_DROP_STEP_BYTES)  # rolls
    assert e.segment_count == 2
    assert drops.of(first.log_path)[-1] == first.size_bytes, "the rolled segment kept pages in the cache"
    assert len(drops.of(first.log_path)) <= 6, "dropped per append, not in steps"
    e.close()


def test_with_the_window_off_nothing_is_dropped(tmp_path: Path, monkeypatch) -> None:
    drops = Drops(monkeypatch)
    for fsync in ("interval", "always"):
        e = open_engine(tmp_path / fsync, -1, fsync)
        fill_bytes(e, SEGMENT_BYTES + 10 * 1024)
        job = e.flush_job(10_000)
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
        segment_cache.drop_cached(seg.fd, seg.size_bytes)  # not yet fsynced
    e.flush()  # drops everything it synced
    assert read_all(e) == before
    e.close()
    reopened = open_engine(tmp_path, 0)
    assert read_all(reopened) == before
    reopened.close()


def test_a_broker_divides_its_page_cache_among_its_partitions(tmp_path: Path) -> None:
    b = new_broker(tmp_path)
    try:
        budget = b.core.storage.page_cache_tail_bytes
        assert budget == 256 * 1024 * 1024  # the default
        for p in range(4):
            b.core.open_partition("t", p, {})
        assert b.core.cache_window.window_bytes == budget // 4
        assert all(part.engine.config.cache_window is b.core.cache_window for part in b.partitions.values())
        b.core.retire_partition(("t", 3), ())
        assert b.core.cache_window.window_bytes == budget // 3
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
