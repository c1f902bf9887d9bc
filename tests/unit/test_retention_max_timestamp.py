"""Time retention judges a segment (or a batch) by the largest timestamp it holds, as Kafka's
maxTimestamp does, not by its last batch's: with out-of-order timestamps (a late or
clock-skewed record) fresh records must survive retention.ms. Every built-in engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import batch as B
from engines.api import EngineConfig
from engines.lmdb_engine import LmdbEngine
from engines.memory import MemoryEngine
from engines.segment import SegmentEngine
from fabric.records import build_batch, decode_batches

HOUR_MS = 3_600_000
NOW_MS = 1_800_000_000_000
FRESH_MS = NOW_MS - 5_000  # written seconds ago
LATE_MS = NOW_MS - 2 * HOUR_MS  # a late or clock-skewed record
VALUE_BYTES = 1000  # with segment_bytes_max 4096: three batches per segment
ENGINES = {"segment": SegmentEngine, "lmdb": LmdbEngine, "memory": MemoryEngine}


def _batch(name: str, *timestamps: int) -> bytes:
    size = VALUE_BYTES // len(timestamps)
    return build_batch([(ts, None, (f"{name}/{i}/".encode() + b"x" * size), None) for i, ts in enumerate(timestamps)])


def _open(name: str, directory: Path):  # noqa: ANN202
    config = EngineConfig(fsync="never", segment_bytes_max=4096, index_interval_bytes=512,
                          retention_ms=HOUR_MS)
    return ENGINES[name](str(directory / "log"), config)


def _records(engine) -> list:  # noqa: ANN001
    out, offset = [], engine.log_start_offset
    while offset < engine.log_end_offset:
        data = engine.read(offset, 1 << 20)
        out += decode_batches("t", 0, data)
        offset = B.split_headers(data)[-1].next_offset
    return out


def _name(record) -> str:  # noqa: ANN001
    return record.value.split(b"/x")[0].decode()


@pytest.mark.parametrize("name", sorted(ENGINES))
def test_fresh_records_survive_a_late_record_after_them(tmp_path: Path, name: str) -> None:
    engine = _open(name, tmp_path)
    try:
        layout = [
            _batch("old-a", LATE_MS - 10), _batch("old-b", LATE_MS - 5), _batch("old-c", LATE_MS),
            _batch("mixed", FRESH_MS, LATE_MS),  # fresh first record, late last record
            _batch("fresh-a", FRESH_MS), _batch("late", LATE_MS),  # a late record ends the segment
            _batch("fresh-b", FRESH_MS + 1), _batch("fresh-c", FRESH_MS + 2), _batch("fresh-d", FRESH_MS + 3),
            _batch("fresh-e", FRESH_MS + 4),
        ]
        offsets = [engine.append(b) for b in layout]
        if name == "segment":
            assert engine.segment_count == 4  # [old x3] [mixed, fresh-a, late] [fresh-b..d] [fresh-e]
        fresh_before = [r for r in _records(engine) if r.timestamp_ms >= NOW_MS - HOUR_MS]
        engine.apply_retention(NOW_MS)
        kept = _records(engine)
        fresh_after = [r for r in kept if r.timestamp_ms >= NOW_MS - HOUR_MS]
        assert [_name(r) for r in fresh_after] == [_name(r) for r in fresh_before], "fresh records were deleted"
        assert engine.log_start_offset == offsets[3], "the expired batches before them must go"
        # the same bound answers timestamp lookups: the mixed batch holds a record at FRESH_MS
        assert engine.offset_for_timestamp(FRESH_MS) == offsets[3]
    finally:
        engine.close()


def test_segment_max_timestamp_is_known_after_reopen(tmp_path: Path) -> None:
    """A reopened log has not read its older segments; their largest timestamp is found by
    reading their headers once, not taken from the last batch."""
    engine = _open("segment", tmp_path)
    for b in [_batch("mixed", FRESH_MS, LATE_MS), _batch("fresh", FRESH_MS), _batch("late", LATE_MS),
              _batch("next-1", FRESH_MS), _batch("next-2", FRESH_MS)]:
        engine.append(b)
    assert engine.segment_count == 2
    engine.close()
    engine = _open("segment", tmp_path)
    try:
        engine.apply_retention(NOW_MS)
        assert engine.log_start_offset == 0
        engine.config.retention_ms = 1  # everything older than 1 ms: the first segment goes
        engine.apply_retention(NOW_MS)
        assert engine.log_start_offset > 0
    finally:
        engine.close()


def test_client_batch_header_carries_the_largest_timestamp_not_the_last() -> None:
    from engines.batch import parse_header
    from fabric.records import build_batch
    t0 = 1_700_000_000_000
    h = parse_header(build_batch([(t0, None, b"a", None), (t0 + 3_600_000, None, b"late", None), (t0 + 5, None, b"c", None)]))
    assert h.first_timestamp_ms == t0 and h.max_timestamp_ms == t0 + 3_600_000
