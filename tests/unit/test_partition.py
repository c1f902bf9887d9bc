"""The partition layer on the memory engine: leader appends with idempotent dedup, follower
appends, the high watermark, ISR proposals, the leader-epoch cache and truncation."""

from __future__ import annotations

from pathlib import Path

import pytest

from engines import batch as B
from engines.api import EngineConfig
from engines.memory import MemoryEngine
from fabric import protocol as P
from fabric.records import decode_batches
from nodes.broker.epochs import EpochCache
from nodes.broker.partition import Partition
from nodes.broker.producers import BATCHES_REMEMBERED, ProducerStateTable
from tests.unit.fakes import make_batch

BATCH_MAX = 1024 * 1024
ME = 1


def _part(directory: str | None = None) -> Partition:
    return Partition("t", 0, ME, MemoryEngine("", EngineConfig(batch_bytes_max=BATCH_MAX)), directory)


def _leader(isr: list[int] = [1, 2, 3], epoch: int = 1) -> Partition:  # noqa: B006 - never mutated
    p = _part()
    p.become_leader(epoch, [1, 2, 3], isr, now_ms=0)
    return p


def _append(p: Partition, batches: list[bytes], batch_bytes_max: int) -> list[tuple[int, int, str]]:
    """Per-batch (base_offset, error_code, message) of a leader append."""
    out = p.append_as_leader(batches, batch_bytes_max)
    return out[0] if isinstance(out, tuple) else out  # (results, batches written) in newer trees


def _read_all(p: Partition) -> bytes:
    return p.engine.read(p.log_start_offset, 1 << 30) if p.log_end_offset > p.log_start_offset else b""


# -- leader appends -------------------------------------------------------------------------
def test_leader_append_assigns_offsets_and_stamps_epoch() -> None:
    p = _leader(epoch=4)
    res = _append(p, [make_batch(3), make_batch(2)], BATCH_MAX)
    assert [(r[0], r[1]) for r in res] == [(0, 0), (3, 0)]
    assert p.log_end_offset == 5
    headers = B.split_headers(_read_all(p))
    assert [h.base_offset for h in headers] == [0, 3]
    assert {h.leader_epoch for h in headers} == {4}
    assert [r.value for r in decode_batches("t", 0, _read_all(p))] == [b"v0", b"v1", b"v2", b"v0", b"v1"]


def test_leader_rejects_bad_batches_and_keeps_the_good_ones() -> None:
    p = _leader()
    corrupt = bytearray(make_batch(3))
    corrupt[-1] ^= 0xFF
    big = make_batch(3, tag="x" * 600)
    res = _append(p, [make_batch(2), bytes(corrupt), big, b"short", make_batch(1)], batch_bytes_max=500)
    assert [r[1] for r in res] == [0, P.CORRUPT_MESSAGE, P.RECORD_TOO_LARGE, P.CORRUPT_MESSAGE, 0]
    assert [r[0] for r in res] == [0, -1, -1, -1, 2]
    assert p.log_end_offset == 3


def test_trailing_bytes_after_a_batch_are_corrupt() -> None:
    p = _leader()
    res = _append(p, [make_batch(2) + b"junk"], BATCH_MAX)
    assert res[0][1] == P.CORRUPT_MESSAGE
    assert p.log_end_offset == 0


def test_idempotent_retry_returns_the_original_offset() -> None:
    p = _leader()
    b0, b1 = make_batch(3, pid=9, epoch=0, seq=0), make_batch(2, pid=9, epoch=0, seq=3)
    assert [r[0] for r in _append(p, [b0, b1], BATCH_MAX)] == [0, 3]
    # the acks were lost: the producer resends both; nothing is written twice
    res = _append(p, [b0, b1], BATCH_MAX)
    assert [(r[0], r[1]) for r in res] == [(0, 0), (3, 0)]
    assert p.log_end_offset == 5
    # and the next sequence is accepted
    assert _append(p, [make_batch(1, pid=9, epoch=0, seq=5)], BATCH_MAX)[0][:2] == (5, 0)


def test_out_of_order_sequence_is_rejected_and_not_written() -> None:
    p = _leader()
    _append(p, [make_batch(3, pid=9, epoch=0, seq=0)], BATCH_MAX)
    res = _append(p, [make_batch(1, pid=9, epoch=0, seq=7)], BATCH_MAX)
    assert res[0][:2] == (-1, P.OUT_OF_ORDER_SEQUENCE)
    assert p.log_end_offset == 3


