"""ZMTP 3.0 on the wire (23/ZMTP, NULL security): the greeting, the READY handshake, frames
and commands -- what every end that Loom speaks ZMTP through shares: the request port
(``fabric.zmtp``), its client end (``fabric.zmtp_client``), the PUB port (``fabric.zmtp_pub``)
and the SUB end (``fabric.zmtp_sub``). Pure functions of bytes; no sockets here."""

from __future__ import annotations

import struct
from typing import Callable

from fabric.errors import FabricError
from fabric.zmq_io import _size

GREETING_BYTES = 64
HANDSHAKE_BYTES_MAX = 4096         # the peer's READY command (its metadata) may be this long
GREETING_UNIT = -1                 # ``next_unit``'s flags for the greeting
FLAG_MORE, FLAG_LONG, FLAG_COMMAND = 0x01, 0x02, 0x04
_SIGNATURE_FIRST, _SIGNATURE_LAST = 0xFF, 0x7F


def _greeting() -> bytes:
    """Signature, version 3.0, mechanism NULL, as-server 0, filler (ZMTP 3.0, 23/ZMTP)."""
    return bytes([_SIGNATURE_FIRST]) + bytes(8) + bytes([_SIGNATURE_LAST, 3, 0]) + b"NULL".ljust(20, b"\0") + bytes(32)


def command(body: bytes) -> bytes:
    return frame_header(len(body), more=False, command=True) + body


def frame_header(size: int, *, more: bool, command: bool = False) -> bytes:
    flags = (FLAG_MORE if more else 0) | (FLAG_COMMAND if command else 0)
    if size <= 255:
        return bytes([flags, size])
    return struct.pack(">BQ", flags | FLAG_LONG, size)


