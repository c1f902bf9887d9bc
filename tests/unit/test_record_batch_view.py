"""``RecordBatchView`` (what ``Consumer.poll_batch`` returns) over real record batches: the same
records, offsets and fields ``decode_batches`` gives, counted and cut from the headers alone,
unpacked only when read."""

from __future__ import annotations

import msgpack
import pytest

from engines import batch as B
from fabric import protocol as P
from fabric.errors import RemoteError
from fabric.records import build_batch, decode_batches, view_batches

TS = 1_700_000_000_000


def _log(*counts: int, base: int = 10) -> bytes:
    """Batches of ``counts`` records at consecutive offsets from ``base`` (as a fetch returns)."""
    out, off = [], base
    for n in counts:
        recs = [(TS + off + i, b"k%d" % (off + i) if i % 2 else None, b"v%d" % (off + i), [["h", b"x"]] if i == 1 else None)
                for i in range(n)]
        batch = bytearray(build_batch(recs))
        B.set_base_offset(batch, off)
        out.append(bytes(batch))
        off += n
    return b"".join(out)


@pytest.mark.parametrize("start,end", [(0, None), (12, None), (10, 17), (13, 14), (16, 100)])
def test_a_view_holds_exactly_the_records_decode_gives(start: int, end: int | None) -> None:
    data = _log(4, 1, 5)  # offsets 10..19
    records = decode_batches("t", 2, data, start, end)
    view = view_batches("t", 2, data, start, end)
    assert view is not None and len(view) == len(records) and view.records() == records
    assert list(view.offsets) == [r.offset for r in records]
    assert (view.first_offset, view.next_offset) == (records[0].offset, records[-1].offset + 1)
    assert view.values == [r.value for r in records] and view.keys == [r.key for r in records]
    assert view.timestamps == [r.timestamp_ms for r in records] and view.headers == [r.headers for r in records]
    assert list(view) == records and (view.topic, view.partition) == ("t", 2)


def test_nothing_in_range_is_no_view() -> None:
    assert view_batches("t", 0, _log(3), 13) is None and view_batches("t", 0, _log(3), 0, 10) is None
    assert view_batches("t", 0, b"") is None


def test_split_cuts_across_batches_without_unpacking() -> None:
    view = view_batches("t", 0, _log(4, 1, 5), 11)  # 11..19
    assert view is not None
    for n in range(1, 10):
        head, rest = view.split(n)
        assert len(head) == n and head.next_offset == 11 + n
        assert rest is not None if n < 9 else rest is None
        if rest is not None:
            assert rest.first_offset == 11 + n and head.records() + rest.records() == view.records()


def test_a_payload_that_is_not_what_its_header_says_fails_at_the_first_read() -> None:
    bad = bytearray(B.build(msgpack.packb([[TS, None, b"v", None]] * 2), 3, TS, TS))  # header says 3
    view = view_batches("t", 0, bytes(bad))
    assert view is not None and len(view) == 3  # counting needs the header only
    with pytest.raises(RemoteError) as e:
        view.values
    assert e.value.code == P.CORRUPT_MESSAGE
