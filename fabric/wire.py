"""Framing and the msgpack codec with explicit limits.

Pure functions; thread-safe. Decoding never trusts the peer: sizes are checked before work
is done, and every failure is a ``MalformedFrame`` with an error code to answer with.
"""

from __future__ import annotations

from typing import Any

import msgpack

from fabric import protocol as P
from fabric.errors import MalformedFrame

_packer = msgpack.Packer(use_bin_type=True)


def pack(obj: Any) -> bytes:
    """msgpack-encode a header (maps, lists, ints, str, bytes)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes) -> Any:
    if len(data) > P.HEADER_BYTES_MAX:
        raise MalformedFrame(P.REQUEST_TOO_LARGE, f"header of {len(data)} bytes is over {P.HEADER_BYTES_MAX}")
    try:
        return msgpack.unpackb(
            data, raw=False, strict_map_key=False,
            max_array_len=P.MSGPACK_ARRAY_LEN_MAX, max_map_len=P.MSGPACK_MAP_LEN_MAX,
            max_bin_len=P.HEADER_BYTES_MAX, max_str_len=P.HEADER_BYTES_MAX,
        )
    except Exception as e:  # msgpack raises several unrelated types
        raise MalformedFrame(P.MALFORMED_REQUEST, f"header is not valid msgpack: {e}") from e


class Request:
    """One decoded request as a ROUTER sees it. ``payloads`` are raw frames (bytes)."""

    __slots__ = ("identity", "command", "header", "payloads", "id", "received_ms")

    def __init__(self, identity: list[bytes], command: bytes, header: dict, payloads: list[bytes], received_ms: int = 0) -> None:
        self.identity = identity
        self.command = command
        self.header = header
        self.payloads = payloads
        self.id = header.get("id", 0)
        self.received_ms = received_ms

    def get(self, key: str, kind: type, default: Any = ...) -> Any:
        """Typed header field; raises MalformedFrame naming the field when absent or mistyped."""
        value = self.header.get(key, default)
        if value is ...:
            raise MalformedFrame(P.MALFORMED_REQUEST, f"missing field {key!r}")
        if value is not default and not isinstance(value, kind):
            raise MalformedFrame(P.MALFORMED_REQUEST, f"field {key!r} must be {kind.__name__}")
        if kind is int and isinstance(value, bool):
            raise MalformedFrame(P.MALFORMED_REQUEST, f"field {key!r} must be int")
        return value


def split_router_frames(frames: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    """Split ``[identity..., b"", rest...]`` into (identity frames, rest)."""
    for i, f in enumerate(frames):
        if len(f) == 0:
            return frames[:i], frames[i + 1:]
    raise MalformedFrame(P.MALFORMED_REQUEST, "no empty delimiter frame")


def decode_request(frames: list[bytes], received_ms: int = 0) -> Request:
    """Decode a ROUTER message. Raises MalformedFrame; the caller answers (identity permitting)
    and counts it."""
    identity, _ = split_router_frames(frames[:8])  # the delimiter is near the front
    body = frames[len(identity) + 1:]
    if not identity:
        raise MalformedFrame(P.MALFORMED_REQUEST, "no identity")
    if len(body) < 3:
        raise MalformedFrame(P.MALFORMED_REQUEST, "need version, command and header frames")
    if body[0] != P.VERSION:
        raise MalformedFrame(P.UNSUPPORTED_VERSION, f"protocol version {body[0]!r} is not {P.VERSION!r}")
    header = unpack(body[2])
    if not isinstance(header, dict):
        raise MalformedFrame(P.MALFORMED_REQUEST, "header must be a map")
    rid = header.get("id", 0)
    if not isinstance(rid, int) or isinstance(rid, bool):
        raise MalformedFrame(P.MALFORMED_REQUEST, "field 'id' must be int")
    req = Request(identity, body[1], header, body[3:], received_ms)
    # limits checked after the header so that the error reply can name the request id
    if len(frames) > P.FRAMES_MAX:
        raise MalformedFrame(P.REQUEST_TOO_LARGE, f"{len(frames)} frames is over {P.FRAMES_MAX}", req)
    total_bytes = sum(map(len, frames))
    if total_bytes > P.REQUEST_BYTES_MAX:
        raise MalformedFrame(P.REQUEST_TOO_LARGE, f"request of {total_bytes} bytes is over {P.REQUEST_BYTES_MAX}", req)
    return req


def encode_reply(identity: list[bytes], header: dict, payloads: list[bytes] | tuple = ()) -> list[bytes]:
    return [*identity, b"", P.VERSION, P.REPLY, pack(header), *payloads]


def error_header(request_id: int, code: int, message: str, **extra: Any) -> dict:
    return {"id": request_id, "error": code, "message": message, **extra}


def encode_request(command: bytes, header: dict, payloads: list[bytes] | tuple = ()) -> list[bytes]:
    """DEALER side: ``[b"", VERSION, command, header, payload...]``."""
    return [b"", P.VERSION, command, pack(header), *payloads]


def decode_reply(frames: list[bytes]) -> tuple[dict, list[bytes]]:
    """DEALER side: returns (header, payloads); raises MalformedFrame."""
    if len(frames) < 4 or frames[0] != b"" or frames[1] != P.VERSION or frames[2] != P.REPLY:
        raise MalformedFrame(P.MALFORMED_REQUEST, "not a reply")
    header = unpack(frames[3])
    if not isinstance(header, dict):
        raise MalformedFrame(P.MALFORMED_REQUEST, "reply header must be a map")
    return header, frames[4:]
