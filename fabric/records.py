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
        payload, len(records), records[0][0], max(r[0] for r in records), attributes=compression,
        producer_id=producer_id, producer_epoch=producer_epoch, base_sequence=base_sequence,
    )


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