def test_old_sequence_beyond_memory_is_a_duplicate_error() -> None:
    p = _leader()
    batches = [make_batch(1, pid=9, epoch=0, seq=i) for i in range(BATCHES_REMEMBERED + 2)]
    for b in batches:
        assert _append(p, [b], BATCH_MAX)[0][1] == 0
    res = _append(p, [batches[0]], BATCH_MAX)  # forgotten, but behind: never re-written
    assert res[0][1] == P.DUPLICATE_SEQUENCE
    assert p.log_end_offset == BATCHES_REMEMBERED + 2


def test_fenced_producer_epoch() -> None:
    p = _leader()
    _append(p, [make_batch(1, pid=9, epoch=2, seq=0)], BATCH_MAX)
    assert _append(p, [make_batch(1, pid=9, epoch=1, seq=1)], BATCH_MAX)[0][1] == P.INVALID_PRODUCER_EPOCH
    # a newer epoch starts over at sequence 0, anything else is a gap
    assert _append(p, [make_batch(1, pid=9, epoch=3, seq=5)], BATCH_MAX)[0][1] == P.OUT_OF_ORDER_SEQUENCE
    assert _append(p, [make_batch(1, pid=9, epoch=3, seq=0)], BATCH_MAX)[0][:2] == (1, 0)


def test_in_request_sequence_order_and_dedup() -> None:
    p = _leader()
    b0, b1 = make_batch(2, pid=5, epoch=0, seq=0), make_batch(2, pid=5, epoch=0, seq=2)
    res = _append(p, [b0, b1, b0], BATCH_MAX)  # a batch repeated inside one request
    assert [(r[0], r[1]) for r in res] == [(0, 0), (2, 0), (0, 0)]
    assert p.log_end_offset == 4


def test_producer_state_table_directly() -> None:
    t = ProducerStateTable()
    assert t.check(1, 0, 0, 3) is None  # unknown producer: accept
    t.update(1, 0, 0, 3, base_offset=10)
    assert t.check(1, 0, 0, 3) == 10
    assert t.check(1, 0, 3, 1) is None
    assert t.check(-1, -1, -1, 5) is None  # not idempotent: never deduplicated
    assert len(t) == 1
    t.truncate()
    assert len(t) == 0


# -- follower appends -------------------------------------------------------------------------
def _leader_log(batches: int = 4) -> Partition:
    leader = _leader(epoch=2)
    for i in range(batches):
        _append(leader, [make_batch(2, pid=3, epoch=0, seq=2 * i, tag=f"b{i}-")], BATCH_MAX)
    return leader


def test_follower_skips_what_it_has_and_appends_the_rest() -> None:
    leader = _leader_log(4)
    f = _part()
    f.become_follower(1, 2, [1, 2, 3], [1, 2, 3])
    assert f.append_as_follower(leader.read(0, 1 << 20, upto_offset=4)) == 2
    assert f.log_end_offset == 4
    assert f.append_as_follower(leader.read(0, 1 << 20, upto_offset=8)) == 2  # overlaps the first two
    assert f.log_end_offset == 8
    assert _read_all(f) == _read_all(leader)  # byte-identical, epochs included
    assert f.epochs.entries == [(2, 0)]
    # producer state replicated through the headers: a retry on the follower-turned-leader dedups
    f.become_leader(3, [1, 2, 3], [1, 2, 3], now_ms=0)
    assert _append(f, [make_batch(2, pid=3, epoch=0, seq=6, tag="b3-")], BATCH_MAX)[0][:2] == (6, 0)
    assert f.log_end_offset == 8


def test_follower_stops_at_a_gap() -> None:
    leader = _leader_log(4)
    data = leader.read(0, 1 << 20, upto_offset=8)
    views = [bytes(v) for _, v in B.iter_batches(data)]
    f = _part()
    f.become_follower(1, 2, [1, 2, 3], [1, 2, 3])
    assert f.append_as_follower(views[0] + views[2] + views[3]) == 1  # batch 1 missing
    assert f.log_end_offset == 2
    assert f.append_as_follower(views[2]) == 0  # still a gap: nothing written
    assert f.append_as_follower(b"".join(views[1:])) == 3
    assert f.log_end_offset == 8


