"""The record-batch header: the unit that travels between nodes and is stored by engines.

A batch is ``HEADER + payload``. Engines and brokers look only at the header; the payload (the
packed records, see ``fabric.records``) is opaque to them. All integers are big-endian.

    offset  size  field
    0       8     base_offset          assigned by the leader (engines stamp their log end)
    8       4     batch_length         bytes that follow this field (total size - 12)
    12      4     leader_epoch         stamped by the leader at append
    16      1     magic                BATCH_MAGIC
    17      4     crc                  CRC32C of every byte from offset 21 to the end
    21      2     attributes           low 3 bits: compression codec
    23      4     record_count
    27      8     first_timestamp_ms
    35      8     last_timestamp_ms    the batch's largest timestamp (Loom's client writes Kafka's maxTimestamp)
    43      8     producer_id          -1 when not idempotent
    51      2     producer_epoch
    53      4     base_sequence        -1 when not idempotent
    57      ...   payload

As in Kafka, the CRC leaves out the two fields the leader assigns (base offset and leader
epoch), so stamping them never needs a CRC recomputation. Functions here are pure and
thread-safe.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Iterator

import crc32c as _crc32c

from engines.errors import LoomError

BATCH_MAGIC = 1
HEADER = struct.Struct(">qiibIhiqqqhi")
HEADER_BYTES = HEADER.size  # 57
LENGTH_PREFIX_BYTES = 12  # base_offset + batch_length: what one must read to learn a batch's size
CRC_START = 21
BATCH_BYTES_MAX = 64 * 1024 * 1024  # hard ceiling; configs set lower limits

COMPRESSION_NONE = 0
COMPRESSION_ZSTD = 1
COMPRESSION_LZ4 = 2
COMPRESSION_MASK = 0x07

# parts of HEADER, for reading or stamping one field without unpacking the rest
BASE_OFFSET = struct.Struct(">q")
LENGTH_PREFIX = struct.Struct(">qi")  # base_offset, batch_length: a batch's size
# base_offset, batch_length, (skip leader_epoch..attributes), record_count: the 27 bytes that
# tell where a batch is and which offsets it holds.
OFFSET_SPAN = struct.Struct(">qi11xi")
OFFSET_SPAN_BYTES = OFFSET_SPAN.size  # 27
_LEADER_EPOCH = struct.Struct(">i")
LEADER_EPOCH_AT = 12  # its place in the header (after base_offset and batch_length)
_HEAD_CRC = struct.Struct(">qiibI")       # the fields before CRC_START (crc last)
_TAIL_FIXED = struct.Struct(">hiqqqhi")   # the fixed fields the CRC covers


class BatchError(LoomError, ValueError):
    """A batch is malformed or its CRC does not match (an operating error: reject or cut it)."""


@dataclass(frozen=True, slots=True)
class BatchHeader:
    base_offset: int
    batch_length: int
    leader_epoch: int
    magic: int
    crc: int
    attributes: int
    record_count: int
    first_timestamp_ms: int
    last_timestamp_ms: int
    producer_id: int
    producer_epoch: int
    base_sequence: int

    @property
    def size_bytes(self) -> int:
        return self.batch_length + LENGTH_PREFIX_BYTES

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.record_count - 1

    @property
    def next_offset(self) -> int:
        return self.base_offset + self.record_count

    @property
    def max_timestamp_ms(self) -> int:
        """The largest timestamp the header shows (records may be out of order: a late or
        clock-skewed record can end a batch). Retention and timestamp lookups use this."""
        return max(self.first_timestamp_ms, self.last_timestamp_ms)

    @property
    def compression(self) -> int:
        return self.attributes & COMPRESSION_MASK


def crc32c(data: bytes | bytearray | memoryview) -> int:
    return _crc32c.crc32c(data)


def build(payload: bytes, record_count: int, first_timestamp_ms: int, last_timestamp_ms: int, **fields: int) -> bytes:
    """Return a complete batch (header + payload) with its CRC computed. ``fields``: the
    keyword-only header fields of ``build_from_parts`` (attributes, producer_id, ...)."""
    return build_from_parts((payload,), record_count, first_timestamp_ms, last_timestamp_ms, **fields)


def build_from_parts(
    parts: list[bytes] | tuple[bytes, ...],
    record_count: int,
    first_timestamp_ms: int,
    last_timestamp_ms: int,
    *,
    attributes: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    base_offset: int = 0,
    leader_epoch: int = -1,
) -> bytes:
    """``build`` for a payload given as consecutive pieces (the producer's packed chunks): the
    CRC runs over the pieces in turn and the batch is assembled with one copy of each byte."""
    if record_count < 1:
        raise BatchError("a batch holds at least one record")
    fixed = _TAIL_FIXED.pack(attributes, record_count, first_timestamp_ms, last_timestamp_ms,
                             producer_id, producer_epoch, base_sequence)
    crc = _crc32c.crc32c(fixed)
    payload_bytes = 0
    for part in parts:
        crc = _crc32c.crc32c(part, crc)
        payload_bytes += len(part)
    head = _HEAD_CRC.pack(base_offset, HEADER_BYTES - LENGTH_PREFIX_BYTES + payload_bytes, leader_epoch, BATCH_MAGIC, crc)
    return b"".join((head, fixed, *parts))


# the raw header fields' places (``verify_fields``' tuple, in BatchHeader's field order): hot
# paths that build no BatchHeader read them by these
(F_BASE_OFFSET, F_BATCH_LENGTH, F_LEADER_EPOCH, F_MAGIC, F_CRC, F_ATTRIBUTES, F_RECORD_COUNT, F_FIRST_TIMESTAMP_MS,
 F_LAST_TIMESTAMP_MS, F_PRODUCER_ID, F_PRODUCER_EPOCH, F_BASE_SEQUENCE) = range(12)


def _unpack_checked(buf: bytes | bytearray | memoryview, pos: int) -> tuple:
    """The raw HEADER fields at ``pos`` (in BatchHeader field order) after the header checks
    that need no CRC. The one place those checks live; raises BatchError."""
    if len(buf) - pos < HEADER_BYTES:
        raise BatchError(f"truncated batch header: {len(buf) - pos} bytes, need {HEADER_BYTES}")
    fields = HEADER.unpack_from(buf, pos)
    if fields[3] != BATCH_MAGIC:
        raise BatchError(f"bad batch magic {fields[3]}")
    batch_length = fields[1]
    if not HEADER_BYTES - LENGTH_PREFIX_BYTES <= batch_length <= BATCH_BYTES_MAX - LENGTH_PREFIX_BYTES:
        raise BatchError(f"bad batch length {batch_length}")
    if fields[6] < 1:
        raise BatchError(f"bad record count {fields[6]}")
    return fields


def base_offset_of(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """The base offset of the batch whose header is at ``pos``, after ``parse_header``'s checks
    (no BatchHeader built). Raises BatchError."""
    return _unpack_checked(buf, pos)[0]


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the header at ``pos``. Raises BatchError if fewer than HEADER_BYTES remain or the
    magic or lengths are wrong. Does not check the CRC (see ``verify``)."""
    return BatchHeader(*_unpack_checked(buf, pos))


def verify_fields(buf: bytes | bytearray | memoryview, pos: int = 0, *, check_crc: bool = True) -> tuple:
    """``verify`` without building a BatchHeader (about 3 µs saved per call; for append hot
    paths): the same checks, and returns the raw header fields as a tuple in BatchHeader
    field order (base_offset, batch_length, leader_epoch, magic, crc, attributes,
    record_count, first_timestamp_ms, last_timestamp_ms, producer_id, producer_epoch,
    base_sequence). ``check_crc=False``: every check but the CRC (for a batch whose CRC its
    caller has just verified). Raises BatchError."""
    fields = _unpack_checked(buf, pos)
    end = pos + fields[1] + LENGTH_PREFIX_BYTES
    if end > len(buf):
        raise BatchError(f"truncated batch: {len(buf) - pos} of {end - pos} bytes")
    if check_crc and _crc32c.crc32c(memoryview(buf)[pos + CRC_START:end]) != fields[4]:
        raise BatchError(f"batch at offset {fields[0]}: crc mismatch")
    return fields


def whole_batch_fields(buf: bytes | bytearray | memoryview) -> tuple | None:
    """``verify_fields`` of ``buf`` when it is exactly one whole batch whose CRC matches; None
    for anything else (a short or damaged batch, a CRC mismatch, more than one batch, a partial
    tail), which a caller hands to its general path to be judged there."""
    try:
        fields = verify_fields(buf)
    except BatchError:
        return None
    return fields if fields[1] + LENGTH_PREFIX_BYTES == len(buf) else None


def verify(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Parse the header at ``pos`` and check that the whole batch is present and its CRC
    matches. Returns the header; raises BatchError otherwise."""
    return BatchHeader(*verify_fields(buf, pos))


def peek_size(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """Total bytes of the batch starting at ``pos`` (needs LENGTH_PREFIX_BYTES available)."""
    return LENGTH_PREFIX.unpack_from(buf, pos)[1] + LENGTH_PREFIX_BYTES


def set_base_offset(batch: bytearray | memoryview, base_offset: int, pos: int = 0) -> None:
    BASE_OFFSET.pack_into(batch, pos, base_offset)


def set_leader_epoch(batch: bytearray | memoryview, leader_epoch: int, pos: int = 0) -> None:
    _LEADER_EPOCH.pack_into(batch, pos + LEADER_EPOCH_AT, leader_epoch)


def leader_epoch(buf: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """The leader epoch of the batch whose header starts at ``pos`` (the field alone: no parse)."""
    return _LEADER_EPOCH.unpack_from(buf, pos + LEADER_EPOCH_AT)[0]


def iter_batches(buf: bytes | bytearray | memoryview, check_crc: bool = False) -> Iterator[tuple[BatchHeader, memoryview]]:
    """Yield (header, batch view) for each whole batch in ``buf``; stops at a partial tail."""
    view = memoryview(buf)
    pos = 0
    n = len(view)
    while n - pos >= HEADER_BYTES:
        fields = _unpack_checked(view, pos)  # the header parsed and checked once (parse_header's checks)
        end = pos + fields[1] + LENGTH_PREFIX_BYTES
        if end > n:
            return  # a partial tail is not an error here, with or without check_crc
        if check_crc and _crc32c.crc32c(view[pos + CRC_START:end]) != fields[4]:
            raise BatchError(f"batch at offset {fields[0]}: crc mismatch")  # as verify() says it
        yield BatchHeader(*fields), view[pos:end]
        pos = end


def split_headers(buf: bytes | bytearray | memoryview) -> list[BatchHeader]:
    """Headers of every whole batch in ``buf`` (no CRC check)."""
    return [h for h, _ in iter_batches(buf)]
