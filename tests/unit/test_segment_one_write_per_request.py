"""The segment engine writes the batches of one append_many call that land in one segment with
one pwritev (one write per request: a produce or a replicated message of several batches), and
what it leaves on disk and in memory is what writing them one by one left: the same files, the
same index entries, offsets, timestamps and rolls."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from engines import segment_file
from engines.conformance import make_batch
from tests.unit.builders_segment import open_engine


def _batches(start: int, count: int) -> list[bytes]:
    return [make_batch(i, record_count=1 + i % 4, payload_bytes=500, timestamp_ms=1_000 + (i * 7919) % 5_000)
            for i in range(start, start + count)]


def _counting_pwritev() -> tuple[list[int], object]:
    real, calls = os.pwritev, []

    def pwritev(fd: int, buffers: list, position: int) -> int:
        calls.append(len(buffers) // 2)  # batches in this write
        return real(fd, buffers, position)
    return calls, pwritev


def test_the_batches_of_one_call_in_one_segment_go_out_in_one_write(tmp_path: Path) -> None:
    e = open_engine(tmp_path)  # 16 KiB segments: 20 batches of ~530 bytes fit one
    calls, pwritev = _counting_pwritev()
    with mock.patch("engines.segment_file.os.pwritev", pwritev):
        e.append_many(_batches(0, 20))
    assert calls == [20] and e.segment_count == 1
    e.close()


def test_a_call_that_rolls_writes_once_per_segment(tmp_path: Path) -> None:
    e = open_engine(tmp_path)
    calls, pwritev = _counting_pwritev()
    with mock.patch("engines.segment_file.os.pwritev", pwritev):
        e.append_many(_batches(0, 70))  # ~37 KiB: three segments
    assert e.segment_count == 3 and len(calls) == 3 and sum(calls) == 70
    e.close()


def test_more_batches_than_one_write_holds_go_out_in_as_few_writes_as_the_limit_allows(tmp_path: Path,
                                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(segment_file, "IOV_BATCHES_MAX", 8)
    e = open_engine(tmp_path)
    calls, pwritev = _counting_pwritev()
    with mock.patch("engines.segment_file.os.pwritev", pwritev):
        e.append_many(_batches(0, 20))
    assert calls == [8, 8, 4]
    e.close()


@pytest.mark.parametrize("per_call", [1, 3, 20, 70])
def test_written_together_or_one_by_one_the_log_is_the_same(tmp_path: Path, per_call: int) -> None:
    one, many = open_engine(tmp_path / "one"), open_engine(tmp_path / "many")
    batches = _batches(0, 140)
    for b in batches:
        one.append(b)
    offsets = []
    for i in range(0, len(batches), per_call):
        offsets += many.append_many(batches[i:i + per_call])
    expected_offsets, next_offset = [], 0
    for i in range(len(batches)):
        expected_offsets.append(next_offset)
        next_offset += 1 + i % 4
    assert offsets == expected_offsets and many.log_end_offset == one.log_end_offset == next_offset
    for a, b in zip(one._segments, many._segments, strict=True):
        assert (a.base_offset, a.size_bytes, a.next_offset, a.first_timestamp_ms, a.last_timestamp_ms,
                a.max_timestamp_ms) == (b.base_offset, b.size_bytes, b.next_offset, b.first_timestamp_ms,
                                        b.last_timestamp_ms, b.max_timestamp_ms)
        assert Path(a.log_path).read_bytes() == Path(b.log_path).read_bytes()
        a.index.write_pending(sync=False)
        b.index.write_pending(sync=False)
        assert Path(a.index.path).read_bytes() == Path(b.index.path).read_bytes()
    for offset in (0, 5, 77, next_offset - 1):  # reads through the index land alike
        assert many.read(offset, 4096) == one.read(offset, 4096)
    one.close()
    many.close()


def test_a_short_write_finishes_with_the_rest_of_the_same_bytes(tmp_path: Path) -> None:
    """pwritev may write less than asked (a regular file near a full disk): the rest follows
    at the right place, and the file is what one whole write leaves."""
    short, whole = open_engine(tmp_path / "short"), open_engine(tmp_path / "whole")
    batches = _batches(0, 10)
    real, cut = os.pwritev, {"done": False}

    def first_short(fd: int, buffers: list, position: int) -> int:
        if not cut["done"]:
            cut["done"] = True
            head = bytes(buffers[0]) + bytes(buffers[1])[:1000]  # part of the first two iovecs
            return os.pwrite(fd, head, position)
        return real(fd, buffers, position)

    with mock.patch("engines.segment_file.os.pwritev", first_short):
        short.append_many(batches)
    whole.append_many(batches)
    assert cut["done"]
    assert Path(short._active.log_path).read_bytes() == Path(whole._active.log_path).read_bytes()
    assert short.read(0, 1 << 20) == whole.read(0, 1 << 20)
    short.close()
    whole.close()
