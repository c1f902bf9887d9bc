"""Edges of the answer to a retry over a lowered max.message.bytes: a failed or truncated
original, a fenced producer epoch, a non-idempotent batch, a forgotten producer, a duplicate of
a batch earlier in the same failed write, and the producer end to end."""

from __future__ import annotations

from engines.api import StorageFull
from fabric import protocol as P
from nodes.broker import producers as PR
from tests.unit.fakes import make_batch
from tests.unit.test_partition import BATCH_MAX, _append, _leader

BIG = "x" * 200


def _full(p, monkeypatch):
    def full(*_a, **_k):
        raise StorageFull("No space left on device")
    monkeypatch.setattr(p.engine, "append_many", full)


def test_an_over_limit_duplicate_of_a_batch_in_the_same_failed_write_fails_with_it(monkeypatch) -> None:
    p = _leader()
    small = make_batch(3, pid=9, epoch=0, seq=0)
    big = make_batch(3, pid=9, epoch=0, seq=0, tag=BIG)
    _full(p, monkeypatch)
    res = _append(p, [small, big], 300)
    assert [r[:2] for r in res] == [(-1, P.STORAGE_ERROR)] * 2
    monkeypatch.undo()
    assert p.log_end_offset == 0
    # nothing remembered: a later over-limit retry is refused
    assert _append(p, [big], 300)[0][:2] == (-1, P.RECORD_TOO_LARGE)
    assert _append(p, [small], 300)[0][:2] == (0, 0)


def test_an_over_limit_retry_of_a_failed_write_is_refused(monkeypatch) -> None:
    p = _leader()
    big = make_batch(3, pid=9, epoch=0, seq=0, tag=BIG)
    _full(p, monkeypatch)
    assert _append(p, [big], BATCH_MAX)[0][:2] == (-1, P.STORAGE_ERROR)
    monkeypatch.undo()
    assert _append(p, [big], len(big) - 1)[0][:2] == (-1, P.RECORD_TOO_LARGE)
    assert p.log_end_offset == 0


def test_an_over_limit_retry_of_a_truncated_batch_is_refused() -> None:
    p = _leader()
    big = make_batch(3, pid=9, epoch=0, seq=0, tag=BIG)
    assert _append(p, [make_batch(2), big], BATCH_MAX)[1][:2] == (2, 0)
    p.become_follower(2, 2, [1, 2, 3], [1, 2, 3])
    p.truncate_to(2)
    p.become_leader(3, [1, 2, 3], [1, 2, 3], now_ms=0)
    assert p.log_end_offset == 2
    assert _append(p, [big], len(big) - 1)[0][:2] == (-1, P.RECORD_TOO_LARGE)
    assert p.log_end_offset == 2


def test_an_over_limit_retry_of_a_fenced_producer_epoch_is_refused() -> None:
    p = _leader()
    big = make_batch(3, pid=9, epoch=0, seq=0, tag=BIG)
    assert _append(p, [big], BATCH_MAX)[0][:2] == (0, 0)
    assert _append(p, [make_batch(1, pid=9, epoch=1, seq=0)], BATCH_MAX)[0][:2] == (3, 0)
    assert _append(p, [big], len(big) - 1)[0][:2] == (-1, P.RECORD_TOO_LARGE)
    assert p.log_end_offset == 4


def test_an_over_limit_non_idempotent_resend_is_refused() -> None:
    p = _leader()
    big = make_batch(3, tag=BIG)
    assert _append(p, [big], BATCH_MAX)[0][:2] == (0, 0)
    assert _append(p, [big], len(big) - 1)[0][:2] == (-1, P.RECORD_TOO_LARGE)
    assert p.log_end_offset == 3


def test_an_over_limit_batch_of_a_forgotten_producer_is_refused() -> None:
    p = _leader()
    big = make_batch(3, pid=9, epoch=0, seq=0, tag=BIG)
    p.producers.truncate(forgot_below=1)
    out = p.append_as_leader([big], len(big) - 1, [True])[0]
    assert out[0][:2] == (-1, P.RECORD_TOO_LARGE)
    out = p.append_as_leader([big], len(big) - 1, [False])[0]
    assert out[0][:2] == (-1, P.RECORD_TOO_LARGE)
    assert p.log_end_offset == 0


def test_an_over_limit_duplicate_survives_a_failed_write_of_the_batch_behind_it(monkeypatch) -> None:
    p = _leader()
    a = make_batch(3, pid=9, epoch=0, seq=0, tag=BIG)
    assert _append(p, [a], BATCH_MAX)[0][:2] == (0, 0)
    b = make_batch(2, pid=9, epoch=0, seq=3)
    _full(p, monkeypatch)
    res = _append(p, [a, b], len(a) - 1)
    assert [r[:2] for r in res] == [(0, 0), (-1, P.STORAGE_ERROR)]
    monkeypatch.undo()
    res = _append(p, [a, b], len(a) - 1)
    assert [r[:2] for r in res] == [(0, 0), (3, 0)]
    assert p.log_end_offset == 5


def test_an_over_limit_duplicate_in_a_failed_write_that_evicted_keeps_the_table(monkeypatch) -> None:
    monkeypatch.setattr(PR, "PRODUCERS_MAX", 2)
    p = _leader()
    a = make_batch(1, pid=1, epoch=0, seq=0, tag=BIG)
    assert _append(p, [a, make_batch(1, pid=2, epoch=0, seq=0)], BATCH_MAX)[1][:2] == (1, 0)
    def full(*_a, **_k):
        raise StorageFull("x")
    monkeypatch.setattr(p.engine, "append_many", full)
    res = _append(p, [a, make_batch(1, pid=3, epoch=0, seq=0)], len(a) - 1)
    assert [r[:2] for r in res] == [(0, 0), (-1, P.STORAGE_ERROR)]
    monkeypatch.setattr(p.engine, "append_many", type(p.engine).append_many.__get__(p.engine))
    assert _append(p, [a], len(a) - 1)[0][:2] == (0, 0)
    assert not p.producers.forgot_producers


def test_the_producer_gets_the_original_offsets_after_a_lost_ack_and_a_lowered_limit() -> None:
    from fabric.errors import RequestTimeout
    from tests.unit.test_producer_split_against_a_partition import L1, SplitRig, _outcomes
    rig = SplitRig()
    a = [rig.send("t", b"a%d" % i + b"." * 40) for i in range(10)]
    rig.flush_batches()
    rig.grant_pid()
    # the leader writes it, the answer is lost
    c = rig.clients[L1]
    _, header, payloads, _ = c.of(P.PRODUCE)[-1]
    r, _ = rig.parts["t"].append_as_leader(payloads, rig.limit["t"], [bool(x[3]) for x in header["parts"]])
    assert r[0][:2] == (0, 0)
    c.answer_last(P.PRODUCE, None, err=RequestTimeout("timed out"))
    rig.limit["t"] = 300
    b = [rig.send("t", b"b%d" % i) for i in range(2)]
    rig.flush_batches()
    rig.clock.advance(1000)
    rig.reactor.run_due()
    rig.pump()
    assert _outcomes(a) == list(range(10)), _outcomes(a)
    assert _outcomes(b) == [10, 11], _outcomes(b)
    assert len(rig.log()) == 12
