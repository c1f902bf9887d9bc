"""``Producer.send_many`` and the batch path under it: records packed in runs by C-backed calls
(``fabric.records.pack_values``/``pack_records``) make exactly the batches the same records
sent one at a time make; keys reach the partitions ``send`` would pick; order, delivery
reports and the local errors hold. The sender is the real one with recording RPC clients
(tests/unit/fakes.py); the payloads are decoded as a consumer decodes them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from fabric import protocol as P
from fabric.client.accumulator import AccumulatorSettings, RecordAccumulator
from fabric.client.metadata_cache import MetadataCache
from fabric.client.producer import RECORD_OVERHEAD_BYTES, Producer
from fabric.client.sender import Sender, SenderSettings
from fabric.clock import ManualClock
from fabric.errors import BufferExhaustedError, ClientTimeoutError, FabricError, RecordSizeExceededError, TopicNotInMetadataError
from fabric.metadata import ClusterMetadata
from fabric.records import (array_header, build_batch, build_batch_from_chunks, decode_batches, pack_records,
                            pack_values, partition_for_key)
from tests.unit.fakes import FakeReactor, RecordingClient

NOWHERE = "127.0.0.1:9"  # nothing listens: these tests never reach the network
TS = 1_700_000_000_123
LEADER = "tcp://127.0.0.1:1"
COORDINATOR = "tcp://127.0.0.1:9"


def _md(partitions: int = 3) -> ClusterMetadata:
    return ClusterMetadata.from_wire({
        "version": 1, "cluster": "c", "coordinator": COORDINATOR,
        "brokers": [[1, "127.0.0.1", 1, 101, True]],
        "topics": {"t": {"configs": {}, "partitions": [[1, 3, [1], [1]]] * partitions}}})


# -- packing: the same bytes as msgpack over the whole list -------------------------------------
@pytest.mark.parametrize("values", [[b"v" * 100] * 1000, [b"a"], [b""] * 3, [b"x" * 300] * 17,
                                    [bytes(n) for n in range(300)], [bytearray(b"xy")] * 20,
                                    [b"w" * 255] * 3, [b"x" * 256] * 3, [b"y" * 65535] * 2, [b"z" * 65536] * 2])
def test_packed_values_are_the_bytes_msgpack_writes_for_the_records(values: list) -> None:
    records = [(TS, None, v, None) for v in values]
    assert b"".join([array_header(len(values)), *pack_values(values, TS)]) == msgpack.packb(records, use_bin_type=True)
    half = len(values) // 2
    chunks = pack_values(values[:half], TS) + pack_records(records[half:]) if half else pack_values(values, TS)
    assert build_batch_from_chunks(chunks, len(values), TS, TS, producer_id=7, producer_epoch=1, base_sequence=5) == \
        build_batch(records, producer_id=7, producer_epoch=1, base_sequence=5)


def test_array_headers_match_msgpack_at_every_size_class() -> None:
    for n in (0, 1, 15, 16, 65535, 65536):
        assert msgpack.packb([None] * n).startswith(array_header(n)) and len(msgpack.packb([None] * n)) == \
            len(array_header(n)) + n


# -- through the real accumulator and sender ----------------------------------------------------
class Rig:
    def __init__(self, **settings: int) -> None:
        self.clock = ManualClock(1000)
        self.reactor = FakeReactor(self.clock)
        self.accumulator = RecordAccumulator(AccumulatorSettings(**{"linger_ms": 0, **settings}), self.clock,
                                             wake=lambda: None)
        metadata = MetadataCache(wake=lambda: None)
        metadata.update(_md(1))
        self.clients: dict[str, RecordingClient] = {}
        self.sender = Sender(SenderSettings(acks=-1, idempotent=True), self.accumulator, metadata, [COORDINATOR],
                             clock=self.clock, client_factory=lambda ep: self.clients.setdefault(ep, RecordingClient()))
        self.sender.attach(self.reactor)

    def many(self, values: list[bytes], **kw: Any) -> list:
        sizes: list[int] | int = [len(v) + RECORD_OVERHEAD_BYTES for v in values]
        if len(set(sizes)) == 1:  # as send_many passes fixed-size records: one size for all
            sizes = sizes[0]
        return self.accumulator.append_many("t", 0, TS, values, sizes, lambda a, b: pack_values(values[a:b], TS), **kw)

    def one(self, value: bytes, **kw: Any) -> Any:
        return self.accumulator.append("t", 0, TS, None, value, None, len(value) + RECORD_OVERHEAD_BYTES, **kw)

    def payloads(self) -> list[bytes]:
        """Send everything queued and return the PRODUCE payload frames, in order."""
        self.accumulator.close_all()
        self.sender.run_pass()
        self.clients[COORDINATOR].answer_last(P.INIT_PRODUCER_ID, {"producer_id": 7, "producer_epoch": 0})
        self.sender.run_pass()
        return [p for _, _, payloads, _ in self.clients[LEADER].of(P.PRODUCE) for p in payloads]

    def close(self) -> None:
        self.sender.stop()


@pytest.fixture
def make_rig() -> Iterator:
    made: list[Rig] = []

    def make(**settings: int) -> Rig:
        made.append(Rig(**settings))
        return made[-1]
    yield make
    for r in made:
        r.close()


def test_a_run_fills_batches_exactly_as_the_same_records_sent_one_by_one(make_rig) -> None:  # noqa: ANN001
    values = [b"r%03d" % i for i in range(23)] + [b"long" * 20] + [b"s%d" % i for i in range(9)]
    singles, runs = make_rig(batch_records_max=5, batch_bytes_max=150), make_rig(batch_records_max=5, batch_bytes_max=150)
    for v in values:
        singles.one(v)
    runs.many(values[:7])
    runs.one(values[7])  # a record sent alone between two runs keeps its place
    runs.many(values[8:])
    assert runs.payloads() == singles.payloads()  # the same batches, byte for byte
    decoded = [r.value for data in runs.payloads() for r in decode_batches("t", 0, data)]
    assert decoded == values


def test_fixed_size_runs_fill_batches_to_the_byte_limit_as_single_sends_do(make_rig) -> None:  # noqa: ANN001
    values = [b"f%025d" % i for i in range(20)]  # 50 bytes each with the overhead
    singles, runs = make_rig(batch_bytes_max=120), make_rig(batch_bytes_max=120)
    for v in values:
        singles.one(v)
    segments = runs.many(values)
    assert [s[2] for s in segments] == [2] * 10  # 50, 100; a third would make 150 > 120
    assert runs.payloads() == singles.payloads()


@pytest.mark.parametrize("seed", range(6))
def test_a_batch_never_holds_more_than_its_byte_limit_unless_it_is_one_record(make_rig, seed: int) -> None:  # noqa: ANN001
    """A record that does not fit in the open batch closes it and starts the next one, sent one
    by one or in runs alike; only a record over the limit on its own makes a batch over it."""
    import random
    rnd = random.Random(seed)
    values = [b"x" * rnd.choice([1, 5, 40, 90, 130, 290]) for _ in range(400)]
    singles, runs = make_rig(batch_bytes_max=300), make_rig(batch_bytes_max=300)
    single_batches = {id(f.batch): f.batch for f in (singles.one(v) for v in values)}.values()
    segments: list = []
    at = 0
    while at < len(values):  # runs of random lengths, a single record now and then
        n = rnd.choice([1, 3, 17, 60])
        if n == 1:
            b = runs.one(values[at]).batch
            segments.append((b, 0, 1))
        else:
            segments += runs.many(values[at:at + n])
        at += n
    run_batches = {id(b): b for b, _, _ in segments}.values()
    for batches in (single_batches, run_batches):
        assert [b.record_count for b in batches if b.size_bytes > 300] == [1] * sum(
            1 for b in batches if b.size_bytes > 300)
        assert sum(b.record_count for b in batches) == len(values)
    assert runs.payloads() == singles.payloads()


def test_a_topics_max_message_bytes_bounds_its_batches(make_rig) -> None:  # noqa: ANN001
    """A topic whose max.message.bytes is under the producer's batch_bytes_max gets batches the
    leader takes (whole batch, header included), from send() and send_many alike: else every
    record of a full batch fails as record_too_large."""
    md = ClusterMetadata.from_wire({
        "version": 1, "cluster": "c", "coordinator": COORDINATOR, "brokers": [[1, "127.0.0.1", 1, 101, True]],
        "topics": {"small": {"configs": {"max.message.bytes": 2048}, "partitions": [[1, 3, [1], [1]]]},
                   "big": {"configs": {}, "partitions": [[1, 3, [1], [1]]]}}})
    with Producer(NOWHERE, linger_ms=60_000, max_block_ms=100) as p:
        p.metadata.update(md)
        singles = [p.send("small", b"v" * 100, key=b"k%d" % i, headers=[("h", b"x" * (i % 30))]) for i in range(200)]
        runs = p.send_many("small", [b"w" * 150] * 200)
        big = p.send_many("big", [b"w" * 150] * 200)
        for futures in (singles, [runs[i] for i in range(200)]):
            batches = {id(f.batch): f.batch for f in futures}.values()
            assert len(batches) >= 10
            for b in batches:
                data = b.build(compression=0, producer_id=1, producer_epoch=0, base_sequence=0)
                assert len(data) <= 2048
        assert len({id(big[i].batch) for i in range(200)}) == 1  # other topics keep the producer's bound
        for b in p.accumulator.close_all():
            b.complete(-1, None)


def test_delivery_reports_come_once_per_record_with_its_offset(make_rig) -> None:  # noqa: ANN001
    rig = make_rig(batch_records_max=4)
    reports: list = []
    segments = rig.many([b"v%d" % i for i in range(10)], on_delivery=lambda md, err: reports.append((md.offset, err)))
    assert [s[2] for s in segments] == [4, 4, 2]
    rig.payloads()
    for n, (_, header, _, _) in enumerate(rig.clients[LEADER].of(P.PRODUCE)):
        rig.clients[LEADER].answer_last(P.PRODUCE, {"results": [[100, 0, ""], [104, 0, ""], [108, 0, ""]]})
    assert reports == [(100 + i, None) for i in range(10)]


# -- the producer's API ------------------------------------------------------------------------
@pytest.fixture
def producer() -> Iterator[Producer]:
    p = Producer(NOWHERE, linger_ms=60_000, batch_records_max=4, max_block_ms=100, record_bytes_max=200,
                 buffer_bytes_max=10_000)
    p.metadata.update(_md(3))
    yield p
    try:
        p.close(timeout=0)  # nothing can be delivered: the records still queued fail at the stop
    except ClientTimeoutError:
        pass


def test_keys_go_to_the_partitions_send_picks_in_the_order_given(producer: Producer) -> None:
    keys = [b"k%d" % (i % 7) for i in range(40)]
    futures = producer.send_many("t", [b"v%d" % i for i in range(40)], keys=keys)
    assert len(futures) == 40
    assert [futures[i].partition for i in range(40)] == [partition_for_key(k, 3) for k in keys]
    # within a partition, the records sit in the order given
    for p in range(3):
        placed = [(f.batch.sequence, id(f.batch), f.index) for i in range(40) if (f := futures[i]).partition == p]
        batches = list(dict.fromkeys(pid for _, pid, _ in placed))
        assert [(batches.index(pid), k) for _, pid, k in placed] == sorted((batches.index(pid), k) for _, pid, k in placed)


def test_keyless_records_stick_to_one_partition_until_its_batch_fills(producer: Producer) -> None:
    futures = producer.send_many("t", [b"v"] * 10)
    parts = [futures[i].partition for i in range(10)]
    assert parts[:4] == [parts[0]] * 4 and parts[4:8] == [parts[4]] * 4 and parts[0] != parts[4]
    assert len(set(producer.send_many("t", [b"v"] * 3, partition=2)[i].partition for i in range(3))) == 1


def test_bad_input_raises_before_anything_is_queued(producer: Producer) -> None:
    before = producer.accumulator.buffered_bytes
    with pytest.raises(RecordSizeExceededError) as e:
        producer.send_many("t", [b"ok", b"x" * 300, b"ok"])
    assert e.value.code == P.RECORD_TOO_LARGE and "record 1" in e.value.message
    with pytest.raises(RecordSizeExceededError):
        producer.send_many("t", [b"ok", b"ok"], keys=[b"k", b"k" * 300])
    with pytest.raises(FabricError, match="values must be bytes"):
        producer.send_many("t", [b"ok", "text"])  # type: ignore[list-item]
    with pytest.raises(FabricError, match="keys must be bytes"):
        producer.send_many("t", [b"ok"], keys=[7])  # type: ignore[list-item]
    with pytest.raises(FabricError, match="2 keys for 1 values"):
        producer.send_many("t", [b"ok"], keys=[b"a", b"b"])
    with pytest.raises(TopicNotInMetadataError):
        producer.send_many("t", [b"ok"], partition=3)
    assert producer.accumulator.buffered_bytes == before
    assert len(producer.send_many("t", [])) == 0


def test_a_full_buffer_raises_with_the_queued_prefix(producer: Producer) -> None:
    values = [b"x" * 150] * 100  # 174 bytes each against a 10,000-byte buffer
    with pytest.raises(BufferExhaustedError) as e:
        producer.send_many("t", values)
    queued = e.value.futures  # type: ignore[attr-defined]
    assert 0 < len(queued) < 100 and producer.accumulator.buffered_bytes == len(queued) * 174
    assert [queued[i].partition for i in range(len(queued))]  # each a real future


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_batches_from_chunks_decode_to_the_same_records(codec: str) -> None:
    from fabric.records import COMPRESSION_CODECS
    values = [b"v%03d" % i for i in range(50)]
    data = build_batch_from_chunks(pack_values(values[:20], TS) + pack_values(values[20:], TS), 50, TS, TS,
                                   compression=COMPRESSION_CODECS[codec])
    assert [r.value for r in decode_batches("t", 0, data)] == values


@pytest.mark.parametrize("seed", range(4))
def test_the_bytes_a_producer_counts_bound_the_batch_it_builds(seed: int) -> None:
    """What the producer counts per record (value, key, RECORD_OVERHEAD_BYTES, headers_bytes)
    is never less than what the record takes in the batch: a batch counted under a topic's
    max.message.bytes is under it when built."""
    import random

    from engines import batch as B
    from fabric.client.producer import PAYLOAD_HEAD_BYTES_MAX
    from fabric.records import headers_bytes
    rnd = random.Random(seed)
    sizes = [0, 1, 31, 32, 255, 256, 65_535, 65_536, 70_000]
    records, counted = [], 0
    for _ in range(60):
        key = None if rnd.random() < 0.3 else bytes(rnd.choice(sizes))
        value = bytes(rnd.choice(sizes))
        headers = None if rnd.random() < 0.5 else [("n" * rnd.choice([1, 31, 32, 300, 70_000]), rnd.choice([None, bytes(rnd.choice(sizes))]))
                                                   for _ in range(rnd.choice([0, 1, 15, 16, 17]))]
        ts = rnd.choice([0, 127, 128, 2**31, 2**63 - 1, -1, -(2**63)])
        records.append((ts, key, value, headers))
        counted += len(value) + (len(key) if key is not None else 0) + RECORD_OVERHEAD_BYTES
        counted += headers_bytes(headers) if headers is not None else 0
        assert len(build_batch(records)) <= B.HEADER_BYTES + PAYLOAD_HEAD_BYTES_MAX + counted


def test_a_bound_lowered_under_an_open_batch_closes_it_before_the_next_record(make_rig) -> None:  # noqa: ANN001
    """The topic's max.message.bytes fell (an altered config) while a batch was open past the
    new bound: the next record, alone or in a run, closes it and starts the next batch."""
    for fixed in (True, False):
        rig = make_rig(batch_bytes_max=1000)
        first = rig.many([b"a" * 26] * 6)  # 6 x 50 bytes
        rig.accumulator.set_topic_bytes_max({"t": 120})
        values = [b"b" * 26] * 5 if fixed else [b"b" * 26, b"c" * 10, b"d" * 26, b"e", b"f" * 26]
        later = rig.many(values)
        batches = list({id(b): b for b, _, _ in first + later}.values())
        assert batches[0].record_count == 6 and sum(b.record_count for b in batches) == 11
        assert all(b.size_bytes <= 120 for b in batches[1:])
        decoded = [r.value for data in rig.payloads() for r in decode_batches("t", 0, data)]
        assert decoded == [b"a" * 26] * 6 + values


def _limited_md(limit: int | None) -> ClusterMetadata:
    cfg = {} if limit is None else {"max.message.bytes": limit}
    return ClusterMetadata.from_wire({"version": 1, "cluster": "c", "coordinator": COORDINATOR,
                                      "brokers": [[1, "127.0.0.1", 1, 101, True]],
                                      "topics": {"t": {"configs": cfg, "partitions": [[1, 3, [1], [1]]]}}})


def _built_bytes(b: Any) -> int:
    return len(b.build(compression=0, producer_id=1, producer_epoch=0, base_sequence=0))


def _settle(p: Producer) -> None:
    for b in p.accumulator.close_all():
        b.complete(-1, None)


def test_what_the_caller_changes_after_send_changes_nothing_queued() -> None:
    """The record is queued as it is when send() returns: a caller that reuses its headers list
    or its bytearray buffers neither takes the batch over the bound it was counted under nor
    hands the I/O thread a header it cannot pack (which would fail the producer)."""
    with Producer(NOWHERE, linger_ms=60_000, max_block_ms=100) as p:
        p.metadata.update(_limited_md(4096))
        headers = [("trace", b"x")]
        value, key, header_value = bytearray(b"v" * 10), bytearray(b"k"), bytearray(b"h")
        futures = [p.send("t", value, key=key, headers=headers + [("b", header_value)], partition=0)
                   for _ in range(20)]
        futures += [p.send("t", b"v" * 10, headers=headers, partition=0) for _ in range(20)]
        headers[0] = ("trace", b"y" * 3000)
        value[:] = b"w" * 3000
        key[:] = b"q" * 500
        header_value[:] = b"z" * 3000
        try:
            b = futures[0].batch
            assert _built_bytes(b) <= 4096
            records = decode_batches("t", 0, b.build(compression=0, producer_id=1, producer_epoch=0, base_sequence=0))
            assert {(r.key, r.value, r.headers) for r in records} == {
                (b"k", b"v" * 10, (("trace", b"x"), ("b", b"h"))), (None, b"v" * 10, (("trace", b"x"),))}
            headers[0] = ("trace", object())
            _built_bytes(b)
        finally:
            _settle(p)


@pytest.mark.parametrize("key", ["\u20ac" * 300, 5, ["k"]])
def test_a_key_that_is_not_bytes_is_refused_at_send(key: object) -> None:
    with Producer(NOWHERE, linger_ms=60_000, max_block_ms=100) as p:
        p.metadata.update(_limited_md(4096))
        with pytest.raises(FabricError, match="key"):
            p.send("t", b"v", key=key, partition=0)  # type: ignore[arg-type]
        assert p.accumulator._open == {}


def test_a_header_name_without_utf8_is_refused_as_bad_headers() -> None:
    with Producer(NOWHERE, linger_ms=60_000, max_block_ms=100) as p:
        p.metadata.update(_limited_md(None))
        with pytest.raises(FabricError, match="headers"):
            p.send("t", b"v", headers=[("\ud800", b"x")], partition=0)


def test_fitting_a_run_to_a_small_bound_looks_at_about_as_many_sizes_as_fit() -> None:
    """Records of mixed sizes to a topic whose batches hold ~15 of them: each batch's fitting
    looks at about as many sizes as could fit, not at batch_records_max of them (which made a
    call quadratic, under the accumulator's lock)."""
    class CountingSizes(list):
        looked = 0

        def __getitem__(self, at):  # noqa: ANN001, ANN204
            got = super().__getitem__(at)
            if isinstance(at, slice):
                CountingSizes.looked += len(got)
            return got
    values = [b"v" * (90 + i % 20) for i in range(20_000)]
    sizes = CountingSizes(len(v) + RECORD_OVERHEAD_BYTES for v in values)
    acc = RecordAccumulator(AccumulatorSettings(linger_ms=60_000, batch_bytes_max=2048, buffer_bytes_max=1 << 30),
                            ManualClock(0), wake=lambda: None)
    segments = acc.append_many("t", 0, TS, values, sizes, lambda a, b: pack_values(values[a:b], TS))
    assert sum(k for _, _, k in segments) == 20_000 and len(segments) > 1_000
    assert CountingSizes.looked < 3 * 20_000