def test_follower_refuses_a_corrupt_batch() -> None:
    leader = _leader_log(2)
    data = bytearray(leader.read(0, 1 << 20, upto_offset=4))
    data[-1] ^= 0xFF
    f = _part()
    f.become_follower(1, 2, [1, 2, 3], [1, 2, 3])
    with pytest.raises(B.BatchError):
        f.append_as_follower(bytes(data))
    assert f.log_end_offset == 0


# -- high watermark and ISR --------------------------------------------------------------------
def test_high_watermark_follows_the_slowest_isr_member() -> None:
    p = _leader()
    _append(p, [make_batch(5)], BATCH_MAX)
    assert p.high_watermark == 0
    assert p.record_follower_fetch(2, 5, now_ms=10) is False  # broker 3 has nothing yet
    assert p.high_watermark == 0
    assert p.record_follower_fetch(3, 3, now_ms=10) is True
    assert p.high_watermark == 3
    assert p.record_follower_fetch(3, 5, now_ms=20) is True
    assert p.high_watermark == 5
    assert p.record_follower_fetch(9, 5, now_ms=20) is False  # not a replica


def test_high_watermark_with_a_shrunk_isr_and_reads_stop_there() -> None:
    p = _leader(isr=[1, 2])
    _append(p, [make_batch(2), make_batch(3)], BATCH_MAX)
    p.record_follower_fetch(2, 2, now_ms=1)
    assert p.high_watermark == 2
    assert B.split_headers(p.read(0, 1 << 20, p.high_watermark))[-1].next_offset == 2
    assert p.read(2, 1 << 20, p.high_watermark) == b""
    p.update_isr([1])
    assert p.high_watermark == 5  # alone in the ISR: everything is committed


def test_leader_alone_in_isr_commits_at_append() -> None:
    p = _leader(isr=[1])
    _append(p, [make_batch(4)], BATCH_MAX)
    assert p.high_watermark == 4


def test_isr_shrinks_for_a_lagging_follower() -> None:
    p = _leader()
    lag_ms = 1000
    _append(p, [make_batch(2)], BATCH_MAX)
    p.record_follower_fetch(2, 2, now_ms=500)  # caught up
    assert p.isr_changes(now_ms=900, lag_time_max_ms=lag_ms) is None
    # broker 3 never fetched: out once the lag time passes since it became a follower
    assert p.isr_changes(now_ms=1001, lag_time_max_ms=lag_ms) == {1, 2}
    p.pending_isr = {1, 2}
    assert p.isr_changes(now_ms=1001, lag_time_max_ms=lag_ms) is None  # one proposal at a time


def test_isr_expands_when_a_follower_catches_up() -> None:
    p = _part()
    p.become_leader(1, [1, 2, 3], [1, 2], now_ms=0)
    _append(p, [make_batch(3)], BATCH_MAX)
    p.record_follower_fetch(2, 3, now_ms=10)
    assert p.isr_changes(10, 1000) is None  # 3 has not caught up
    p.record_follower_fetch(3, 1, now_ms=20)
    assert p.isr_changes(20, 1000) is None  # behind the HW
    p.record_follower_fetch(3, 3, now_ms=30)
    assert p.isr_changes(30, 1000) == {1, 2, 3}
    # while the expansion is pending the HW counts the larger set
    p.pending_isr = {1, 2, 3}
    _append(p, [make_batch(1)], BATCH_MAX)
    p.record_follower_fetch(2, 4, now_ms=40)
    assert p.high_watermark == 3
    p.record_follower_fetch(3, 4, now_ms=40)
    assert p.high_watermark == 4
    p.update_isr([1, 2, 3])
    assert p.isr == {1, 2, 3} and p.pending_isr is None


def test_follower_high_watermark_from_leader_is_capped_by_its_log() -> None:
    f = _part()
    f.become_follower(2, 1, [1, 2, 3], [1, 2, 3])
    f.append_as_follower(_leader_log(1).read(0, 1 << 20, 2))
    f.set_high_watermark_from_leader(100)
    assert f.high_watermark == 2
    f.set_high_watermark_from_leader(1)
    assert f.high_watermark == 2  # never backwards


