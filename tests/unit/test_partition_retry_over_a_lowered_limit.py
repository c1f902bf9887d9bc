"""A retry of a batch already written, refused as too large because the topic's
max.message.bytes fell in between, was answered record_too_large: the producer was told a
write failed that is in the log (and, its batch possibly written, could not split it). The
limit guards what is written; a batch the log already holds is answered as any retry is, with
its original offset. A batch that is not such a retry is still refused, and nothing written."""

from __future__ import annotations

from fabric import protocol as P
from tests.unit.fakes import make_batch
from tests.unit.test_partition import BATCH_MAX, _append, _leader


def test_a_retry_over_a_lowered_limit_answers_its_original_offset() -> None:
    p = _leader()
    first, second = make_batch(3, pid=9, epoch=0, seq=0, tag="x" * 200), make_batch(2, pid=9, epoch=0, seq=3)
    assert [r[:2] for r in _append(p, [first, second], BATCH_MAX)] == [(0, 0), (3, 0)]
    lowered = len(first) - 1  # the topic's max.message.bytes fell below the batch, then its ack was lost
    assert [r[:2] for r in _append(p, [first, second], lowered)] == [(0, 0), (3, 0)]
    assert p.log_end_offset == 5


def test_an_oversized_batch_that_is_no_retry_is_refused_and_not_written() -> None:
    p = _leader()
    assert _append(p, [make_batch(3, pid=9, epoch=0, seq=0)], BATCH_MAX)[0][:2] == (0, 0)
    follows = make_batch(3, pid=9, epoch=0, seq=3, tag="x" * 200)
    behind = make_batch(2, pid=9, epoch=0, seq=1, tag="x" * 200)  # overlaps, not identical: no retry
    unknown = make_batch(3, pid=7, epoch=0, seq=0, tag="x" * 200)
    corrupt = bytearray(make_batch(3, pid=9, epoch=0, seq=0, tag="x" * 200))
    corrupt[-1] ^= 0xFF
    res = _append(p, [follows, behind, unknown, bytes(corrupt)], 300)
    assert [r[:2] for r in res] == [(-1, P.RECORD_TOO_LARGE)] * 4
    assert p.log_end_offset == 3
