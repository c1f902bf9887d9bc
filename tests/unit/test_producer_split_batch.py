"""A batch the leader refuses as too large (its topic's max.message.bytes fell under it, and
the producer's metadata did not know yet) is sent again in two pieces, and a piece refused
again is split again, down to single records (as Kafka's producer does): no record under the
limit is lost to a stale bound. The pieces keep the batch's producer id and sequence numbers,
so the batches behind it keep theirs; each record's future, delivery report and outcome get
its own piece's offset and error. The sender is the real one with recording RPC clients."""

from __future__ import annotations

from typing import Any

import pytest

from engines import batch as B
from fabric import protocol as P
from fabric.records import decode_batches
from tests.unit.test_producer_send_many import LEADER, Rig

TOO_LARGE = [-1, P.RECORD_TOO_LARGE, "batch of 2000 bytes is over 1024 (the topic's max.message.bytes)"]


@pytest.fixture
def rig() -> Any:
    r = Rig(batch_records_max=10)
    yield r
    r.close()


def _produces(rig: Rig) -> list:
    return rig.clients[LEADER].of(P.PRODUCE)


def _answer(rig: Rig, *results: list) -> None:
    rig.clients[LEADER].answer_last(P.PRODUCE, {"results": [list(r) for r in results]})
    rig.sender.run_pass()  # the pieces go at once (a test needs no backoff)


def _sent(rig: Rig) -> list[tuple[int, int, list[bytes]]]:
    """The last request's batches: (base sequence, producer id, values)."""
    out = []
    for data in _produces(rig)[-1][2]:
        h = B.parse_header(data)
        out.append((h.base_sequence, h.producer_id, [r.value for r in decode_batches("t", 0, data)]))
    return out


def _queue(rig: Rig, n: int = 10) -> tuple[list, list, Any]:
    reports: list = []
    values = [b"v%d" % i for i in range(n)]
    futures = [rig.one(v, on_delivery=lambda md, err: reports.append((md.offset if md else None, err))) for v in values]
    rig.payloads()
    return values, reports, futures


def test_a_refused_batch_goes_again_in_two_pieces_with_its_sequence_numbers(rig: Rig) -> None:
    values, reports, futures = _queue(rig)
    [(seq, pid, sent)] = _sent(rig)
    assert sent == values and seq == 0 and pid == 7
    _answer(rig, TOO_LARGE)
    assert _sent(rig) == [(0, 7, values[:5]), (5, 7, values[5:])]
    assert not futures[0].done()
    _answer(rig, [100, 0, ""], [105, 0, ""])
    assert [f.result(0).offset for f in futures] == list(range(100, 110))
    assert sorted(reports) == [(100 + i, None) for i in range(10)]
    assert rig.accumulator._buffered_bytes == 0 and rig.accumulator._unfinished == set()
    assert rig.sender.splits == 1 and rig.sender.producer_id == 7  # no producer-id reset


def test_pieces_written_apart_keep_their_own_offsets(rig: Rig) -> None:
    values, reports, futures = _queue(rig)
    _answer(rig, TOO_LARGE)
    _answer(rig, [100, 0, ""], [300, 0, ""])  # another producer's batch landed between them
    assert [f.result(0).offset for f in futures] == [100, 101, 102, 103, 104, 300, 301, 302, 303, 304]
    assert sorted(reports) == sorted([(100 + i, None) for i in range(5)] + [(300 + i, None) for i in range(5)])


def test_a_piece_refused_again_is_split_again(rig: Rig) -> None:
    values, _, futures = _queue(rig)
    _answer(rig, TOO_LARGE)
    # the first half is still too large; the second, whose sequence follows it, is out of order
    _answer(rig, TOO_LARGE, [-1, P.OUT_OF_ORDER_SEQUENCE, ""])
    assert _sent(rig) == [(0, 7, values[:2]), (2, 7, values[2:5]), (5, 7, values[5:])]
    _answer(rig, [40, 0, ""], [42, 0, ""], [45, 0, ""])
    assert [f.result(0).offset for f in futures] == list(range(40, 50))
    assert rig.sender.splits == 2


def test_a_batch_behind_which_its_partition_was_written_is_not_split(rig: Rig) -> None:
    """Pieces sent after a later batch of the partition was written would land after it: the
    refused batch fails as record_too_large instead, and the partition's order holds."""
    from fabric.errors import RemoteError
    first = [rig.one(b"a%d" % i) for i in range(10)]
    second = [rig.one(b"b%d" % i) for i in range(10)]
    rig.payloads()
    _answer(rig, TOO_LARGE, [100, 0, ""])
    with pytest.raises(RemoteError) as e:
        first[0].result(0)
    assert e.value.code == P.RECORD_TOO_LARGE and rig.sender.splits == 0
    assert [f.result(0).offset for f in second] == list(range(100, 110))


def test_a_failed_piece_fails_its_records_only(rig: Rig) -> None:
    from fabric.errors import RemoteError
    values, reports, futures = _queue(rig)
    _answer(rig, TOO_LARGE)
    _answer(rig, [100, 0, ""], [-1, P.INVALID_RECORD, "no"])
    assert [f.result(0).offset for f in futures[:5]] == list(range(100, 105))
    for f in futures[5:]:
        with pytest.raises(RemoteError) as e:
            f.result(0)
        assert e.value.code == P.INVALID_RECORD and f.exception(0) is e.value
    assert sorted(r for r in reports if r[1] is None) == [(100 + i, None) for i in range(5)]
    assert [r[0] for r in reports if r[1] is not None] == [None] * 5
    assert rig.accumulator._buffered_bytes == 0


def test_send_many_outcomes_follow_the_pieces(rig: Rig) -> None:
    values = [b"m%d" % i for i in range(10)]
    from fabric.client.futures import RecordFutures
    futures = RecordFutures(rig.many(values))
    rig.payloads()
    _answer(rig, TOO_LARGE)
    _answer(rig, [100, 0, ""], [-1, P.INVALID_RECORD, "no"])
    positions, partitions, offsets, errors = futures.outcomes(0)
    assert list(positions) == list(range(10)) and partitions == [0] * 10
    assert offsets == [100, 101, 102, 103, 104] + [-1] * 5
    assert errors[:5] == [None] * 5 and all(e is not None and e.code == P.INVALID_RECORD for e in errors[5:])
    assert futures.exception(0) is errors[5]


def test_a_single_record_too_large_fails_and_is_not_split(rig: Rig) -> None:
    from fabric.errors import RemoteError
    _, _, futures = _queue(rig, 1)
    _answer(rig, TOO_LARGE)
    with pytest.raises(RemoteError) as e:
        futures[0].result(0)
    assert e.value.code == P.RECORD_TOO_LARGE and rig.sender.splits == 0
