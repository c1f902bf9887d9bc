"""The consumer's fast path for batches whose records are all laid out alike
(``fabric.fixed_records``): it gives exactly what msgpack gives, is taken for the batches
``send_many`` and ``send()`` of equal-sized values build, and is never taken for any other
shape (keys, headers, mixed lengths or timestamp widths), which msgpack decodes as before."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engines import batch as B
from fabric import fixed_records as F
from fabric import records as R
from fabric.errors import RemoteError
from fabric.records import Record, build_batch, build_batch_from_chunks, pack_values, view_batches

TS = 1_700_000_000_000


def _batch(records: list[tuple], base: int = 0, compression: int = B.COMPRESSION_NONE) -> bytes:
    b = bytearray(build_batch(records, compression=compression))
    B.set_base_offset(b, base)
    return bytes(b)


def _reference(topic: str, partition: int, data: bytes) -> list[Record]:
    """The records of ``data`` decoded by msgpack alone, record by record."""
    out = []
    for h, view in B.iter_batches(data):
        payload = R._decompress(view[B.HEADER_BYTES:], h.compression)
        for i, r in enumerate(msgpack.unpackb(payload, raw=False, use_list=False)):
            out.append(Record(topic, partition, h.base_offset + i, *r))
    return out


def _layout_of(data: bytes) -> F.FixedLayout | None:
    h = B.parse_header(data)
    return F.fixed_layout(data, B.HEADER_BYTES, h.size_bytes, h.record_count)


@pytest.fixture
def no_msgpack(monkeypatch: pytest.MonkeyPatch) -> None:
    """Reading a view must not unpack with msgpack (the fast path must be the one taken)."""
    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("msgpack.unpackb called: the fixed-layout path was not taken")
    monkeypatch.setattr(R.msgpack, "unpackb", refuse)


@pytest.mark.parametrize("length", [0, 1, 100, 255, 256, 70_000])
@pytest.mark.parametrize("timestamp", [0, 127, 200, 70_000, TS, -100, -40_000])
def test_equal_records_are_read_without_msgpack(length: int, timestamp: int, no_msgpack: None) -> None:
    values = [bytes([i % 251]) * length for i in range(20)]
    data = _batch([(timestamp, None, v, None) for v in values], base=5)
    view = view_batches("t", 1, data)
    assert view is not None and view.values == values
    assert view.timestamps == [timestamp] * 20 and view.keys == [None] * 20 and view.headers == [None] * 20
    assert view.records() == [Record("t", 1, 5 + i, timestamp, None, v, None) for i, v in enumerate(values)]


def test_send_many_batches_longer_than_one_struct_are_read_without_msgpack(no_msgpack: None) -> None:
    n = F.UNPACK_RECORDS_MAX * 2 + 7
    values = [b"%08d" % i for i in range(n)]
    chunks = pack_values(values[:1000], TS) + pack_values(values[1000:], TS + 1)
    data = build_batch_from_chunks(chunks, n, TS, TS + 1)
    view = view_batches("t", 0, data, start_offset=3, end_offset=n - 2)
    assert view is not None and view.values == values[3:n - 2]
    assert view.timestamps == [TS] * 997 + [TS + 1] * (n - 2 - 1000)
    head, rest = view.split(500)
    assert rest is not None and head.values + rest.values == values[3:n - 2]


@pytest.mark.parametrize("compression", [B.COMPRESSION_ZSTD, B.COMPRESSION_LZ4])
def test_compressed_equal_records_take_the_fast_path(compression: int, no_msgpack: None) -> None:
    values = [b"v%03d" % i for i in range(300)]
    data = _batch([(TS, None, v, None) for v in values], compression=compression)
    assert view_batches("t", 0, data).values == values  # type: ignore[union-attr]


@pytest.mark.parametrize("records", [
    [(TS, None, b"aa", None), (TS, b"", b"a", None)],            # same size: a key where a nil was
    [(TS, None, b"a", None), (TS, None, b"a", [["h", b""]])],     # headers
    [(TS, None, b"aa", None), (TS, None, b"a", None)],            # mixed value lengths
    [(TS, None, b"a", None), (5, None, b"a", None)],              # mixed timestamp widths
    [(5, None, b"a", None), (200, None, b"a", None)],             # fixint, then uint8
    [(-1, None, b"a", None), (-2, None, b"a", None)],             # negative fixints
    [(TS, b"k", b"a", None), (TS, b"k", b"a", None)],             # keyed
    [(TS, None, "text", None), (TS, None, "text", None)],         # str, not bin
], ids=["key-same-size", "headers", "lengths", "ts-widths", "fixint-uint8", "neg-fixint", "keyed", "str"])
def test_any_other_shape_is_not_fixed_and_reads_as_msgpack_reads_it(records: list[tuple]) -> None:
    data = _batch(records, base=9)
    assert _layout_of(data) is None
    view = view_batches("t", 0, data)
    assert view is not None and view.records() == _reference("t", 0, data)
    assert view.values == [r[2] for r in records] and view.keys == [r[1] for r in records]


def test_a_later_record_that_breaks_the_layout_is_seen() -> None:
    # the first 999 records fixed, the last one keyed and one byte shorter in value: the same
    # total length, so only the per-position checks can tell
    records = [(TS, None, b"xy", None)] * 999 + [(TS, b"", b"x", None)]
    data = _batch(records)
    assert len(data) == len(_batch([(TS, None, b"xy", None)] * 1000))
    assert _layout_of(data) is None
    assert view_batches("t", 0, data).keys[-1] == b""  # type: ignore[union-attr]


def test_a_corrupt_fixed_looking_payload_still_fails_with_corrupt_message() -> None:
    good = _batch([(TS, None, b"ab", None)] * 3)
    bad = bytearray(B.build(bytes(good[B.HEADER_BYTES:]) + b"\xc0", 3, TS, TS))  # one byte of trailing junk
    view = view_batches("t", 0, bytes(bad))
    with pytest.raises(RemoteError):
        view.values  # type: ignore[union-attr]


def test_a_view_over_a_memoryview_or_bytearray_reads_the_same() -> None:
    data = _batch([(TS, None, b"%d" % (i % 10), None) for i in range(40)], base=2)
    for buf in (memoryview(data), bytearray(data)):
        assert view_batches("t", 0, buf, 5).values == [b"%d" % (i % 10) for i in range(3, 40)]  # type: ignore[union-attr]


_record = st.tuples(st.integers(-2**63, 2**63 - 1), st.none() | st.binary(max_size=3), st.binary(max_size=300),
                    st.none() | st.just([["h", b"v"]]))


@settings(max_examples=200, deadline=None)
@given(st.lists(_record, min_size=1, max_size=40), st.integers(0, 39), st.booleans())
def test_every_batch_reads_as_msgpack_reads_it(records: list[tuple], start: int, alike: bool) -> None:
    if alike:  # the shape the fast path takes: one value length, no key, no headers
        records = [(ts, None, v[:1] * 5, None) for ts, _, v, _ in records]
    data = _batch(records, base=0)
    view = view_batches("t", 0, data, start_offset=min(start, len(records) - 1))
    expected = _reference("t", 0, data)[min(start, len(records) - 1):]
    assert view is not None and view.records() == expected
    assert view.values == [r.value for r in expected] and view.timestamps == [r.timestamp_ms for r in expected]
    assert view.keys == [r.key for r in expected] and view.headers == [r.headers for r in expected]
