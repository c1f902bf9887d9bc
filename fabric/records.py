"""Records inside a batch payload, and the partitioner.

A payload is one msgpack array of records, each ``[timestamp_ms, key, value, headers]``
(key: bin or nil; value: bin; headers: nil or array of [name, bin]). Packing and unpacking
are one C call per batch: the per-record cost stays in msgpack's C code. Compression (zstd,
lz4) applies to the whole payload and is flagged in the batch attributes.

Pure functions; thread-safe.
"""

from __future__ import annotations

import gc
import zlib
from itertools import chain
from operator import itemgetter
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import msgpack

from engines import batch as B
from fabric import protocol as P
from fabric.errors import RemoteError

COMPRESSION_CODECS = {"none": B.COMPRESSION_NONE, "zstd": B.COMPRESSION_ZSTD, "lz4": B.COMPRESSION_LZ4}


class Record(NamedTuple):
    """A record as a consumer sees it."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes
    headers: list | None


def partition_for_key(key: bytes, partitions: int) -> int:
    """Loom's partitioner: CRC-32 (zlib, IEEE polynomial) of the key bytes, modulo the
    partition count. Stable across processes, machines and Python versions (unlike hash())."""
    return zlib.crc32(key) % partitions


def _compress(payload: bytes, codec: int) -> bytes:
    if codec == B.COMPRESSION_ZSTD:
        import zstandard
        return zstandard.ZstdCompressor(level=1).compress(payload)
    if codec == B.COMPRESSION_LZ4:
        import lz4.frame
        return lz4.frame.compress(payload)
    return payload


def _decompress(payload: bytes | memoryview, codec: int) -> bytes | memoryview:
    if codec == B.COMPRESSION_ZSTD:
        import zstandard
        return zstandard.ZstdDecompressor().decompress(payload, max_output_size=B.BATCH_BYTES_MAX)
    if codec == B.COMPRESSION_LZ4:
        import lz4.frame
        return lz4.frame.decompress(payload)
    if codec != B.COMPRESSION_NONE:
        raise RemoteError(P.CORRUPT_MESSAGE, f"unknown compression codec {codec}")
    return payload


def build_batch(records: list[tuple], *, compression: int = B.COMPRESSION_NONE,
                producer_id: int = -1, producer_epoch: int = -1, base_sequence: int = -1) -> bytes:
    """records: list of (timestamp_ms, key, value, headers). Returns a complete batch.

    The header's last timestamp field holds the batch's *largest* timestamp (Kafka's
    maxTimestamp), not the last record's: retention and timestamp lookups judge a batch by it,
    and a late record in the middle of a batch must not make the batch look older than it is."""
    payload = _compress(msgpack.packb(records, use_bin_type=True), compression)
    return B.build(
        payload, len(records), records[0][0], max(map(_first, records)), attributes=compression,
        producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence,
    )


# -- packing without per-record Python (the producer's batch path) -------------------------------
# A payload is ``array_header(n) + record_1 + ... + record_n``: msgpack arrays concatenate, so
# records can be packed in runs ("chunks", no array header) and a batch assembled from its runs
# with one join. The bytes are exactly those ``msgpack.packb`` would write for the whole list.
_first = itemgetter(0)
_BIN8_HEADERS = tuple(b"\xc4" + bytes([n]) for n in range(256))
_NIL = b"\xc0"


def array_header(count: int) -> bytes:
    """msgpack's header of an array of ``count`` items (fixarray, array 16 or array 32)."""
    if count < 16:
        return bytes([0x90 | count])
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def pack_records(records: list[tuple]) -> list[bytes]:
    """``records`` ((timestamp_ms, key, value, headers) tuples) packed as a chunk: the bytes of
    their msgpack array without its header, as a list of consecutive pieces."""
    return [msgpack.packb(records, use_bin_type=True)[len(array_header(len(records))):]]


