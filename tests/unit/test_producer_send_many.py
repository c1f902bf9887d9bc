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
                                    [bytes(n) for n in range(300)], [bytearray(b"xy")] * 20])
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
    assert [s[2] for s in segments] == [3] * 6 + [2]  # 50, 100, 150 >= 120: three a batch
    assert runs.payloads() == singles.payloads()


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
        placed = [(f[0].sequence, id(f[0]), f[1]) for i in range(40) if (f := futures[i]).partition == p]
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
