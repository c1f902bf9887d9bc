"""Records inside a batch payload, and the partitioner.

A payload is one msgpack array of records, each ``[timestamp_ms, key, value, headers]``
(key: bin or nil; value: bin; headers: nil or array of [name, bin]). Packing and unpacking
are one C call per batch: the per-record cost stays in msgpack's C code. Compression (zstd,
lz4) applies to the whole payload and is flagged in the batch attributes.

Pure functions, thread-safe -- but a ``RecordBatchView``, which caches what it decoded.
"""

from __future__ import annotations

import gc
import zlib
from itertools import repeat
from operator import itemgetter
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import msgpack

from engines import batch as B
from fabric import protocol as P
from fabric.decoded_batches import DecodedBatches, HeldBytes, tuples_bytes
from fabric.errors import RemoteError
from fabric.fixed_records import FixedLayout, fixed_column, fixed_layout

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


HEADER_OVERHEAD_BYTES = 11  # a header's array head and the heads of its name and value, at most
HEADERS_HEAD_BYTES = 4      # the headers' array head (array 32) beyond the nil a record without them has


def frozen_headers(headers: object) -> tuple[tuple, int] | None:
    """``headers`` as the record keeps them -- a tuple of (name, bytes|None) pairs, copied, so
    that a caller that changes its list or buffers after ``send`` changes nothing queued --
    and the bytes they add to the record, at most (names UTF-8, values,
    ``HEADER_OVERHEAD_BYTES`` each, ``HEADERS_HEAD_BYTES``); None when they are not a list or
    tuple of (name str, value bytes|bytearray|None) pairs. Per header Python: callers pay it
    only for records that have headers."""
    if not isinstance(headers, (list, tuple)):
        return None
    size = HEADERS_HEAD_BYTES
    out = []
    try:
        for h in headers:
            if not (isinstance(h, (list, tuple)) and len(h) == 2):
                return None
            name, value = h
            if not isinstance(name, str):
                return None
            size += len(name.encode()) + HEADER_OVERHEAD_BYTES
            if value is not None:
                if not isinstance(value, (bytes, bytearray)):
                    return None
                value = bytes(value)
                size += len(value)
            out.append((name, value))
    except UnicodeEncodeError:  # a name with a lone surrogate: no UTF-8 for it
        return None
    return tuple(out), size


def headers_bytes(headers: object) -> int:
    """The bytes ``headers`` add to a record, at most (see ``frozen_headers``), or -1 when
    they are not (name, value) pairs."""
    frozen = frozen_headers(headers)
    return -1 if frozen is None else frozen[1]


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


