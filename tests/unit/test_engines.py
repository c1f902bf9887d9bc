"""Engine tests: the conformance suite over every built-in engine, plus engine-specific
recovery, index, LMDB map and registry tests."""

from __future__ import annotations

import contextlib
import errno
import glob
import os
from typing import Iterator
from unittest import mock

import lmdb
import pytest

from engines import registry
from engines.api import CacheWindow, EngineConfig, EngineError, StorageFull
from engines.batch import iter_batches
from engines.conformance import EngineConformance, make_batch, read_all
from engines.lmdb_engine import LmdbEngine
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine


def _flip_byte(path: str, from_end_bytes: int) -> None:
    with open(path, "r+b") as f:
        f.seek(-from_end_bytes, os.SEEK_END)
        b = f.read(1)
        f.seek(-from_end_bytes, os.SEEK_END)
        f.write(bytes([b[0] ^ 0xFF]))


class TestMemoryEngine(EngineConformance):
    engine_class = MemoryEngine
    persistent = False


class TestSegmentEngine(EngineConformance):
    engine_class = SegmentEngine
    segments = True

    def corrupt_last_batch(self, directory: str) -> None:
        _flip_byte(sorted(glob.glob(os.path.join(directory, "*.log")))[-1], 5)

    @contextlib.contextmanager
    def disk_full(self, engine: SegmentEngine) -> Iterator[None]:
        def no_space(*args: object) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        with mock.patch("engines.segment_file.os.pwritev", no_space):
            yield

    # -- segment-specific ----------------------------------------------------------------------
    def test_clean_reopen_scans_only_the_tail(self) -> None:
        e = self.open_engine()
        self.fill(e, 300, payload_bytes=500)
        e.close()
        e2 = self.open_engine()
        assert e2.recovery.batches_scanned <= 3, e2.recovery
        assert e2.recovery.rebuilt_indexes == 0

    def test_crash_recovery_scans_only_unflushed_tail(self) -> None:
        e = self.open_engine()
        self.fill(e, 200, payload_bytes=500)
        e.flush()
        self.fill(e, 10, payload_bytes=500)  # not flushed; no close (simulated crash)
        expected = read_all(e)
        e2 = self.open_engine()  # a second owner reading the files as a crash leaves them
        assert 10 <= e2.recovery.batches_scanned <= 15, e2.recovery
        assert read_all(e2) == expected

    def test_torn_tail_is_cut(self) -> None:
        e = self.open_engine()
        self.fill(e, 20, payload_bytes=300)
        batches = read_all(e)
        e.close()
        last_log = sorted(glob.glob(os.path.join(self.directory, "*.log")))[-1]
        with open(last_log, "ab") as f:
            f.write(make_batch(99)[:40])  # half a header: a torn write
        e2 = self.open_engine()
        assert e2.recovery.truncated_bytes == 40 and read_all(e2) == batches

    def test_missing_and_damaged_indexes_rebuilt(self) -> None:
        e = self.open_engine()
        self.fill(e, 200, payload_bytes=500)
        batches = read_all(e)
        e.close()
        indexes = sorted(glob.glob(os.path.join(self.directory, "*.index")))
        assert len(indexes) > 3
        os.unlink(indexes[0])
        with open(indexes[1], "r+b") as f:
            f.write(b"\xff" * 8)  # a wild entry
        with open(indexes[-1], "ab") as f:
            f.write(b"\x01\x02\x03")  # wrong size
        e2 = self.open_engine()
        assert read_all(e2) == batches
        for offset in range(0, e2.log_end_offset, 7):
            h = next(iter(iter_batches(e2.read(offset, 1))))[0]
            assert h.base_offset <= offset < h.next_offset

    def test_full_scan_without_checkpoint(self) -> None:
        e = self.open_engine()
        self.fill(e, 100, payload_bytes=500)
        batches = read_all(e)
        e.close()
        os.unlink(os.path.join(self.directory, "recovery.checkpoint"))
        e2 = self.open_engine()
        assert e2.recovery.batches_scanned == 100 and read_all(e2) == batches

    def test_roll_by_time(self) -> None:
        e = self.open_engine(segment_ms_max=10_000, segment_bytes_max=1 << 20)
        for i in range(30):
            e.append(make_batch(i, timestamp_ms=i * 1000))
        assert e.segment_count == 3

    def test_segment_files_named_by_base_offset(self) -> None:
        e = self.open_engine()
        self.fill(e, 100, payload_bytes=500)
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.directory, "*.log")))
        assert names[0] == f"{0:020d}.log" and len(names) == e.segment_count


    # -- reset_to: files and crashes part-way ---------------------------------------------------
    def test_reset_leaves_one_segment_named_by_offset(self) -> None:
        e = self.open_engine()
        self.fill(e, 100, payload_bytes=500)
        assert e.segment_count > 3
        for offset in (0, 12345):  # 0: the new segment has the name of an old one
            e.reset_to(offset)
            names = set(os.listdir(self.directory)) - {f"{offset:020d}.index"}
            assert names == {f"{offset:020d}.log", "recovery.checkpoint"}
        self.fill(e, 100, payload_bytes=500)
        names = sorted(os.path.basename(p) for p in glob.glob(os.path.join(self.directory, "*.log")))
        assert names[0] == f"{12345:020d}.log" and len(names) == e.segment_count > 3

    def test_reset_without_close_is_what_a_crash_leaves(self) -> None:
        e = self.open_engine()
        self.fill(e, 100, payload_bytes=500)
        e.reset_to(777)
        self.fill(e, 5, payload_bytes=500)
        e.flush()
        expected = read_all(e)
        e2 = self.open_engine()  # a second owner reading the files as a crash leaves them
        assert (e2.log_start_offset, e2.log_end_offset) == (777, e.log_end_offset)
        assert read_all(e2) == expected

    @pytest.mark.parametrize("deleted", [0, 2])
    def test_crash_while_deleting_old_segments_leaves_a_prefix(self, deleted: int) -> None:
        e = self.open_engine()
        self.fill(e, 100, payload_bytes=500)
        e.flush()
        before = read_all(e)
        real_delete, calls = SegmentEngine._delete_segment, []

        def crash_after_some(engine: SegmentEngine, seg: object) -> None:
            if len(calls) == deleted:
                raise EngineError("simulated crash")
            calls.append(seg)
            real_delete(engine, seg)

        with mock.patch.object(SegmentEngine, "_delete_segment", crash_after_some):
            with pytest.raises(EngineError):
                e.reset_to(50_000)
        e2 = self.open_engine()
        after = read_all(e2)
        assert e2.log_start_offset == 0 and after == before[: len(after)]
        assert len(after) == len(before) if deleted == 0 else 0 < len(after) < len(before)

    def test_crash_before_new_segment_recovers_empty_at_offset(self) -> None:
        e = self.open_engine()
        self.fill(e, 100, payload_bytes=500)
        with mock.patch("engines.segment_retention.LogSegment", side_effect=EngineError("simulated crash")):
            with pytest.raises(EngineError):
                e.reset_to(50_000)
        assert not glob.glob(os.path.join(self.directory, "*.log"))
        e2 = self.open_engine()
        assert (e2.log_start_offset, e2.log_end_offset, e2.size_bytes) == (50_000, 50_000, 0)
        assert e2.append(make_batch(1)) == 50_000


