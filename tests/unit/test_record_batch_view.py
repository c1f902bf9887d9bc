"""``RecordBatchView`` (what ``Consumer.poll_batch`` returns) over real record batches: the same
records, offsets and fields ``decode_batches`` gives, counted and cut from the headers alone,
unpacked only when read."""

from __future__ import annotations

import msgpack
import pytest

from engines import batch as B
from fabric import protocol as P
from fabric.errors import RemoteError
from fabric import records as R
from fabric.records import (COMPRESSION_CODECS, build_batch, build_batch_from_chunks, decode_batches, pack_values,
                            view_batches)

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


def _one_big_batch(kind: str, n: int = 9_000) -> bytes:
    if kind == "fixed":  # keyless, header-less, one value length: read by struct unpacks
        chunks = pack_values([b"%05d" % i + b"x" * 95 for i in range(n)], TS, 100)
        return build_batch_from_chunks(chunks, n, TS, TS)
    records = [(TS + i, b"k%d" % i, b"v%d" % i, None) for i in range(n)]
    return build_batch(records, compression=COMPRESSION_CODECS["zstd" if kind == "zstd" else "none"])


@pytest.mark.parametrize("kind", ["fixed", "keyed", "zstd"])
def test_reading_a_batch_in_small_splits_decodes_it_once(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A consumer polling 500 records at a time out of a 9,000-record batch reads each split
    view: the batch is decompressed, checked and unpacked once for all of them, and a fixed
    batch's columns are unpacked for the split's records only -- not the whole batch 18 times."""
    data = _one_big_batch(kind)
    expected = [r.value for r in decode_batches("t", 0, data)]
    decodes: list[int] = []
    unpacked: list[int] = []
    real_fixed, real_unpack, real_column = R._fixed, R._unpack, R.fixed_column
    monkeypatch.setattr(R, "_fixed", lambda t, p, s: decodes.append(s.base_offset) or real_fixed(t, p, s))
    monkeypatch.setattr(R, "_unpack", lambda t, p, s: decodes.append(s.base_offset) or real_unpack(t, p, s))
    monkeypatch.setattr(R, "fixed_column", lambda buf, start, layout, lo, hi, ts: unpacked.append(hi - lo)
                        or real_column(buf, start, layout, lo, hi, ts))
    rest = view_batches("t", 0, data)
    values: list[bytes] = []
    records: list = []
    while rest is not None:
        head, rest = rest.split(500)
        values += head.values
        records += head.records()
    assert values == expected and len(records) == 9_000
    assert [r.offset for r in records] == list(range(9_000)) and [r.value for r in records] == values
    assert len(decodes) <= 2  # the layout check, then (not fixed) the unpack: once per batch
    assert sum(unpacked) == (3 * 9_000 if kind == "fixed" else 0)  # values; then records() reads both


def test_a_view_kept_alive_pins_no_batch_read_to_its_end() -> None:
    """Views read in order (a consumer's polls) take each batch out of the shared decode once
    a view reaches the batch's end: one view the application keeps does not hold every batch of
    the fetch decoded."""
    data = b"".join(build_batch([(TS + i, b"k%d" % i, b"v" * 50, None) for i in range(1000)]) for _ in range(20))
    rest = view_batches("t", 0, data)
    first = None
    while rest is not None:
        head, rest = rest.split(501)  # cuts every batch
        head.records()
        first = first or head
    assert first is not None and len(first._shared) <= 1
    assert [r.offset for r in first.records()] == list(range(501))  # read again out of order: decoded again
