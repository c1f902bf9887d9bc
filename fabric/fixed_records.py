"""Reading a batch whose records are all laid out alike, without unpacking them one by one.

Most batches hold keyless, header-less records of one value length: ``send_many`` packs them
so, and ``send()`` of equal-sized values does too. In msgpack each such record is the same
bytes around its timestamp and value: ``94 <ts> c0 <bin header> <value> c0``. When every
record of a payload has that shape (checked per field position over the whole batch with
strided slices, a few C calls per batch), the values -- and, when asked, the timestamps -- come
out of one ``struct`` unpack per batch: no tuple per record, no work for the garbage
collector. Any other payload (keys, headers, mixed lengths, a corrupt one) is not "fixed"
and the caller unpacks it with msgpack as before; the fast path never decides what a
malformed payload means.

Pure functions over immutable bytes; thread-safe (the struct cache is a dict of immutable
values, and a lost race only builds a ``Struct`` twice).
"""

from __future__ import annotations

import struct
from typing import NamedTuple

UNPACK_RECORDS_MAX = 1024   # records per compiled Struct; longer batches take several unpacks
STRUCT_CACHE_MAX = 64       # compiled Structs kept (one per layout and record count)

# msgpack integer types a timestamp may have: type byte -> struct code of what follows
_INT_CODES = {0xCC: "B", 0xCD: "H", 0xCE: "I", 0xCF: "Q", 0xD0: "b", 0xD1: "h", 0xD2: "i", 0xD3: "q"}
_BIN_LENGTH_BYTES = {0xC4: 1, 0xC5: 2, 0xC6: 4}
_FIXARRAY_4, _NIL = 0x94, 0xC0
_structs: dict[tuple[str, int], struct.Struct] = {}


class FixedLayout(NamedTuple):
    """Where each field sits in every record of one payload (byte positions from a record's
    start); the records follow the array header (``body_at`` bytes) back to back."""

    body_at: int
    record_bytes: int
    ts_at: int           # first byte of the timestamp's value
    ts_code: str         # its struct code (big endian)
    value_at: int
    value_bytes: int

    def unit(self, timestamps: bool) -> str:
        """The struct format of one record: its timestamp (if asked) or its value."""
        if timestamps:
            size = struct.calcsize(">" + self.ts_code)
            return f"{self.ts_at}x{self.ts_code}{self.record_bytes - self.ts_at - size}x"
        return f"{self.value_at}x{self.value_bytes}s{self.record_bytes - self.value_at - self.value_bytes}x"


def _array_header_bytes(buf: bytes | memoryview, at: int, count: int) -> int:
    """Length of the array header at ``buf[at]`` when it announces ``count`` items, else 0."""
    first = buf[at]
    if count < 16:
        return 1 if first == 0x90 | count else 0
    if count < 0x10000:
        return 3 if first == 0xDC and int.from_bytes(buf[at + 1:at + 3], "big") == count else 0
    return 5 if first == 0xDD and int.from_bytes(buf[at + 1:at + 5], "big") == count else 0


def _strided(buf: bytes | memoryview, start: int, end: int, step: int) -> bytes:
    """Every ``step``-th byte of ``buf[start:end]`` (one C loop; fastest on ``bytes``)."""
    picked = buf[start:end:step]
    return picked if type(picked) is bytes else bytes(picked)


def fixed_layout(buf: bytes | memoryview, start: int, end: int, count: int) -> FixedLayout | None:
    """The layout every one of the ``count`` records of the payload ``buf[start:end]`` (an
    uncompressed batch payload: one msgpack array) shares, or None when they do not all have
    the shape ``[int timestamp, nil, bin value, nil]`` with one timestamp type and one value
    length. Positions in the result count from ``start``. ``buf`` is best ``bytes``: the
    checks take strided slices of it."""
    if count <= 0 or end - start < 6:
        return None
    body_at = _array_header_bytes(buf, start, count)
    if not body_at or buf[start + body_at] != _FIXARRAY_4:
        return None
    rec = start + body_at  # the first record
    ts_type = buf[rec + 1]
    if ts_type < 0x80:
        ts_at, ts_code, checked = 1, "B", [(0, _FIXARRAY_4)]  # positive fixint: the type byte is the value
    elif ts_type in _INT_CODES:
        ts_at, ts_code, checked = 2, _INT_CODES[ts_type], [(0, _FIXARRAY_4), (1, ts_type)]
    else:
        return None
    key_at = ts_at + struct.calcsize(">" + ts_code)
    bin_at = key_at + 1
    if end < rec + bin_at + 1:
        return None
    bin_type = buf[rec + bin_at]
    length_bytes = _BIN_LENGTH_BYTES.get(bin_type)
    if length_bytes is None or end < rec + bin_at + 1 + length_bytes:
        return None
    length_field = bytes(buf[rec + bin_at + 1:rec + bin_at + 1 + length_bytes])
    value_at = bin_at + 1 + length_bytes
    value_bytes = int.from_bytes(length_field, "big")
    record_bytes = value_at + value_bytes + 1
    if end - rec != count * record_bytes:
        return None
    checked += [(key_at, _NIL), (bin_at, bin_type), (record_bytes - 1, _NIL)]
    checked += [(bin_at + 1 + i, b) for i, b in enumerate(length_field)]
    for at, byte in checked:
        # the byte at this position of every record at once
        if _strided(buf, rec + at, end, record_bytes) != bytes((byte,)) * count:
            return None
    if ts_at == 1 and max(_strided(buf, rec + 1, end, record_bytes)) >= 0x80:
        return None  # some timestamp is not a positive fixint: another width
    return FixedLayout(body_at, record_bytes, ts_at, ts_code, value_at, value_bytes)


def _struct(unit: str, count: int) -> struct.Struct:
    s = _structs.get((unit, count))
    if s is None:
        if len(_structs) >= STRUCT_CACHE_MAX:
            _structs.clear()
        s = _structs[(unit, count)] = struct.Struct(">" + unit * count)
    return s


def fixed_column(buf: bytes | memoryview, start: int, layout: FixedLayout, lo: int, hi: int, timestamps: bool) -> list:
    """The values (``timestamps`` false: bytes) or timestamps (ints) of records ``lo..hi-1``
    of the payload at ``buf[start]`` laid out as ``layout`` says (``fixed_layout`` of it):
    only those records are read."""
    unit, out = layout.unit(timestamps), []
    at, left = start + layout.body_at + lo * layout.record_bytes, hi - lo
    while left > 0:
        n = min(left, UNPACK_RECORDS_MAX)
        out += _struct(unit, n).unpack_from(buf, at)
        at += n * layout.record_bytes
        left -= n
    return out