def metadata_property(name: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value


GREETING = _greeting()


def ready_command(socket_type: bytes, identity: bytes = b"") -> bytes:
    """The READY command announcing ``socket_type`` (and a routing id, when given)."""
    props = metadata_property(b"Socket-Type", socket_type)
    if identity:
        props += metadata_property(b"Identity", identity)
    return command(b"\x05READY" + props)


class ProtocolViolation(FabricError):
    """The peer does not speak ZMTP 3 as its socket type must: it is disconnected."""


def greeting_at(buf: bytearray, pos: int) -> bool:
    """Whether a whole ZMTP 3 greeting with the NULL mechanism is at ``pos`` (False: not all
    of it yet). Raises ProtocolViolation as soon as the bytes there cannot be one."""
    avail = len(buf) - pos
    if avail >= 1 and buf[pos] != _SIGNATURE_FIRST:
        raise ProtocolViolation("not a ZMTP greeting")
    if avail >= 11 and ((buf[pos + 9] & 1) != 1 or buf[pos + 10] < 3):
        raise ProtocolViolation(f"not a ZMTP 3 greeting (version {buf[pos + 10]})")
    if avail < GREETING_BYTES:
        return False
    if bytes(buf[pos + 12:pos + 32]).rstrip(b"\0") != b"NULL":
        raise ProtocolViolation("only the NULL security mechanism is spoken")
    return True


def frame_header_at(buf: bytearray, pos: int) -> tuple[int, int, int] | None:
    """(flags, body size, header bytes) of the frame at ``pos``; None until its header is whole."""
    avail = len(buf) - pos
    if avail < 2:
        return None
    flags = buf[pos]
    if flags & FLAG_LONG:
        if avail < 9:
            return None
        return flags, struct.unpack_from(">Q", buf, pos + 1)[0], 9
    return flags, buf[pos + 1], 2


def encode_frames(frames: list, join_bytes_max: int) -> tuple[list, list[int]]:
    """ZMTP frames of one message as pieces for ``sendmsg`` and their sizes: the frame headers
    joined with the frames of at most ``join_bytes_max`` bytes, a larger frame handed on as it
    is (zero-copy: joining it would copy megabytes once more). A frame that is not a contiguous
    buffer raises before anything is sent."""
    n = len(frames)
    if 0 < n <= _SHORT_FRAMES_MAX and _JOINABLE.issuperset(map(type, frames)):
        # the common message, a few short frames (requests, replies, acks, a one-record batch
        # published): all joined, as below, with no Python call per frame -- the sizes, the
        # heads and the interleaving are made by C loops
        sizes = list(map(len, frames))
        if max(sizes) <= (255 if join_bytes_max >= 255 else join_bytes_max):
            parts = [b""] * (2 * n)
            parts[::2] = map(_SHORT_HEADS.__getitem__, sizes)
            parts[1::2] = frames
            parts[-2] = _LAST_SHORT_HEADS[sizes[-1]]
            return [b"".join(parts)], [sum(sizes) + 2 * n]
    return _encode_frames(frames, join_bytes_max)


_SHORT_FRAMES_MAX = 16
_JOINABLE = frozenset((bytes, bytearray))  # len() is their size in bytes; joined as they are
_SHORT_HEADS = [bytes([FLAG_MORE, n]) for n in range(256)]
_LAST_SHORT_HEADS = [bytes([0, n]) for n in range(256)]


def _encode_frames(frames: list, join_bytes_max: int) -> tuple[list, list[int]]:
    pieces: list = []
    sizes: list[int] = []
    parts: list = []
    joined = 0
    last = len(frames) - 1
    for i, f in enumerate(frames):
        n = _size(f)
        head = frame_header(n, more=i < last)
        if n <= join_bytes_max:
            parts += (head, f)
            joined += len(head) + n
            continue
        parts.append(head)
        pieces.append(b"".join(parts))
        sizes.append(joined + len(head))
        pieces.append(f)
        sizes.append(n)
        parts, joined = [], 0
    if parts:
        pieces.append(b"".join(parts))
        sizes.append(joined)
    return pieces, sizes


def pong_for(body: bytes) -> bytes | None:
    """The PONG answering a ZMTP 3.1 PING command (with its context), None for another command."""
    if body[:5] == b"\x04PING" and len(body) >= 7:
        return command(b"\x04PONG" + body[7:])
    return None


def next_unit(buf: bytearray, pos: int, greeted: bool, limit: Callable[[int], int]) -> tuple[int, bytes, int] | None:
    """The greeting (until ``greeted``), else the next frame at ``pos``, when whole: (flags, body,
    bytes used) -- flags -1 and no body for the greeting; None until it is whole. A frame over
    ``limit(flags)`` bytes is a ProtocolViolation as soon as its header is read."""
    if not greeted:
        return (GREETING_UNIT, b"", GREETING_BYTES) if greeting_at(buf, pos) else None
    header = frame_header_at(buf, pos)
    if header is None:
        return None
    flags, size, head = header
    if size > limit(flags):
        raise ProtocolViolation(f"a frame of {size} bytes (at most {limit(flags)})")
    if len(buf) - pos < head + size:
        return None
    with memoryview(buf) as view:  # released before the buffer shrinks
        return flags, bytes(view[pos + head:pos + head + size]), head + size


def parse_ready(body: bytes) -> dict[bytes, bytes]:
    """The metadata of a READY command body. Raises ProtocolViolation."""
    if body[:6] != b"\x05READY":
        raise ProtocolViolation(f"expected READY, got {bytes(body[:16])!r}")
    props, i = {}, 6
    while i < len(body):
        n = body[i]
        name = bytes(body[i + 1:i + 1 + n])
        if i + 1 + n + 4 > len(body):
            raise ProtocolViolation("truncated READY property")
        (size,) = struct.unpack_from(">I", body, i + 1 + n)
        start = i + 1 + n + 4
        if start + size > len(body):
            raise ProtocolViolation("truncated READY property value")
        props[name.lower()] = bytes(body[start:start + size])
        i = start + size
    return props
