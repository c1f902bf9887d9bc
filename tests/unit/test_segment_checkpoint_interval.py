"""The segment engine's interval flush fsyncs the data every ``fsync_interval_ms`` but moves the
recovery checkpoint at most every RECOVERY_CHECKPOINT_INTERVAL_MS (replacing it costs two
fsyncs and a rename on the broker's reactor thread). A checkpoint left behind must stay true:
a crash then recovers everything, re-validating more; truncation and retention, which change
the bytes a checkpoint vouches for, still write a new one at once."""

from __future__ import annotations

from pathlib import Path

from engines.conformance import read_all
from engines.segment_durability import RECOVERY_CHECKPOINT_INTERVAL_MS
from engines.segment_recovery import read_checkpoint
from tests.unit.builders_segment import INTERVAL_MS, fill, open_engine


def test_interval_flushes_move_the_checkpoint_only_when_it_is_due(tmp_path: Path) -> None:
    e = open_engine(tmp_path)
    fill(e, 0, 5)
    t = 100_000
    assert e.maybe_flush(t)  # the first interval flush checkpoints
    first = read_checkpoint(str(tmp_path))
    assert first is not None and first.next_offset == e.log_end_offset
    fill(e, 5, 5)
    assert e.maybe_flush(t + INTERVAL_MS)  # data fsynced ...
    assert not e._active.dirty and not e._unsynced
    assert read_checkpoint(str(tmp_path)) == first  # ... the checkpoint left where it was
    fill(e, 10, 5)
    assert e.maybe_flush(t + RECOVERY_CHECKPOINT_INTERVAL_MS)
    moved = read_checkpoint(str(tmp_path))
    assert moved is not None and moved.next_offset == e.log_end_offset > first.next_offset
    e.close()


def test_a_crash_behind_a_stale_checkpoint_across_rolls_recovers_every_record(tmp_path: Path) -> None:
    e = open_engine(tmp_path)
    fill(e, 0, 10)
    t = 100_000
    e.maybe_flush(t)
    stale = read_checkpoint(str(tmp_path))
    fill(e, 10, 120)  # ~60 KiB: several rolls past the checkpoint's segment
    assert len(e._segments) > 3
    e.maybe_flush(t + INTERVAL_MS)
    assert read_checkpoint(str(tmp_path)) == stale
    expected = read_all(e)
    e2 = open_engine(tmp_path)  # a second owner reading the files as a crash leaves them
    assert read_all(e2) == expected and e2.log_end_offset == e.log_end_offset
    assert e2.recovery.batches_scanned >= 120, e2.recovery  # everything past the stale point re-validated
    assert read_checkpoint(str(tmp_path)).next_offset == e2.log_end_offset  # recovery checkpoints at once
    e2.close()


def test_truncation_below_a_stale_checkpoint_writes_a_new_one_at_once(tmp_path: Path) -> None:
    e = open_engine(tmp_path)
    fill(e, 0, 40)
    e.maybe_flush(100_000)
    high = read_checkpoint(str(tmp_path))
    e.truncate_to(10)
    assert read_checkpoint(str(tmp_path)).next_offset == e.log_end_offset < high.next_offset
    expected = read_all(e)
    e2 = open_engine(tmp_path)
    assert read_all(e2) == expected
    e2.close()


def test_retention_of_the_checkpoint_segment_writes_a_new_one_at_once(tmp_path: Path) -> None:
    e = open_engine(tmp_path)
    fill(e, 0, 10)
    e.maybe_flush(100_000)
    named = read_checkpoint(str(tmp_path)).segment_base_offset
    fill(e, 10, 120)
    e.maybe_flush(100_000 + INTERVAL_MS)  # not due: still names the first segment
    assert read_checkpoint(str(tmp_path)).segment_base_offset == named
    start = e.delete_before(e._segments[-2].base_offset)
    assert start > named
    assert read_checkpoint(str(tmp_path)).segment_base_offset >= start
    expected = read_all(e)
    e2 = open_engine(tmp_path)
    assert read_all(e2) == expected and e2.log_start_offset == start
    e2.close()