# -- epochs and truncation -------------------------------------------------------------------
def test_epoch_cache_end_offset_for(tmp_path: Path) -> None:
    c = EpochCache(tmp_path)
    assert c.end_offset_for(0, 0) == (-1, -1)
    c.assign(1, 0)
    c.assign(3, 10)
    c.assign(3, 12)  # not newer: ignored
    c.assign(2, 11)  # older: ignored
    c.assign(5, 25)
    assert c.entries == [(1, 0), (3, 10), (5, 25)]
    assert c.latest_epoch == 5
    assert c.end_offset_for(0, 40) == (-1, -1)
    assert c.end_offset_for(1, 40) == (1, 10)
    assert c.end_offset_for(2, 40) == (1, 10)  # largest epoch <= 2 is 1
    assert c.end_offset_for(3, 40) == (3, 25)
    assert c.end_offset_for(5, 40) == (5, 40)
    assert c.end_offset_for(9, 40) == (5, 40)
    assert EpochCache(tmp_path).entries == c.entries  # persisted
    c.truncate_from_end(25)
    assert c.entries == [(1, 0), (3, 10)]
    c.truncate_from_start(12)
    assert c.entries == [(3, 10)]
    assert EpochCache(tmp_path).entries == [(3, 10)]


def test_diverging_offset_for_a_returning_replica() -> None:
    leader = _part()
    leader.become_leader(1, [1, 2], [1, 2], 0)
    _append(leader, [make_batch(4)], BATCH_MAX)
    leader.become_leader(2, [1, 2], [1, 2], 0)
    _append(leader, [make_batch(4)], BATCH_MAX)
    assert leader.epochs.entries == [(1, 0), (2, 4)]
    # a follower that wrote 6 records under epoch 1 must cut back to 4
    assert leader.divergence(6, 1) == [1, 4]
    assert leader.divergence(3, 1) is None
    assert leader.divergence(8, 2) is None
    assert leader.divergence(2, -1) is None


def test_truncate_to_rebuilds_producer_state_and_epochs(tmp_path: Path) -> None:
    p = _part(str(tmp_path))
    p.become_leader(1, [1, 2], [1], 0)
    b = [make_batch(2, pid=4, epoch=0, seq=2 * i) for i in range(4)]
    assert [r[0] for r in _append(p, b[:2], BATCH_MAX)] == [0, 2]
    p.become_leader(2, [1, 2], [1], 0)
    assert [r[0] for r in _append(p, b[2:], BATCH_MAX)] == [4, 6]
    assert p.epochs.entries == [(1, 0), (2, 4)]
    p.truncate_to(4)
    assert p.log_end_offset == 4
    assert p.high_watermark == 4
    assert p.epochs.entries == [(1, 0)]
    p.become_leader(3, [1, 2], [1], 0)
    # batch 2 is gone: its retry is written again (not a duplicate), batch 1 still dedups
    assert _append(p, [b[1]], BATCH_MAX)[0][:2] == (2, 0)
    assert _append(p, [b[2]], BATCH_MAX)[0][:2] == (4, 0)
    assert p.log_end_offset == 6
    # a skipped sequence after the truncation is still a gap
    assert _append(p, [make_batch(1, pid=4, epoch=0, seq=9)], BATCH_MAX)[0][1] == P.OUT_OF_ORDER_SEQUENCE


def test_truncate_past_the_end_is_a_no_op() -> None:
    p = _leader(isr=[1])
    _append(p, [make_batch(2)], BATCH_MAX)
    p.truncate_to(10)
    assert p.log_end_offset == 2 and p.high_watermark == 2


def test_reopen_rebuilds_producer_state_from_the_log(tmp_path: Path) -> None:
    engine = MemoryEngine("", EngineConfig())
    p = Partition("t", 0, ME, engine, str(tmp_path))
    p.become_leader(1, [1], [1], 0)
    b0 = make_batch(2, pid=7, epoch=0, seq=0)
    _append(p, [b0], BATCH_MAX)
    again = Partition("t", 0, ME, engine, str(tmp_path))  # same log, fresh state: as after a restart
    again.become_leader(2, [1], [1], 0)
    assert _append(again, [b0], BATCH_MAX)[0][:2] == (0, 0)
    assert again.log_end_offset == 2