def bin_header(length: int) -> bytes:
    """msgpack's header of a bin of ``length`` bytes (bin 8, bin 16 or bin 32)."""
    if length < 0x100:
        return _BIN8_HEADERS[length]
    if length < 0x10000:
        return b"\xc5" + length.to_bytes(2, "big")
    return b"\xc6" + length.to_bytes(4, "big")


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
    if the caller knows they are all alike. Values of one length (fixed-size records) take one
    ``bytes.join`` -- no Python per record; others are built as records and packed by msgpack."""
    if length is None:
        lengths = set(map(len, values))
        length = lengths.pop() if len(lengths) == 1 else None
    if length is not None:
        # each record is [ts, nil, bin value, nil]: one separator between equal-length values
        head = b"\x94" + msgpack.packb(timestamp_ms) + _NIL + bin_header(length)
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
    """Records lo..hi-1 of one batch (base_offset + lo is the first one's offset), whose
    payload is ``data[start:end]``."""

    base_offset: int
    record_count: int
    compression: int
    data: bytes
    start: int
    end: int
    lo: int
    hi: int

    @property
    def payload(self) -> memoryview:
        return memoryview(self.data)[self.start:self.end]


def _leader_epoch(s: _Slice) -> int:
    return B.leader_epoch(s.data, s.start - B.HEADER_BYTES)


class _Fixed(NamedTuple):
    """A slice whose records are all laid out alike (``fabric.fixed_records``): its columns
    are read with one struct unpack each, never as per-record tuples."""

    buf: bytes | memoryview  # the uncompressed payload is buf[start:]
    start: int
    layout: FixedLayout
    record_count: int
    lo: int
    hi: int

    def column(self, timestamps: bool) -> list:
        return fixed_column(self.buf, self.start, self.layout, self.lo, self.hi, timestamps)


def _corrupt(topic: str, partition: int, s: _Slice, e: Exception) -> RemoteError:
    return RemoteError(P.CORRUPT_MESSAGE, f"{topic}-{partition}: batch at {s.base_offset}: {e}")


def _fixed(topic: str, partition: int, s: _Slice) -> _Fixed | None:
    """``s`` as a ``_Fixed`` when its records are all laid out alike, else None (unpack it).
    Raises RemoteError(corrupt_message) for a payload that does not decompress."""
    if s.compression == B.COMPRESSION_NONE:
        buf, start, end = s.data, s.start, s.end
    else:
        try:
            buf = _decompress(s.payload, s.compression)
        except RemoteError:
            raise
        except Exception as e:  # zstandard and lz4 raise their own types
            raise _corrupt(topic, partition, s, e) from e
        start, end = 0, len(buf)
    layout = fixed_layout(buf, start, end, s.record_count)
    return None if layout is None else _Fixed(buf, start, layout, s.record_count, s.lo, s.hi)


def _decode(topic: str, partition: int, s: _Slice, shared: DecodedBatches) -> _Fixed | tuple:
    """``s`` as a ``_Fixed`` or its records as (timestamp_ms, key, value, headers) tuples. Its
    whole batch is decoded once for all the views split from one fetch: a slice of part of a
    batch finds it in ``shared`` (by where the batch is in the fetched bytes) or leaves it
    there for the others; a slice of a whole batch, which no other view shares, does not.
    Views are read in order (a consumer's polls): the slice that reaches the batch's end
    takes it out of ``shared``, so that a view kept alive pins no batch read to its end (one
    read out of order decodes the batch again). What ``shared`` keeps is counted there
    (``DecodedBatches.bytes``): a consumer counts it against its bound while the rest of the
    batch is buffered."""
    partial = s.lo > 0 or s.hi < s.record_count
    whole = (shared.pop(s.start) if s.hi == s.record_count else shared.get(s.start)) if partial else None
    if whole is None:
        batch = s._replace(lo=0, hi=s.record_count) if partial else s
        whole = _fixed(topic, partition, batch)
        payload_bytes = 0
        if whole is None:
            with _gc_paused():
                whole, payload_bytes = _unpack(topic, partition, batch)
        if partial and s.hi < s.record_count:
            if type(whole) is _Fixed:
                size = 0 if whole.buf is s.data else len(whole.buf)  # read in place, or decompressed
            else:
                size = tuples_bytes(whole, payload_bytes)
            shared.keep(s.start, whole, size)
    if not partial:
        return whole
    return whole._replace(lo=s.lo, hi=s.hi) if type(whole) is _Fixed else whole[s.lo:s.hi]


def _unpack(topic: str, partition: int, s: _Slice) -> tuple[tuple, int]:
    """The records of ``s`` as (timestamp_ms, key, value, headers) tuples, checked against the
    batch header, and the bytes of the (uncompressed) payload they were unpacked from. Raises
    RemoteError(corrupt_message)."""
    try:
        payload = _decompress(s.payload, s.compression)
        recs = msgpack.unpackb(payload, raw=False, use_list=False)
        well_formed = isinstance(recs, tuple) and len(recs) == s.record_count and set(map(len, recs)) == {4}
    except Exception as e:  # msgpack raises several unrelated types; len() a TypeError
        raise _corrupt(topic, partition, s, e) from e
    if not well_formed:
        raise RemoteError(P.CORRUPT_MESSAGE, f"{topic}-{partition}: batch at {s.base_offset} does not hold "
                                             f"{s.record_count} records of [timestamp, key, value, headers]")
    return (recs if s.lo == 0 and s.hi == len(recs) else recs[s.lo:s.hi]), len(payload)


_key, _value, _headers = itemgetter(1), itemgetter(2), itemgetter(3)


class RecordBatchView:
    """Records of one partition in offset order, as a consumer's ``poll_batch`` returns them:
    counted and positioned from the batch headers alone, decoded only when a field is first
    read, and then column by column with C-level calls: a batch whose records are all laid
    out alike (keyless, header-less, one value length: ``fabric.fixed_records``) by one struct
    unpack per column, any other by one msgpack call.

    ``len(view)``, ``topic``, ``partition``, ``first_offset``, ``next_offset`` (one past the
    last record) need no unpacking. ``offsets``, ``timestamps``, ``keys``, ``values``,
    ``headers`` are lists (or a range) in record order; iterating gives ``Record`` tuples;
    ``records()`` all of them as a list. A payload that is not what its header says raises
    RemoteError(corrupt_message) at the first read. Not thread-safe (a view caches what it
    decoded); it holds the fetched bytes until it is dropped."""

    __slots__ = ("topic", "partition", "first_offset", "next_offset", "_slices", "_count", "_decoded_cache", "_shared",
                 "held")
    _decoded_cache: list[_Fixed | tuple] | None

    def __init__(self, topic: str, partition: int, slices: list[_Slice],
                 shared: DecodedBatches | None = None) -> None:
        self.topic = topic
        self.partition = partition
        self._slices = slices
        self.first_offset = slices[0].base_offset + slices[0].lo
        self.next_offset = slices[-1].base_offset + slices[-1].hi
        self._count = sum(s.hi - s.lo for s in slices)
        self._decoded_cache = None
        self._shared = DecodedBatches() if shared is None else shared  # for the views split from one fetch
        self.held = 0  # a consumer's count of the fetched bytes it stands for in its buffer (0: none)

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"RecordBatchView({self.topic}-{self.partition} [{self.first_offset}, {self.next_offset}))"

    @property
    def last_leader_epoch(self) -> int:
        """The leader epoch of the batch that holds the view's last record (from its header)."""
        return _leader_epoch(self._slices[-1])

    def leader_epoch_starts(self) -> list[tuple[int, int]]:
        """(leader epoch, the offset of the view's first record in it) for each epoch its
        batches carry, in offset order (from their headers)."""
        starts: list[tuple[int, int]] = []
        for s in self._slices:
            epoch = _leader_epoch(s)
            if not starts or starts[-1][0] != epoch:
                starts.append((epoch, s.base_offset + s.lo))
        return starts

    def count_decoded(self, tally: HeldBytes | None) -> None:
        """Count in ``tally`` (None: in none) what the batches decoded for this view and the
        others split from its fetch take beside the fetched bytes, now and as they come and go
        (``DecodedBatches``): a consumer counts them while any of those views is buffered."""
        self._shared.count_in(tally)

    def shares_fetch_with(self, other: "RecordBatchView") -> bool:
        """Both were split from one fetched view: they read the same fetched bytes."""
        return self._shared is other._shared

    def records_before(self, offset: int) -> int:
        """How many of the view's records are before ``offset`` (from the headers)."""
        return sum(min(max(offset - s.base_offset, s.lo), s.hi) - s.lo for s in self._slices)

    def first_batch_records(self) -> int:
        """How many of the view's records are of its first batch (from the header)."""
        s = self._slices[0]
        return s.hi - s.lo

    def _decoded(self) -> list[_Fixed | tuple]:
        """Per slice, a ``_Fixed`` or its records as (timestamp_ms, key, value, headers)
        tuples (cached)."""
        if self._decoded_cache is None:
            topic, partition, shared = self.topic, self.partition, self._shared
            self._decoded_cache = [_decode(topic, partition, s, shared) for s in self._slices]
        return self._decoded_cache

    def _column(self, getter: itemgetter) -> list:
        parts: list[list] = []
        for d in self._decoded():
            if type(d) is not _Fixed:
                parts.append(list(map(getter, d)))
            elif getter is _first or getter is _value:
                parts.append(d.column(timestamps=getter is _first))
            else:
                parts.append([None] * (d.hi - d.lo))  # keys and headers of fixed records are nil
        if len(parts) == 1:
            return parts[0]
        out: list = []
        for part in parts:
            out += part
        return out

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
        new, topic, partition, shared = tuple.__new__, self.topic, self.partition, self._shared
        cached = self._decoded_cache
        # one pause: the collector would otherwise run every 700 new records and walk them
        with _gc_paused():
            for i, s in enumerate(self._slices):  # batch by batch: nothing of this view is cached
                d = cached[i] if cached is not None else _decode(topic, partition, s, shared)
                if type(d) is _Fixed:
                    # Record(...) would run a Python-level __new__ per record; zip reuses its tuple
                    out += map(new, repeat(Record), zip(repeat(topic), repeat(partition),
                                                        range(s.base_offset + s.lo, s.base_offset + s.hi),
                                                        d.column(timestamps=True), repeat(None),
                                                        d.column(timestamps=False), repeat(None)))
                    continue
                out += [new(Record, (topic, partition, off) + r) for off, r in enumerate(d, s.base_offset + s.lo)]
        return out

    def __iter__(self):  # noqa: ANN204
        return iter(self.records())

    def split(self, count: int) -> tuple["RecordBatchView", "RecordBatchView | None"]:
        """The first ``count`` records (>= 1) and the rest (None if none), without unpacking; a
        batch cut between them is decoded once for both (and for their own splits). The rest
        keeps ``held``: a consumer counts the fetched bytes until the last piece leaves its buffer."""
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
        rest = RecordBatchView(self.topic, self.partition, tail, self._shared)
        rest.held = self.held  # the fetched bytes stay with what stays buffered longest
        return RecordBatchView(self.topic, self.partition, head, self._shared), rest


def view_batches(topic: str, partition: int, data: bytes, start_offset: int = 0,
                 end_offset: int | None = None) -> RecordBatchView | None:
    """A view of the records of every whole batch in ``data`` with start_offset <= offset <
    end_offset (None when there are none), from the batch headers alone: nothing is unpacked
    until the view is read."""
    slices: list[_Slice] = []
    end = 0
    for h, view in B.iter_batches(data):
        at, end = end, end + len(view)  # where the batch is in data
        base = h.base_offset
        if end_offset is not None and base >= end_offset:
            break
        if h.next_offset <= start_offset:
            continue  # wholly before the wanted range
        lo = max(0, start_offset - base)
        hi = h.record_count if end_offset is None else min(h.record_count, end_offset - base)
        if hi > lo:
            slices.append(_Slice(base, h.record_count, h.compression, data, at + B.HEADER_BYTES, end, lo, hi))
    return RecordBatchView(topic, partition, slices) if slices else None
