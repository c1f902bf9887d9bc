"""The futures of a ``send_many`` that the buffer cut short (``BufferExhaustedError.futures``)
answer for the records that were queued -- also when keyed records went to several partitions
and so are queued out of the caller's order (``result()`` and ``f[i]`` used to index past
them)."""

from __future__ import annotations

import pytest

from fabric.errors import BufferExhaustedError
from fabric.records import partition_for_key
from tests.unit.driven_producer import answer, driven_producer, send_pass


def test_cut_short_keyed_futures_answer_for_the_queued_records_in_the_callers_order(monkeypatch: pytest.MonkeyPatch) -> None:
    p = driven_producer(monkeypatch, max_block_ms=50, buffer_bytes_max=10_000)
    try:
        keys = [b"k%d" % i for i in range(100)]
        with pytest.raises(BufferExhaustedError) as e:
            p.send_many("t", [b"v" * 150] * 100, keys)
        futures = e.value.futures  # type: ignore[attr-defined]
        queued = sorted(futures.positions)
        assert 0 < len(queued) < 100 and len(futures) == len(queued)
        parts = send_pass(p)
        answer(p, [[1000 * part, 0, ""] for _, part in parts])
        results = futures.result(1)
        assert [md.partition for md in results] == [partition_for_key(keys[i], 3) for i in queued]
        assert [futures[i].result(0).partition for i in range(len(queued))] == [md.partition for md in results]
        assert all(md.offset >= 1000 * md.partition for md in results)
    finally:
        p.sender.stop()
