"""The engine conformance suite: every engine must pass it (huey-style contract tests).

Use it from pytest by subclassing with a ``Test`` name and saying how to build your engine::

    from engines.conformance import EngineConformance
    from my_pkg import RocksEngine

    class TestRocksEngine(EngineConformance):
        engine_class = RocksEngine
        persistent = True      # reopen / crash tests run
        segments = False       # roll tests need a `segment_count` property

Capability flags: ``persistent`` (data survives close/reopen and kill -9), ``segments``
(rolls files by size/time and exposes ``segment_count``). Hooks to override for the
fault tests (they skip by default): ``corrupt_last_batch(directory)`` and
``disk_full(engine)``.

Only stdlib + engines: skips raise ``unittest.SkipTest`` (pytest honours it); each test gets a
fresh temp directory in ``setup_method`` and every engine opened through ``open_engine`` is
closed, and the directory removed, in ``teardown_method``. The kill -9 test runs a writer
process (``engines/conformance_support.py``, with the batches the suite writes) with the engine
named by ``engine_spec()`` ("module:Class"). The tests of ``reset_to`` are a base of the suite
of their own (``engines/conformance_reset.py``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import threading
import unittest
from typing import Any

from engines.api import (
    FSYNC_ALWAYS,
    FSYNC_INTERVAL,
    FSYNC_NEVER,
    BatchTooLarge,
    CorruptBatch,
    Engine,
    EngineClosed,
    EngineConfig,
    EngineError,
    OffsetOutOfRange,
    StorageFull,
    async_flush_of,
    verified_append_kwargs,
)
from engines.batch import iter_batches, verify
from engines.conformance_reset import ResetToConformance
from engines.conformance_support import batch_index, make_batch, raises, read_all, run_and_kill_writer

__all__ = ["EngineConformance", "batch_index", "make_batch", "read_all"]


class EngineConformance(ResetToConformance):
    """The contract tests. Subclass (name it Test...) and set ``engine_class``."""

    engine_class: Any = None
    persistent = True
    segments = False

    # -- fixtures and hooks -------------------------------------------------------------------
    def setup_method(self, method: Any = None) -> None:
        if self.engine_class is None:
            raise unittest.SkipTest("EngineConformance subclass sets no engine_class")
        self.tmp_dir = tempfile.mkdtemp(prefix="loom-engine-")
        self.directory = os.path.join(self.tmp_dir, "p0")
        self._opened: list[Engine] = []

    def teardown_method(self, method: Any = None) -> None:
        for engine in self._opened:
            with contextlib.suppress(Exception):
                engine.close()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def make_config(self, **overrides: Any) -> EngineConfig:
        """Small segments and a dense index so that a few hundred KiB exercise rolls."""
        base = dict(fsync=FSYNC_NEVER, segment_bytes_max=16 * 1024, index_interval_bytes=512)
        base.update(overrides)
        return EngineConfig(**base)

    def open_engine(self, directory: str | None = None, **overrides: Any) -> Engine:
        engine = self.engine_class(directory or self.directory, self.make_config(**overrides))
        self._opened.append(engine)
        return engine

    def engine_spec(self) -> str:
        return f"{self.engine_class.__module__}:{self.engine_class.__qualname__}"

    def corrupt_last_batch(self, directory: str) -> None:
        """Flip bytes inside the last stored batch's payload (engine closed). Override."""
        raise unittest.SkipTest("engine provides no corrupt_last_batch hook")

    def disk_full(self, engine: Engine) -> contextlib.AbstractContextManager:
        """A context in which the engine's writes fail with ENOSPC. Override."""
        raise unittest.SkipTest("engine provides no disk_full hook")

    def require(self, flag: str) -> None:
        if not getattr(self, flag):
            raise unittest.SkipTest(f"engine is not {flag}")

    def fill(self, engine: Engine, count: int, **kw: Any) -> list[int]:
        return [engine.append(make_batch(i, record_count=1 + i % 4, **kw)) for i in range(count)]

    # -- basics ---------------------------------------------------------------------------
    def test_new_log_is_empty(self) -> None:
        e = self.open_engine()
        assert isinstance(e, Engine)
        assert (e.log_start_offset, e.log_end_offset, e.size_bytes) == (0, 0, 0)
        assert e.read(0, 1024) == b""
        assert e.offset_for_timestamp(0) is None

    def test_append_stamps_log_end_offset(self) -> None:
        e = self.open_engine()
        offsets = self.fill(e, 10)
        expected, next_offset = [], 0
        for i in range(10):
            expected.append(next_offset)
            next_offset += 1 + i % 4
        assert offsets == expected and e.log_end_offset == next_offset
        batches = read_all(e)
        assert [h.base_offset for h, _ in batches] == expected
        assert e.size_bytes == sum(len(b) for _, b in batches)

    def test_round_trip_across_segments(self) -> None:
        e = self.open_engine()
        sizes = [50, 3000, 10, 7000, 200]
        for i in range(120):
            e.append(make_batch(i, record_count=1 + i % 7, payload_bytes=sizes[i % 5]))
        if self.segments:
            assert e.segment_count > 3
        for max_bytes in (1, 4000, 1 << 20):
            batches = read_all(e, max_bytes=max_bytes)
            assert [batch_index(memoryview(b)) for _, b in batches] == list(range(120))

    def test_read_inside_batch_returns_containing_batch(self) -> None:
        e = self.open_engine()
        self.fill(e, 40, payload_bytes=700)
        for offset in range(e.log_end_offset):
            data = e.read(offset, 1)
            header = verify(data)
            assert header.base_offset <= offset < header.next_offset
            assert len(data) == header.size_bytes

    def test_max_bytes_bounds_read_but_returns_one_batch(self) -> None:
        e = self.open_engine()
        self.fill(e, 10, payload_bytes=1000)
        one = len(make_batch(0, payload_bytes=1000))
        assert len(list(iter_batches(e.read(0, 0)))) == 1
        assert len(list(iter_batches(e.read(0, one - 1)))) == 1
        data = e.read(0, int(2.5 * one))
        assert len(data) <= 2.5 * one and len(list(iter_batches(data))) == 2

    def test_out_of_range(self) -> None:
        e = self.open_engine()
        self.fill(e, 5)
        end = e.log_end_offset
        assert e.read(end, 100) == b""
        for bad in (-1, end + 1, end + 1000):
            try:
                e.read(bad, 100)
            except OffsetOutOfRange as err:
                assert err.offset == bad and err.log_end_offset == end
            else:
                raise AssertionError(f"read({bad}) did not raise OffsetOutOfRange")

    def test_corrupt_batch_rejected_log_unchanged(self) -> None:
        e = self.open_engine()
        self.fill(e, 3)
        before = (e.log_end_offset, e.size_bytes, e.read(0, 1 << 20))
        good = make_batch(9)
        flipped = bytearray(good)
        flipped[-1] ^= 0xFF
        bad_cases = [bytes(flipped), good[:-1], good[:30], good + good, b"", b"x" * 100]
        for bad in bad_cases:
            with raises(CorruptBatch):
                e.append(bad)
        with raises(CorruptBatch):
            e.append_many([good, bytes(flipped)])
        assert (e.log_end_offset, e.size_bytes, e.read(0, 1 << 20)) == before

    def test_batch_too_large(self) -> None:
        e = self.open_engine(batch_bytes_max=1000)
        with raises(BatchTooLarge):
            e.append(make_batch(0, payload_bytes=2000))
        assert e.log_end_offset == 0

    def test_append_many(self) -> None:
        e = self.open_engine(fsync=FSYNC_ALWAYS)
        offsets = e.append_many([make_batch(i, record_count=2) for i in range(50)])
        assert offsets == list(range(0, 100, 2)) and e.append_many([]) == []
        assert [batch_index(memoryview(b)) for _, b in read_all(e)] == list(range(50))

    def test_append_takes_buffers_and_keeps_none_of_them(self) -> None:
        """A batch may come as bytes, a bytearray or a memoryview (a slice of a larger buffer, as
        the broker hands on views onto received messages); what the engine stores is its own:
        the caller's buffers overwritten afterwards (a receive buffer reused) change nothing."""
        e = self.open_engine()
        batches = [make_batch(i, record_count=2, payload_bytes=300) for i in range(6)]
        backing = bytearray(b"x" * 7 + b"".join(batches[2:4]))  # two batches inside a larger buffer
        views = [memoryview(backing)[7:7 + len(batches[2])], memoryview(backing)[7 + len(batches[2]):]]
        owned = [bytearray(batches[4]), bytearray(batches[5])]
        assert e.append(memoryview(batches[0])) == 0 and e.append(bytearray(batches[1])) == 2
        assert e.append_many(views) == [4, 6] and e.append_many(owned) == [8, 10]
        for v in views:
            v.release()
        backing[:] = bytes(len(backing))  # the buffers are reused for other messages
        for b in owned:
            b[:] = bytes(len(b))
        stored = read_all(e)
        assert [batch_index(memoryview(b)) for _, b in stored] == list(range(6))
        assert [h.base_offset for h, _ in stored] == list(range(0, 12, 2))
        assert all(verify(b) for _, b in stored)

    def test_append_many_crc_checked_skips_the_crc_and_nothing_else(self) -> None:
        """``crc_checked=True`` is the caller's word that it verified each CRC: a batch whose
        CRC field is wrong is stored as it is (nothing else looks at it), while a batch of the
        wrong length, too large, or cut short is still refused, and without the flag the CRC
        is checked. (The keyword is optional: an engine without it is skipped here.)"""
        e = self.open_engine(batch_bytes_max=4000)
        if not verified_append_kwargs(e):
            raise unittest.SkipTest("append_many takes no crc_checked: the caller leaves every CRC to it")
        bad_crc = bytearray(make_batch(0))
        bad_crc[17] ^= 0xFF
        with raises(CorruptBatch):
            e.append_many([bytes(bad_crc)])
        assert e.append_many([make_batch(1), bytes(bad_crc)], crc_checked=True) == [0, 3]
        for refused in (make_batch(2)[:-1], make_batch(3) + b"x", make_batch(4, payload_bytes=5000)):
            with raises(CorruptBatch):
                e.append_many([make_batch(5), refused], crc_checked=True)
        stored = [bytes(v) for _, v in iter_batches(e.read(0, 1 << 20))]  # as stored: no CRC check
        assert e.log_end_offset == 6 and [batch_index(memoryview(b)) for b in stored] == [1, 0]
        assert stored[1][8:] == bytes(bad_crc[8:])

    def test_closed_engineraises(self) -> None:
        e = self.open_engine()
        self.fill(e, 2)
        e.close()
        e.close()  # idempotent
        for call in (lambda: e.append(make_batch(0)), lambda: e.read(0, 10), e.flush):
            with raises(EngineClosed):
                call()

    # -- truncation and retention -------------------------------------------------------------
    def test_truncate_mid_segment_then_append(self) -> None:
        e = self.open_engine()
        self.fill(e, 100, payload_bytes=400)
        batches = read_all(e)
        target = batches[61][0]
        e.truncate_to(target.base_offset + target.record_count - 1)  # inside the batch
        assert e.log_end_offset == target.base_offset
        assert [h.base_offset for h, _ in read_all(e)] == [h.base_offset for h, _ in batches[:61]]
        assert e.append(make_batch(1000)) == target.base_offset
        e.truncate_to(e.log_end_offset + 5)  # no-op
        tail = read_all(e)
        assert batch_index(memoryview(tail[-1][1])) == 1000 and len(tail) == 62
        if self.persistent:
            e.close()
            e2 = self.open_engine()
            assert [(h, b) for h, b in read_all(e2)] == tail

    def test_truncate_everything(self) -> None:
        e = self.open_engine()
        self.fill(e, 20)
        e.truncate_to(0)
        assert (e.log_start_offset, e.log_end_offset, e.size_bytes) == (0, 0, 0)
        assert e.append(make_batch(5)) == 0

    def test_delete_before(self) -> None:
        e = self.open_engine()
        self.fill(e, 100, payload_bytes=400)
        end, mid = e.log_end_offset, e.log_end_offset // 2
        start = e.delete_before(mid)
        assert 0 < start <= mid and start == e.log_start_offset and e.log_end_offset == end
        with raises(OffsetOutOfRange):
            e.read(start - 1, 10)
        assert read_all(e)[0][0].base_offset == start
        assert e.delete_before(end + 100) <= e.log_end_offset and e.log_end_offset == end
        assert read_all(e), "the last batch must survive delete_before"
        if self.persistent:
            e.close()
            e2 = self.open_engine()
            assert (e2.log_start_offset, e2.log_end_offset) == (e.log_start_offset, end)

    def test_retention_by_size(self) -> None:
        e = self.open_engine(retention_bytes=20_000)
        self.fill(e, 200, payload_bytes=400)
        end, before = e.log_end_offset, e.size_bytes
        unit = 16 * 1024 + 1000 if self.segments else 1000
        freed = e.apply_retention(now_ms=0)
        assert freed == before - e.size_bytes and freed > 0
        assert 20_000 <= e.size_bytes <= 20_000 + unit
        assert e.log_end_offset == end and read_all(e)

    def test_retention_stops_at_the_upper_bound_offset(self) -> None:
        # the broker passes its high watermark: nothing that is not on every ISR member yet
        # may be deleted, whatever retention.bytes / retention.ms say
        e = self.open_engine(retention_bytes=1, retention_ms=1)
        offsets = self.fill(e, 200, payload_bytes=400)
        bound = offsets[120]
        e.apply_retention(now_ms=10**12, upper_bound_offset=bound)
        assert 0 < e.log_start_offset <= bound, "retention passed the upper bound (or deleted nothing)"
        e.apply_retention(now_ms=10**12, upper_bound_offset=0)
        assert e.log_start_offset <= bound
        e.apply_retention(now_ms=10**12)  # no bound: retention as configured
        assert e.log_start_offset > bound

    def test_retention_by_time(self) -> None:
        e = self.open_engine(retention_ms=50_000)
        self.fill(e, 200, payload_bytes=400)  # batch i has timestamps i*1000 .. i*1000+10
        now_ms = 150_000
        assert e.apply_retention(now_ms) > 0
        remaining = read_all(e)
        first = remaining[0][0]
        assert first.base_offset == e.log_start_offset > 0
        # nothing younger than the cut-off was deleted
        assert batch_index(memoryview(remaining[0][1])) <= 100
        assert first.last_timestamp_ms >= now_ms - 50_000 or self.segments
        assert len(remaining) >= 100

    def test_offset_for_timestamp(self) -> None:
        e = self.open_engine()
        offsets = self.fill(e, 60, payload_bytes=500)
        assert e.offset_for_timestamp(-5) == 0
        assert e.offset_for_timestamp(30_005) == offsets[30]
        assert e.offset_for_timestamp(30_011) == offsets[31]
        assert e.offset_for_timestamp(10**9) is None

    # -- durability -----------------------------------------------------------------------------
    def test_fsync_policies(self) -> None:
        for policy in (FSYNC_ALWAYS, FSYNC_INTERVAL, FSYNC_NEVER):
            e = self.open_engine(os.path.join(self.tmp_dir, policy), fsync=policy, fsync_interval_ms=100)
            self.fill(e, 3)
            flushed = e.maybe_flush(10_000)
            assert flushed == (policy == FSYNC_INTERVAL and self.persistent) or (
                not self.persistent and flushed is False)
            assert e.maybe_flush(10_050) is False  # interval not yet passed / nothing to do
            e.flush()
            e.close()

    def test_an_async_flush_job_runs_on_another_thread_and_is_applied_once(self) -> None:
        """Only for an engine that offers ``flush_job``/``flush_done`` (engines.api.AsyncFlush)."""
        e = self.open_engine(fsync=FSYNC_INTERVAL, fsync_interval_ms=100)
        if async_flush_of(e) is None:
            raise unittest.SkipTest("the engine has no asynchronous flush")
        self.fill(e, 3)
        job = e.flush_job(10_000)
        assert job is not None and e.flush_job(20_000) is None  # one in flight at a time
        runner = threading.Thread(target=job.run)
        runner.start()
        runner.join(30)
        assert e.flush_done(job) is True
        assert e.flush_job(30_000) is None  # nothing left to flush
        e.close()

    def test_reopen_after_clean_close(self) -> None:
        self.require("persistent")
        e = self.open_engine()
        self.fill(e, 150, payload_bytes=300)
        e.delete_before(20)
        before = read_all(e)
        state = (e.log_start_offset, e.log_end_offset, e.size_bytes)
        e.close()
        e2 = self.open_engine()
        assert e2.recovery.truncated_bytes == 0
        assert (e2.log_start_offset, e2.log_end_offset, e2.size_bytes) == state
        assert read_all(e2) == before
        assert e2.append(make_batch(999)) == state[1]

    def test_corrupt_tail_is_cut(self) -> None:
        self.require("persistent")
        e = self.open_engine()
        self.fill(e, 50, payload_bytes=300)
        batches = read_all(e)
        e.close()
        self.corrupt_last_batch(self.directory)
        e2 = self.open_engine()
        assert e2.recovery.truncated_bytes > 0, e2.recovery
        assert e2.log_end_offset == batches[-1][0].base_offset
        assert read_all(e2) == batches[:-1]
        assert e2.append(make_batch(7)) == batches[-1][0].base_offset

    def test_disk_full_raises_storage_full_log_readable(self) -> None:
        e = self.open_engine()
        self.fill(e, 10)
        before = read_all(e)
        with self.disk_full(e):
            with raises(StorageFull):
                for i in range(10_000):  # bounded: the hook makes writes fail soon
                    e.append(make_batch(i, payload_bytes=4000))
            assert read_all(e)[: len(before)] == before
        after = read_all(e)
        assert e.append(make_batch(77)) == after[-1][0].next_offset

    def test_kill9_writer_loses_nothing_flushed(self) -> None:
        self.require("persistent")
        flushed, stderr = run_and_kill_writer(self.engine_spec(), self.directory,
                                               self.make_config(fsync=FSYNC_NEVER, segment_bytes_max=256 * 1024))
        e = self.open_engine(segment_bytes_max=256 * 1024)
        assert e.log_end_offset >= flushed, (flushed, e.recovery, stderr)
        batches = read_all(e, max_bytes=1 << 20)
        assert [batch_index(memoryview(b)) for _, b in batches] == list(range(len(batches)))
        assert e.append(make_batch(len(batches))) == e.log_end_offset - 3
