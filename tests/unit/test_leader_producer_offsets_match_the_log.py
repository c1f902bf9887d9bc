"""``Partition.append_as_leader`` records each idempotent batch's producer state before the
write, at offsets it counts itself (the log end read once, then a running sum over the batches
of the call), and undoes it when the write fails. Whatever a call holds -- several batches of
one producer, duplicates, gaps, old epochs, a new producer epoch, the sequence wrap, a batch
refused for its size or CRC between written ones -- and whether its write fails or not, the
producer table must be what the log says: equal to a table rebuilt from the batches in the
log, and every offset answered must be where the log holds that batch."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from engines import batch as B
from engines.api import StorageFull
from nodes.broker.partition import Partition
from nodes.broker.producers import ProducerStateTable
from tests.unit.fakes import broker_core, make_batch

CALLS = 120
PRODUCERS = (7, 8, 9)
LIMIT_BYTES = 1 << 20
SMALL_LIMIT_BYTES = 200  # under a batch of 5 records: refused as too large, the rest written


def _log_headers(part: Partition) -> list[B.BatchHeader]:
    headers: list[B.BatchHeader] = []
    offset = part.log_start_offset
    while offset < part.log_end_offset:
        data = part.engine.read(offset, 1 << 20)
        headers += B.split_headers(data)
        offset = headers[-1].next_offset
    return headers


def _table(table: ProducerStateTable) -> dict:
    return {pid: (e.epoch, list(e.batches)) for pid, e in table._producers.items()}


def _rebuilt(headers: list[B.BatchHeader]) -> dict:
    table = ProducerStateTable()
    for h in headers:
        table.update(h.producer_id, h.producer_epoch, h.base_sequence, h.record_count, h.base_offset)
    return _table(table)


class _Producers:
    """The batches a few idempotent producers send: mostly the next in sequence, some retries,
    gaps, older and newer epochs (a seeded mix, so that every decision is taken)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.next_seq = {7: 0, 8: 0, 9: 2**31 - 3}  # producer 9 crosses the sequence wrap
        self.epoch = dict.fromkeys(PRODUCERS, 0)

    def batch(self) -> bytes:
        rng = self.rng
        n = rng.choice([1, 1, 2, 5])
        if rng.random() < 0.15:
            return make_batch(n)  # not idempotent
        pid = rng.choice(PRODUCERS)
        seq, epoch, kind = self.next_seq[pid], self.epoch[pid], rng.random()
        if kind < 0.1:
            seq = (seq - rng.choice([1, 2, 5])) % 2**31  # a retry of an earlier batch, or behind it
        elif kind < 0.15:
            seq = (seq + 1) % 2**31  # a gap
        elif kind < 0.18:
            epoch, seq = epoch + 1, 0  # a new producer epoch
        elif kind < 0.2:
            epoch = max(0, epoch - 1)  # fenced
        data = make_batch(n, pid=pid, epoch=epoch, seq=seq)
        if rng.random() < 0.04:
            data = data[:-1] + bytes([data[-1] ^ 1])  # a CRC mismatch
        return data

    def resume(self, table: dict) -> None:
        """Each producer goes on after its last batch the log holds (as a client whose failed
        batches are failed goes on)."""
        for pid, (epoch, batches) in table.items():
            self.next_seq[pid], self.epoch[pid] = (batches[-1][1] + 1) % 2**31, epoch


@pytest.mark.parametrize("seed", range(3))
def test_the_producer_table_is_what_the_log_says(tmp_path: Path, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(seed)
    part = broker_core(tmp_path, engine="segment").open_partition("t", 0, {})
    part.become_leader(3, [1], [1], now_ms=0)
    producers = _Producers(rng)
    written = failed = 0
    for _ in range(CALLS):
        batches = [producers.batch() for _ in range(rng.choice([1, 2, 3, 4]))]
        possibly_written = [rng.random() < 0.5 for _ in batches]
        full = rng.random() < 0.15
        if full:
            def refuse(*args: object, **kwargs: object) -> list[int]:
                raise StorageFull("no space left on device")
            monkeypatch.setattr(part.engine, "append_many", refuse)
        limit = SMALL_LIMIT_BYTES if rng.random() < 0.1 else LIMIT_BYTES
        results, stored = part.append_as_leader(batches, limit, possibly_written)
        monkeypatch.undo()
        written += len(stored)
        failed += full and any(code != 0 for _, code, _ in results)
        headers = _log_headers(part)
        assert _table(part.producers) == _rebuilt(headers)
        producers.resume(_table(part.producers))
        at = {h.base_offset: h for h in headers}
        for data, (offset, code, _) in zip(batches, results):
            if code == 0:
                sent, held = B.parse_header(data), at[offset]
                assert (held.producer_id, held.producer_epoch, held.base_sequence, held.record_count) == \
                    (sent.producer_id, sent.producer_epoch, sent.base_sequence, sent.record_count)
    assert written > CALLS and failed > 5  # the table was checked after writes and after failed ones