def pack_values(values: list, timestamp_ms: int, length: int | None = None) -> list[bytes]:
    """Keyless, header-less records of one timestamp as a chunk (see ``pack_records``).
    ``values``: bytes or bytearray (the caller checks); ``length``: the length of every value
    if the caller knows they are all alike. Values of one length under 256 (fixed-size
    records) take one ``bytes.join`` -- no Python per record; others are built as records and
    packed by msgpack."""
    if length is None:
        lengths = set(map(len, values))
        length = lengths.pop() if len(lengths) == 1 else None
    if length is not None and length < 256:
        # each record is [ts, nil, bin8 value, nil]: one separator between equal-length values
        head = b"\x94" + msgpack.packb(timestamp_ms) + _NIL + _BIN8_HEADERS[length]
        return [head, (_NIL + head).join(values), _NIL]
    return pack_records([(timestamp_ms, None, v, None) for v in values])


def build_batch_from_chunks(chunks: list[bytes], record_count: int, first_timestamp_ms: int, max_timestamp_ms: int, *,
                            compression: int = B.COMPRESSION_NONE, producer_id: int = -1, producer_epoch: int = -1,
                            base_sequence: int = -1) -> bytes:
    """A complete batch of ``record_count`` records packed in ``chunks`` (the pieces of
    ``pack_records`` and ``pack_values`` results, in order): the same bytes ``build_batch``
    writes for the same records."""
    parts = [array_header(record_count), *chunks]
    if compression != B.COMPRESSION_NONE:
        parts = [_compress(b"".join(parts), compression)]
    return B.build_from_parts(parts, record_count, first_timestamp_ms, max_timestamp_ms, attributes=compression,
                              producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence)


def decode_batches(topic: str, partition: int, data: bytes, start_offset: int = 0,
                   end_offset: int | None = None) -> list[Record]:
    """Records of every whole batch in ``data`` with start_offset <= offset < end_offset.
    Raises RemoteError(corrupt_message) for a payload that is not what its header says."""
    view = view_batches(topic, partition, data, start_offset, end_offset)
    return view.records() if view is not None else []


@contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused (msgpack's own advice for large unpacks): a fetch
    allocates tuples by the hundred thousand, none of them in a cycle, and every 700 of them
    would otherwise start a collection that walks the records still buffered -- that more
    than doubled the cost per record."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


class _Slice(NamedTuple):
    """Records lo..hi-1 of one batch (base_offset + lo is the first one's offset)."""

    base_offset: int
    record_count: int
    compression: int
    payload: memoryview
    lo: int
    hi: int


def _unpack(topic: str, partition: int, s: _Slice) -> tuple:
    """The records of ``s`` as (timestamp_ms, key, value, headers) tuples, checked against the
    batch header. Raises RemoteError(corrupt_message)."""
    try:
        recs = msgpack.unpackb(_decompress(s.payload, s.compression), raw=False, use_list=False)
        well_formed = isinstance(recs, tuple) and len(recs) == s.record_count and set(map(len, recs)) == {4}
    except Exception as e:  # msgpack raises several unrelated types; len() a TypeError
        raise RemoteError(P.CORRUPT_MESSAGE, f"{topic}-{partition}: batch at {s.base_offset}: {e}") from e
    if not well_formed:
        raise RemoteError(P.CORRUPT_MESSAGE, f"{topic}-{partition}: batch at {s.base_offset} does not hold "
                                             f"{s.record_count} records of [timestamp, key, value, headers]")
    return recs if s.lo == 0 and s.hi == len(recs) else recs[s.lo:s.hi]


_key, _value, _headers = itemgetter(1), itemgetter(2), itemgetter(3)


class RecordBatchView:
    """Records of one partition in offset order, as a consumer's ``poll_batch`` returns them:
    counted and positioned from the batch headers alone, unpacked only when a field is first
    read (one msgpack call per batch), and then column by column with C-level calls.

    ``len(view)``, ``topic``, ``partition``, ``first_offset``, ``next_offset`` (one past the
    last record) need no unpacking. ``offsets``, ``timestamps``, ``keys``, ``values``,
    ``headers`` are lists (or a range) in record order; iterating gives ``Record`` tuples;
    ``records()`` all of them as a list. A payload that is not what its header says raises
    RemoteError(corrupt_message) at the first read. Not thread-safe (a view caches what it
    unpacked); it holds the fetched bytes until it is dropped."""

    __slots__ = ("topic", "partition", "first_offset", "next_offset", "_slices", "_count", "_recs")
    _recs: list[tuple] | None

    def __init__(self, topic: str, partition: int, slices: list[_Slice]) -> None:
        self.topic = topic
        self.partition = partition
        self._slices = slices
        self.first_offset = slices[0].base_offset + slices[0].lo
        self.next_offset = slices[-1].base_offset + slices[-1].hi
        self._count = sum(s.hi - s.lo for s in slices)
        self._recs = None

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"RecordBatchView({self.topic}-{self.partition} [{self.first_offset}, {self.next_offset}))"

    def _unpacked(self) -> list[tuple]:
        """Per slice, its records as (timestamp_ms, key, value, headers) tuples (cached)."""
        if self._recs is None:
            with _gc_paused():
                self._recs = [_unpack(self.topic, self.partition, s) for s in self._slices]
        return self._recs

    def _column(self, getter: itemgetter) -> list:
        unpacked = self._unpacked()
        return list(map(getter, unpacked[0] if len(unpacked) == 1 else chain.from_iterable(unpacked)))

    @property
    def offsets(self) -> range | list[int]:
        if self.next_offset - self.first_offset == self._count:
            return range(self.first_offset, self.next_offset)
        return [o for s in self._slices for o in range(s.base_offset + s.lo, s.base_offset + s.hi)]

    @property
    def timestamps(self) -> list[int]:
        return self._column(_first)

    @property
    def keys(self) -> list[bytes | None]:
        return self._column(_key)

    @property
    def values(self) -> list[bytes]:
        return self._column(_value)

    @property
    def headers(self) -> list[list | None]:
        return self._column(_headers)

    def records(self) -> list[Record]:
        """Every record as a ``Record`` (the per-record objects ``poll`` returns)."""
        out: list[Record] = []
        new, topic, partition = tuple.__new__, self.topic, self.partition
        with _gc_paused():  # one pause: the unpacked tuples die before the collector sees them
            for i, s in enumerate(self._slices):  # batch by batch: what is unpacked stays in the cache
                recs = self._recs[i] if self._recs is not None else _unpack(topic, partition, s)
                # Record(...) would run a Python-level __new__ per record
                out += [new(Record, (topic, partition, off) + r) for off, r in enumerate(recs, s.base_offset + s.lo)]
        return out

    def __iter__(self):  # noqa: ANN204
        return iter(self.records())

    def split(self, count: int) -> tuple["RecordBatchView", "RecordBatchView | None"]:
        """The first ``count`` records (>= 1) and the rest (None if none), without unpacking."""
        if count >= self._count:
            return self, None
        head: list[_Slice] = []
        for i, s in enumerate(self._slices):
            n = s.hi - s.lo
            if count < n:
                head.append(s._replace(hi=s.lo + count))
                tail = [s._replace(lo=s.lo + count)] + self._slices[i + 1:]
                break
            head.append(s)
            count -= n
            if count == 0:
                tail = self._slices[i + 1:]
                break
        return RecordBatchView(self.topic, self.partition, head), RecordBatchView(self.topic, self.partition, tail)


def view_batches(topic: str, partition: int, data: bytes, start_offset: int = 0,
                 end_offset: int | None = None) -> RecordBatchView | None:
    """A view of the records of every whole batch in ``data`` with start_offset <= offset <
    end_offset (None when there are none), from the batch headers alone: nothing is unpacked
    until the view is read."""
    slices: list[_Slice] = []
    for h, view in B.iter_batches(data):
        base = h.base_offset
        if end_offset is not None and base >= end_offset:
            break
        if h.next_offset <= start_offset:
            continue  # wholly before the wanted range
        lo = max(0, start_offset - base)
        hi = h.record_count if end_offset is None else min(h.record_count, end_offset - base)
        if hi > lo:
            slices.append(_Slice(base, h.record_count, h.compression, view[B.HEADER_BYTES:], lo, hi))
    return RecordBatchView(topic, partition, slices) if slices else None