class TestLmdbEngine(EngineConformance):
    engine_class = LmdbEngine

    def make_config(self, **overrides: object) -> EngineConfig:
        overrides.setdefault("options", {"map_size_bytes": 1 << 20, "map_size_max_bytes": 256 << 20})
        return super().make_config(**overrides)

    def corrupt_last_batch(self, directory: str) -> None:
        env = lmdb.open(directory, max_dbs=2, subdir=True)
        db = env.open_db(b"batches")
        with env.begin(write=True, db=db) as txn:
            cursor = txn.cursor()
            assert cursor.last()
            value = bytearray(cursor.value())
            value[-5] ^= 0xFF
            txn.put(cursor.key(), bytes(value))
        env.close()

    @contextlib.contextmanager
    def disk_full(self, engine: LmdbEngine) -> Iterator[None]:
        limit = engine._map_size_max_bytes
        engine._map_size_max_bytes = engine.map_size_bytes  # the map may not grow any more
        try:
            yield
        finally:
            engine._map_size_max_bytes = limit

    def test_map_grows_past_initial_size(self) -> None:
        e = self.open_engine()
        assert e.map_size_bytes == 1 << 20
        for i in range(100):
            e.append(make_batch(i, payload_bytes=64 * 1024))
        assert e.map_size_bytes >= 8 << 20 and len(read_all(e)) == 100
        e.close()
        e2 = self.open_engine()
        assert len(read_all(e2)) == 100

    def test_map_full_past_max_is_storage_full(self) -> None:
        e = self.open_engine(options={"map_size_bytes": 1 << 20, "map_size_max_bytes": 2 << 20})
        with pytest.raises(StorageFull):
            for i in range(200):
                e.append(make_batch(i, payload_bytes=64 * 1024))
        n = len(read_all(e))
        assert 0 < n < 200
        e.close()
        assert len(read_all(self.open_engine(options={"map_size_bytes": 4 << 20}))) == n


# -- registry ------------------------------------------------------------------------------------

def test_registry_lists_builtins() -> None:
    assert {"segment", "lmdb", "memory"} <= set(registry.available())


@pytest.mark.parametrize("name,cls", [("segment", SegmentEngine), ("lmdb", LmdbEngine), ("memory", MemoryEngine)])
def test_registry_opens_each_engine(tmp_path, name: str, cls: type) -> None:
    e = registry.open_engine(name, str(tmp_path / name), EngineConfig(fsync="never"))
    try:
        assert isinstance(e, cls) and e.name == name
        assert e.append(make_batch(0)) == 0
    finally:
        e.close()


def test_registry_unknown_engine_names_available(tmp_path) -> None:
    with pytest.raises(EngineError) as err:
        registry.open_engine("rocks", str(tmp_path), EngineConfig())
    assert "rocks" in str(err.value) and "segment" in str(err.value)


def test_registry_entry_points_declared() -> None:
    from importlib import metadata

    names = {ep.name for ep in metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    assert {"segment", "lmdb", "memory"} <= names


def test_bad_fsync_policy_rejected() -> None:
    with pytest.raises(EngineError):
        EngineConfig(fsync="sometimes")


def test_engine_config_round_trips_through_json_for_another_process() -> None:
    """What the kill -9 writer of the conformance suite is started with: every field, the
    page-cache window as its bytes (a copy, no longer shared with the broker's)."""
    config = EngineConfig(fsync="always", fsync_interval_ms=7, segment_bytes_max=8192, retention_bytes=5,
                          options={"map_size_bytes": 65536}, cache_window=CacheWindow(3 * 4096))
    again = EngineConfig.from_json(config.to_json())
    assert again == config and again.cache_window is not config.cache_window
    assert again.cache_window.window_bytes == 3 * 4096
