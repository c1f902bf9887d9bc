"""Records sent one by one are kept, where they can be, as runs of values (keyless, header-less
records of one timestamp and one size: ``BatchState.run_values``) and packed with one join.
Whatever the mix of records -- keys, headers, sizes, timestamps that change every record or
every few hundred, ``send_many`` runs between them, compression, a batch numbered twice -- the
batches are byte for byte what msgpack writes for the same record tuples (``build_batch``,
the way every batch was built before runs), and the futures and delivery callbacks give each
record its own offset, in order."""

from __future__ import annotations

import random
import sys
import threading
from typing import Iterator

import pytest

import fabric.client.futures as futures_module
from fabric import protocol as P
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.futures import RUN_RECORDS_MIN
from fabric.client.producer import RECORD_OVERHEAD_BYTES, Producer
from fabric.clock import ManualClock
from fabric.records import COMPRESSION_CODECS, build_batch, decode_batches, frozen_headers, pack_values
from tests.unit.driven_producer import LEADER, driven_producer

TS = 1_700_000_000_123
SIZES = [0, 1, 100, 255, 256, 300]


def _size(key: bytes | None, value: bytes, headers: tuple | None) -> int:
    """The bytes ``Producer.send`` counts for the record."""
    extra = frozen_headers(headers)[1] if headers is not None else 0  # type: ignore[index]
    return len(value) + (len(key) if key is not None else 0) + RECORD_OVERHEAD_BYTES + extra


def _record(rnd: random.Random, ts: int, n: int) -> tuple:
    """A record: mostly keyless and header-less, of a few sizes."""
    value = (b"%06d" % n + b"v" * rnd.choice(SIZES))[:rnd.choice(SIZES)]
    key = b"k%d" % n if rnd.random() < 0.1 else None
    headers = (("h", b"x" * (n % 3)),) if rnd.random() < 0.05 else None
    return ts, key, value, headers


@pytest.mark.parametrize("seed", range(80))
def test_batches_of_runs_are_the_bytes_msgpack_writes_for_the_record_tuples(seed: int) -> None:
    rnd = random.Random(seed)
    acc = RecordAccumulator(AccumulatorSettings(linger_ms=60_000, batch_records_max=rnd.choice([3, 40, 10_000]),
                                                batch_bytes_max=rnd.choice([1500, 20_000, 1 << 20])),
                            ManualClock(1000), wake=lambda: None)
    one_size = rnd.random() < 0.3  # the common case: one value size, keyless (the record runs)
    every = rnd.choice([1, 2, RUN_RECORDS_MIN - 1, RUN_RECORDS_MIN, 200])  # records per timestamp
    ts, sent = TS, []
    for n in range(rnd.randint(1, 1500)):
        if n % every == 0:
            ts += rnd.choice([1, 1, 1, -3])  # a clock may step back
        if rnd.random() < 0.01:  # a send_many run between the single records
            values = [b"m%05d" % (n + i) for i in range(rnd.randint(1, 30))]
            acc.append_many("t", 0, ts, values, len(values[0]) + RECORD_OVERHEAD_BYTES,
                            lambda a, b, values=values, ts=ts: pack_values(values[a:b], ts))
            sent += [(ts, None, v, None) for v in values]
            continue
        record = (ts, None, b"%06d" % n + b"v" * 94, None) if one_size else _record(rnd, ts, n)
        acc.append("t", 0, *record, _size(*record[1:]))
        sent.append(record)
    codec = COMPRESSION_CODECS[rnd.choice(["none", "none", "zstd", "lz4"])]
    batches = acc.take_ready(1 << 62)  # every batch, in order
    assert sum(b.record_count for b in batches) == len(sent)
    start = 0
    for b in batches:
        records = sent[start:start + b.record_count]
        for sequence in (5, 900):  # built again when renumbered (a producer-id reset)
            assert b.build(compression=codec, producer_id=7, producer_epoch=1, base_sequence=sequence) == \
                build_batch(records, compression=codec, producer_id=7, producer_epoch=1, base_sequence=sequence)
        start += b.record_count


def test_records_counted_at_the_runs_size_join_it_only_if_keyless_and_header_less() -> None:
    """The run is told apart by the size counted: a key or headers of the same total size
    stay apart."""
    acc = RecordAccumulator(AccumulatorSettings(linger_ms=60_000), ManualClock(1000), wake=lambda: None)
    run = [(TS, None, b"abc", None), (TS, None, b"abc", None)]
    after = {0: [(TS, b"k", b"ab", None), (TS, None, b"abc", None)], 1: [(TS, None, b"", (("h", b""),))]}
    for partition, records in after.items():
        for record in run + records:
            acc.append("t", partition, *record, 100)
    for b in acc.take_ready(1 << 62):
        assert b.build(compression=0, producer_id=-1, producer_epoch=-1, base_sequence=-1) == \
            build_batch(run + after[b.partition])


