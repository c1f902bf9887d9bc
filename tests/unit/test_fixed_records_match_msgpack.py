"""The consume path's fixed-layout batch decoding (fabric/fixed_records.py, used by
``fabric.records.view_batches``) decodes every payload exactly as msgpack does, or refuses
exactly the same ones: random payloads of every msgpack integer and bin/str width, each with
one twist (a record of another shape, a wrong count, trailing or truncated bytes, compression)."""

from __future__ import annotations

import random
import struct
from typing import Any

import msgpack
import pytest

from engines import batch as B
from fabric import protocol as P
from fabric import records as R
from fabric.errors import RemoteError

SEEDS = range(8)
CASES_PER_SEED = 300

_INT_ENCODINGS = [  # (type byte, struct code, min, max): every msgpack integer width, also non-minimal ones
    (None, "B", 0, 0x7F), (0xCC, "B", 0, 0xFF), (0xCD, "H", 0, 0xFFFF), (0xCE, "I", 0, 0xFFFFFFFF),
    (0xCF, "Q", 0, 2**64 - 1), (0xD0, "b", -128, 127), (0xD1, "h", -2**15, 2**15 - 1),
    (0xD2, "i", -2**31, 2**31 - 1), (0xD3, "q", -2**63, 2**63 - 1),
]
_BIN = [(0xC4, "B"), (0xC5, "H"), (0xC6, "I")]
_STR = [(0xD9, "B"), (0xDA, "H"), (0xDB, "I")]


def _int(rng: random.Random, enc: tuple) -> bytes:
    type_byte, code, lo, hi = enc
    v = rng.choice([lo, hi, rng.randint(lo, hi), max(lo, 0), min(hi, 127)])
    body = struct.pack(">" + code, v)
    return body if type_byte is None else bytes([type_byte]) + body


def _value(rng: random.Random, length: int, str_type: bool, width: int = 0) -> bytes:
    """A bin (or str) of ``length`` bytes; its length field the ``width``-th that fits
    (0: msgpack's own, the shortest; 1, 2: non-minimal), or a random one when ``width`` < 0."""
    table = _STR if str_type else _BIN
    fits = [(t, c) for t, c in table if length < 256 ** struct.calcsize(">" + c)]
    t, c = rng.choice(fits) if width < 0 else fits[min(width, len(fits) - 1)]
    data = bytes(rng.choice([b"a", b"\xc0", b"\x94", b"z"])) * length if str_type else rng.randbytes(length)
    return bytes([t]) + struct.pack(">" + c, length) + data


def _array(count: int, form: int) -> bytes:
    if form == 0 and count < 16:
        return bytes([0x90 | count])
    if form <= 1 and count < 0x10000:
        return b"\xdc" + struct.pack(">H", count)
    return b"\xdd" + struct.pack(">I", count)


def _payload(rng: random.Random) -> tuple[bytes, int]:
    """A payload of mostly fixed-layout records with one random twist (or none), and the
    record count its batch header announces."""
    count = rng.choice([1, 2, 3, 15, 16, 17, 200, 1025])
    length = rng.choice([0, 1, 2, 255, 256, 300, 65535, 65536]) if count <= 17 else rng.choice([0, 1, 7, 255, 256])
    enc = rng.choice(_INT_ENCODINGS)
    str_type = rng.random() < 0.1
    width = rng.choice([0, 0, 0, 1, 2, -1])  # one length-field width for the batch, or mixed
    recs = [b"\x94" + _int(rng, enc) + b"\xc0" + _value(rng, length, str_type, width) + b"\xc0" for _ in range(count)]
    twist = rng.randrange(16)  # 9..15: no twist
    announced = count
    if twist == 1:      # one record of another timestamp width
        i = rng.randrange(count)
        recs[i] = b"\x94" + _int(rng, rng.choice(_INT_ENCODINGS)) + recs[i][len(recs[i]) - length - 1 - 1 - (1 + struct.calcsize(">" + _BIN[0][1])):]
    elif twist == 2:    # header count off by one
        announced = count + 1 if count == 1 else count + rng.choice([-1, 1])
    elif twist == 3:    # trailing bytes
        recs.append(rng.choice([b"\xc0", b"\x00" * (len(recs[0])), recs[0]]))
    elif twist == 4:    # truncated
        body = b"".join(recs)
        return _array(count, rng.randrange(3)) + body[:rng.randrange(len(body))], count
    elif twist == 5:    # a key b"" or a header list instead of nil
        i = rng.randrange(count)
        r = recs[i]
        recs[i] = r[:-1] + b"\x90" if rng.random() < 0.5 else r.replace(b"\xc0", b"\xc4\x00", 1)
    elif twist == 6:    # a record of 3 or 5 fields
        i = rng.randrange(count)
        recs[i] = (b"\x93" if rng.random() < 0.5 else b"\x95") + recs[i][1:] + (b"\xc0" if recs[i][0] else b"")
    elif twist == 7:    # one record with an extra record's worth at the end, one fewer elsewhere
        if count > 1:
            recs[0] = recs[0] + recs[1]
            del recs[1]
    elif twist == 8:    # a boolean or float timestamp
        i = rng.randrange(count)
        recs[i] = b"\x94" + rng.choice([b"\xc3", b"\xcb" + struct.pack(">d", 1.5)]) + b"\xc0" + _value(rng, length, False) + b"\xc0"
    form = 0 if rng.random() < 0.8 else rng.randrange(3)  # mostly msgpack's own (shortest) array header
    return _array(announced, form) + b"".join(recs), announced


def _batch(payload: bytes, count: int, compression: int) -> bytes:
    b = bytearray(B.build(R._compress(payload, compression), count, 0, 0, attributes=compression))
    B.set_base_offset(b, 7)
    return bytes(b)


def _by_msgpack(data: bytes) -> list[R.Record] | str:
    """What the msgpack path alone makes of ``data``: records, or "corrupt"."""
    out = []
    for h, view in B.iter_batches(data):
        try:
            recs = msgpack.unpackb(R._decompress(view[B.HEADER_BYTES:], h.compression), raw=False, use_list=False)
            ok = isinstance(recs, tuple) and len(recs) == h.record_count and set(map(len, recs)) == {4}
        except Exception:  # noqa: BLE001 -- msgpack raises several types; any of them is "corrupt"
            return "corrupt"
        if not ok:
            return "corrupt"
        out += [R.Record("t", 0, h.base_offset + i, *r) for i, r in enumerate(recs)]
    return out


_FIELDS = {"values": "value", "timestamps": "timestamp_ms", "keys": "key", "headers": "headers"}


def _by_view(data: bytes, column: str) -> Any:
    try:
        view = R.view_batches("t", 0, data)
        assert view is not None
        return view.records() if column == "records" else getattr(view, column)
    except RemoteError as e:
        assert e.code == P.CORRUPT_MESSAGE
        return "corrupt"


@pytest.mark.parametrize("seed", SEEDS)
def test_the_fixed_layout_path_decodes_every_payload_as_msgpack_does(seed: int) -> None:
    rng = random.Random(seed)
    for case in range(CASES_PER_SEED):  # bounded
        payload, count = _payload(rng)
        compression = rng.choice([B.COMPRESSION_NONE] * 3 + [B.COMPRESSION_ZSTD, B.COMPRESSION_LZ4])
        data = _batch(payload, count, compression)
        expected = _by_msgpack(data)
        for column in ("records", "values", "timestamps", "keys", "headers"):
            got = _by_view(data, column)
            want = expected if expected == "corrupt" or column == "records" else \
                [getattr(r, _FIELDS[column]) for r in expected]
            assert got == want, (seed, case, column, payload[:40])
