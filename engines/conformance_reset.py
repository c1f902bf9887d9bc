"""The engine conformance suite's tests of ``reset_to`` (engines/api.py): a log emptied at any
offset -- below its start, inside it, at or far above its end -- serves, appends, truncates,
keeps its retention and survives a reopen and a kill -9 as a new log starting there.

``ResetToConformance`` is that part of ``EngineConformance`` (engines/conformance.py), one of
its bases: it uses the suite's fixtures and hooks (``open_engine``, ``fill``, ``require``...)
and runs in every engine's suite. Only stdlib + engines, as the suite.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from engines.api import FSYNC_ALWAYS, FSYNC_NEVER, Engine, EngineClosed, EngineError, OffsetOutOfRange
from engines.conformance_support import batch_index, make_batch, raises, read_all, run_and_kill_writer

if TYPE_CHECKING:
    from engines.api import EngineConfig


class ResetToConformance:
    """``EngineConformance``'s ``reset_to`` tests. Part of the suite (its fixtures, hooks and
    capability flags are the suite's own; kept here so that what reset_to promises reads
    together)."""

    # the suite's fixtures, hooks and flags these tests use (engines/conformance.py)
    segments: bool
    tmp_dir: str
    directory: str

    make_config: Callable[..., EngineConfig]
    open_engine: Callable[..., Engine]
    engine_spec: Callable[[], str]
    require: Callable[[str], None]
    fill: Callable[..., list[int]]

    def check_reset(self, e: Engine, offset: int) -> None:
        """After e.reset_to(offset): empty at ``offset``, nothing readable below or above it."""
        assert (e.log_start_offset, e.log_end_offset, e.size_bytes) == (offset, offset, 0)
        assert e.read(offset, 1024) == b""
        assert e.offset_for_timestamp(0) is None
        for bad in (offset - 1, offset + 1, 0, offset + 1000):
            if bad == offset:
                continue
            with raises(OffsetOutOfRange):
                e.read(bad, 1024)

    def test_reset_empty_log(self) -> None:
        e = self.open_engine()
        e.reset_to(0)
        self.check_reset(e, 0)
        e.reset_to(37)
        self.check_reset(e, 37)
        assert e.append(make_batch(0, record_count=2)) == 37
        assert e.append(make_batch(1)) == 39 and e.log_end_offset == 42
        assert [h.base_offset for h, _ in read_all(e)] == [37, 39]

    def test_reset_below_end(self) -> None:
        e = self.open_engine()
        self.fill(e, 100, payload_bytes=400)
        mid = read_all(e)[40][0].base_offset + 1  # inside a batch: reset does not care
        e.reset_to(mid)
        self.check_reset(e, mid)
        assert e.append(make_batch(500, record_count=2)) == mid
        assert e.append(make_batch(501)) == mid + 2
        batches = read_all(e)
        assert [batch_index(memoryview(b)) for _, b in batches] == [500, 501]
        assert e.size_bytes == sum(len(b) for _, b in batches)
        assert e.offset_for_timestamp(0) == mid

    def test_reset_above_end_and_below_start(self) -> None:
        e = self.open_engine()
        self.fill(e, 60, payload_bytes=400)
        end = e.log_end_offset
        e.reset_to(end + 1000)  # a follower far behind the leader's log start
        self.check_reset(e, end + 1000)
        self.fill(e, 60, payload_bytes=400)
        start = e.delete_before(e.log_end_offset - 20)
        assert start > end + 1000
        e.reset_to(5)  # below the current log start
        self.check_reset(e, 5)
        assert e.append(make_batch(9)) == 5 and len(read_all(e)) == 1

    def test_reset_at_end_drops_everything(self) -> None:
        e = self.open_engine()
        self.fill(e, 30, payload_bytes=400)
        end = e.log_end_offset
        e.reset_to(end)
        self.check_reset(e, end)
        assert e.append(make_batch(3)) == end

    def test_log_works_after_reset(self) -> None:
        e = self.open_engine(retention_bytes=8_000)
        self.fill(e, 20, payload_bytes=400)
        e.reset_to(1000)
        offsets = [e.append(make_batch(i, record_count=2, payload_bytes=400)) for i in range(100)]
        assert offsets == list(range(1000, 1200, 2))
        if self.segments:
            assert e.segment_count > 1
        assert [batch_index(memoryview(b)) for _, b in read_all(e, max_bytes=3000)] == list(range(100))
        e.truncate_to(1101)  # inside the batch at 1100
        assert e.log_end_offset == 1100 and e.log_start_offset == 1000
        e.truncate_to(3)  # below the start: everything goes, the start stays
        assert (e.log_start_offset, e.log_end_offset) == (1000, 1000)
        self.fill(e, 100, payload_bytes=400)
        assert e.apply_retention(now_ms=0) > 0 and e.log_start_offset > 1000
        assert read_all(e)[0][0].base_offset == e.log_start_offset

    def test_reset_to_negative_offset_rejected(self) -> None:
        e = self.open_engine()
        self.fill(e, 3)
        before = (e.log_start_offset, e.log_end_offset, e.size_bytes)
        with raises(EngineError):
            e.reset_to(-1)
        assert (e.log_start_offset, e.log_end_offset, e.size_bytes) == before

    def test_reset_on_closed_engineraises(self) -> None:
        e = self.open_engine()
        e.close()
        with raises(EngineClosed):
            e.reset_to(5)

    def test_reopen_after_reset(self) -> None:
        self.require("persistent")
        for fsync in (FSYNC_NEVER, FSYNC_ALWAYS):
            directory = os.path.join(self.tmp_dir, fsync)
            e = self.open_engine(directory, fsync=fsync)
            self.fill(e, 80, payload_bytes=400)
            e.reset_to(5000)
            e.close()
            e2 = self.open_engine(directory, fsync=fsync)
            assert e2.recovery.truncated_bytes == 0, e2.recovery
            self.check_reset(e2, 5000)
            assert e2.append(make_batch(1, record_count=2)) == 5000
            e2.close()
            e3 = self.open_engine(directory, fsync=fsync)
            assert (e3.log_start_offset, e3.log_end_offset) == (5000, 5002)
            assert [batch_index(memoryview(b)) for _, b in read_all(e3)] == [1]
            e3.reset_to(7)  # below: the old files must not come back
            e3.close()
            e4 = self.open_engine(directory, fsync=fsync)
            self.check_reset(e4, 7)
            e4.close()

    def test_kill9_after_reset_keeps_the_reset(self) -> None:
        self.require("persistent")
        reset_offset = 1_000_000
        flushed, stderr = run_and_kill_writer(
            self.engine_spec(), self.directory, self.make_config(fsync=FSYNC_NEVER, segment_bytes_max=256 * 1024),
            main="crash_reset_writer_main", extra_args=(str(reset_offset),))
        e = self.open_engine(segment_bytes_max=256 * 1024)
        assert e.log_start_offset == reset_offset, (e.recovery, stderr)
        assert e.log_end_offset >= flushed >= reset_offset, (flushed, e.recovery, stderr)
        batches = read_all(e, max_bytes=1 << 20)
        assert [batch_index(memoryview(b)) for _, b in batches] == list(range(len(batches)))
        assert e.append(make_batch(len(batches))) == e.log_end_offset - 3