def test_timestamps_that_change_every_few_records_end_the_run_instead_of_packing_one_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    packed: list[int] = []
    real = futures_module.pack_values
    monkeypatch.setattr(futures_module, "pack_values",
                        lambda values, ts, length: packed.append(len(values)) or real(values, ts, length))
    acc = RecordAccumulator(AccumulatorSettings(linger_ms=60_000), ManualClock(1000), wake=lambda: None)
    for i in range(1000):
        acc.append("t", 0, TS + i // 3, None, b"v", None, 25)  # a new millisecond every 3 records
    for i in range(1000):
        acc.append("t", 1, TS + i // 500, None, b"v", None, 25)  # every 500
    # partition 0: the first run of 3 (a batch's first run may be cut short), and another
    # run of 3, then tuples; partition 1: a join per millisecond
    assert packed == [3, 3, 500]
    for b in acc.take_ready(1 << 62):
        b.build(compression=0, producer_id=-1, producer_epoch=-1, base_sequence=-1)
    assert packed == [3, 3, 500, 500]


@pytest.fixture
def producer(monkeypatch: pytest.MonkeyPatch) -> Iterator[Producer]:
    p = driven_producer(monkeypatch, linger_ms=60_000, batch_records_max=700)
    yield p
    p.sender.stop()


def test_futures_and_callbacks_give_each_record_of_a_run_its_offset(producer: Producer) -> None:
    reports: list = []
    futures, sent = [], []
    for i in range(2000):
        ts = TS + i // 300
        value = b"%05d" % i + b"v" * 95 if i % 250 else b"odd one %d" % i  # a few records break the run
        callback = (lambda md, err, i=i: reports.append((i, md.offset, err))) if i % 7 == 0 else None
        futures.append(producer.send("t", value, partition=1, timestamp_ms=ts, on_delivery=callback))
        sent.append((ts, None, value, None))
    producer.accumulator.close_all()
    producer.sender.run_pass()
    client = producer.sender.recording[LEADER]
    [(_, header, payloads, _)] = client.of(P.PRODUCE)
    assert [part[1] for part in header["parts"]] == [1, 1, 1]
    assert payloads == [build_batch(sent[lo:lo + 700]) for lo in (0, 700, 1400)]
    client.answer_last(P.PRODUCE, {"results": [[0, 0, ""], [700, 0, ""], [1400, 0, ""]]})
    assert [f.result(0).offset for f in futures] == list(range(2000))
    assert [(f.result(0).topic, f.result(0).partition) for f in futures[::500]] == [("t", 1)] * 4
    assert reports == [(i, i, None) for i in range(0, 2000, 7)]


def test_appends_from_several_threads_while_batches_are_taken_keep_every_record_once_at_its_future() -> None:
    """Four threads append (runs and, now and then, keyed records) while a fifth takes ready
    batches as the I/O thread does: each future's batch holds its record at its index, every
    record is in exactly one batch, and each thread's records keep their order."""
    clock = ManualClock(1000)
    acc = RecordAccumulator(AccumulatorSettings(linger_ms=1, batch_bytes_max=5000), clock, wake=lambda: None)
    futures: dict[int, list] = {}
    taken: list = []
    done = threading.Event()

    def produce(thread: int) -> None:
        mine = futures[thread] = []
        for n in range(3000):
            value = b"%d-%06d" % (thread, n)
            key = b"k" if n % 97 == 0 else None
            mine.append((value, acc.append("t", n // 700 % 2, TS + n // 50, key, value, None,
                                           _size(key, value, None))))

    def take() -> None:
        while not done.is_set():
            clock.advance(1)
            taken.extend(acc.take_ready(clock.now_ms()))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # the threads take turns every few bytecodes, inside appends too
    try:
        taker = threading.Thread(target=take)
        taker.start()
        threads = [threading.Thread(target=produce, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        done.set()
        taker.join()
    finally:
        sys.setswitchinterval(interval)
    taken.extend(acc.take_ready(1 << 62))
    held = {}
    for b in taken:
        data = b.build(compression=0, producer_id=-1, producer_epoch=-1, base_sequence=-1)
        held[id(b)] = [r.value for r in decode_batches("t", b.partition, data)]
    assert sum(map(len, held.values())) == 4 * 3000
    for thread, mine in futures.items():
        assert [held[id(f.batch)][f.index] for _, f in mine] == [value for value, _ in mine]
        order = [(taken.index(f.batch), f.index) for _, f in mine if f.partition == 0]
        assert order == sorted(order)
