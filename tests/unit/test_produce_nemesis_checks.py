"""The produce nemesis's pure parts (tests/faults/produce_nemesis_checks.py): its plan is a
function of the seed (the same seed, the same settings and faults; seeds vary them all), and
the reader check passes clean reads and reports each defect put into them -- a dirty read
(a value the final log does not have there, or an offset past its HW), an offset read twice,
going back or skipped. The workload's record mix is a function of the seed too, and in a
standard run sends keyless records every way: with callbacks, without (futures), with headers,
at fixed timestamps and at now."""

from __future__ import annotations

from fabric.records import Record
from tests.faults.produce_nemesis_checks import (KINDS, PARTITIONS_MAX, check_reads, make_plan, read_ends)
from tests.faults.workload_checker import BLOCK_RECORDS, RecordMix, content_violation


def test_plan_is_a_function_of_the_seed() -> None:
    assert make_plan(7, 60) == make_plan(7, 60)
    assert make_plan(7, 60) != make_plan(8, 60)


def test_plans_vary_every_setting_and_fault_over_seeds() -> None:
    plans = [make_plan(s, 60) for s in range(60)]
    assert {p.engine for p in plans} == {"segment", "lmdb"}
    assert {p.fsync for p in plans} == {"always", "interval"}
    assert {p.direct_write_min_bytes for p in plans} == {None, 0}
    assert {p.partitions for p in plans} == set(range(1, 7))
    assert {p.min_insync_replicas for p in plans} == {1, 2, 3}
    assert {p.concurrent for p in plans} == {True, False}
    assert {p.broker_lanes for p in plans if p.concurrent} == {1, 2}
    assert {p.segment_bytes_max for p in plans} == {None, 8192, 65536}
    assert {p.page_cache_tail_bytes for p in plans} == {None, 65536}
    assert {p.readers for p in plans} == {1, 2}
    assert {p.keyless_share for p in plans} == {0.25, 0.5, 0.75}
    assert {f.kind for p in plans for lane in p.lanes for f in lane} == set(KINDS)
    # the memory engine loses everything on a restart by design; direct writes are the segment engine's
    assert all(p.direct_write_min_bytes is None and p.segment_bytes_max is None
               for p in plans if p.engine == "lmdb")


def test_plan_fills_the_duration_and_bounds_the_topic() -> None:
    for seed in range(40):
        plan = make_plan(seed, 60)
        assert len(plan.lanes) == (2 + plan.broker_lanes if plan.concurrent else 1)
        for lane in plan.lanes:
            assert sum(f.wait_s + f.hold_s for f in lane) >= 30
        grown = sum(f.value for lane in plan.lanes for f in lane if f.kind == "add-partitions")
        assert plan.partitions + grown <= PARTITIONS_MAX
        timed = [f for lane in plan.lanes for f in lane if f.kind.startswith("pause")]
        assert all(f.hold_s > 3.0 for f in timed)  # past the session: a zombie


FINAL = {0: {o: b"v%d" % o for o in range(10)}, 1: {o: b"w%d" % o for o in range(5)}}


def _reads(p: int, offsets: range | list[int]) -> list[tuple[int, int, bytes]]:
    prefix = b"v" if p == 0 else b"w"
    return [(p, o, prefix + b"%d" % o) for o in offsets]


def _check(reads: dict) -> tuple[list[str], dict]:
    violations: list[str] = []
    counts = check_reads(reads, FINAL, violations)
    return violations, counts


def test_clean_reads_pass() -> None:
    # two readers, partitions interleaved, one not read to its end yet
    reads = {"r0": _reads(0, range(5)) + _reads(1, range(5)) + _reads(0, range(5, 10)), "r1": _reads(0, range(3))}
    violations, counts = _check(reads)
    assert violations == []
    assert counts == {"read": 18, "dirty_reads": 0, "read_order_breaks": 0}
    assert read_ends(reads["r0"]) == {0: 10, 1: 5}


def test_a_value_truncated_after_it_was_read_is_a_dirty_read() -> None:
    reads = {"r0": _reads(0, range(4)) + [(0, 4, b"x-from-a-deposed-leader")]}
    violations, counts = _check(reads)
    assert counts["dirty_reads"] == 1
    assert "partition 0 offset 4" in violations[0] and "x-from-a-deposed-leader" in violations[0]


def test_a_record_past_the_final_hw_is_a_dirty_read() -> None:
    violations, counts = _check({"r0": _reads(1, range(6))})
    assert counts["dirty_reads"] == 1 and "final log has None" in violations[0]


def test_offsets_going_back_or_skipping_are_reported() -> None:
    violations, counts = _check({"r0": _reads(0, [0, 1, 2, 1, 2, 3, 5, 6])})
    assert counts["read_order_breaks"] == 2
    assert "offset 1 after 2 (back)" in violations[0]
    assert "offset 5 after 3 (skipped 1)" in violations[1]


def test_a_read_starting_past_zero_is_a_skip() -> None:
    violations, _ = _check({"r0": _reads(0, range(2, 5))})
    assert violations == ["r0: partition 0: offset 2 after -1 (skipped 2)"]


def test_violations_are_capped_per_reader() -> None:
    reads = {"r0": [(0, o, b"bad") for o in range(10)]}
    violations: list[str] = []
    check_reads(reads, FINAL, violations, shown_max=3)
    assert len(violations) == 4 and violations[-1] == "r0: 7 more read violations"


def test_the_record_mix_is_a_function_of_the_seed_and_sends_keyless_records_every_way() -> None:
    for seed in (75, 76, 77):
        mix = RecordMix(seed, make_plan(seed, 60).keyless_share)
        blocks = [mix.block(b * BLOCK_RECORDS) for b in range(60)]  # a minute at the nemesis's 400 records/s
        assert blocks == [RecordMix(seed, mix.keyless_share).block(b * BLOCK_RECORDS + 7) for b in range(60)]
        keyless = {(how, fixed) for is_keyless, how, fixed in blocks if is_keyless}
        assert {how for how, _ in keyless} == {"callback", "future", "headers"} and {f for _, f in keyless} == {True, False}
        assert any(not is_keyless for is_keyless, _, _ in blocks)


def test_a_record_found_with_another_key_headers_or_timestamp_than_it_was_sent_with_is_reported() -> None:
    """The checker matches records by value; what else was sent with the value (the key, the
    headers, the timestamp given, or the time of the send when none was) must be what the log
    holds: a record that took another's timestamp or lost its key or headers on the way (the
    producer's runs of values keep only values) is a violation."""
    contents = {b"v1": (None, None, 1_000), b"v2": (b"k2", (("seq", b"2"),), (2_000, 2_003))}

    def record(value: bytes, key: bytes | None, headers: tuple | None, timestamp_ms: int) -> Record:
        return Record("jepsen", 0, 0, timestamp_ms, key, value, headers)

    assert content_violation(record(b"v1", None, None, 1_000), contents) is None
    assert content_violation(record(b"v2", b"k2", (("seq", b"2"),), 2_003), contents) is None
    for wrong in (record(b"v9", None, None, 7), record(b"v1", None, None, 1_001), record(b"v1", b"k", None, 1_000),
                  record(b"v1", None, (("seq", b"1"),), 1_000), record(b"v2", None, (("seq", b"2"),), 2_000),
                  record(b"v2", b"k2", None, 2_000), record(b"v2", b"k2", (("seq", b"2"),), 2_004),
                  record(b"v2", b"k2", (("seq", b"2"),), 1_999)):
        assert content_violation(wrong, contents) is not None, wrong
