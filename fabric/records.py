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
from operator import itemgetter
from typing import NamedTuple

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
    Raises RemoteError(corrupt_message) for a payload that is not what its header says.

    The cyclic garbage collector is paused meanwhile (msgpack's own advice for large unpacks):
    a fetch allocates tuples by the hundred thousand, none of them in a cycle, and every 700 of
    them would otherwise start a collection that walks the records still buffered -- that
    more than doubled the cost per record."""
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _decode_batches(topic, partition, data, start_offset, end_offset)
    finally:
        if paused:
            gc.enable()


def _decode_batches(topic: str, partition: int, data: bytes, start_offset: int, end_offset: int | None) -> list[Record]:
    out: list[Record] = []
    new = tuple.__new__  # Record(...) would run a Python-level __new__ per record
    for h, view in B.iter_batches(data):
        base = h.base_offset
        if end_offset is not None and base >= end_offset:
            break
        if h.next_offset <= start_offset:
            continue  # wholly before the wanted range: not even unpacked
        payload = _decompress(view[B.HEADER_BYTES:], h.compression)
        try:
            recs = msgpack.unpackb(payload, raw=False, use_list=False)
            well_formed = isinstance(recs, tuple) and len(recs) == h.record_count and set(map(len, recs)) == {4}
        except Exception as e:  # msgpack raises several unrelated types; len() a TypeError
            raise RemoteError(P.CORRUPT_MESSAGE, f"{topic}-{partition}: batch at {base}: {e}") from e
        if not well_formed:
            raise RemoteError(P.CORRUPT_MESSAGE, f"{topic}-{partition}: batch at {base} does not hold "
                                                 f"{h.record_count} records of [timestamp, key, value, headers]")
        first = max(0, start_offset - base)
        last = len(recs) if end_offset is None else min(len(recs), end_offset - base)
        if first or last < len(recs):
            recs = recs[first:last]
        out.extend([new(Record, (topic, partition, off) + r) for off, r in enumerate(recs, base + first)])
    return out
