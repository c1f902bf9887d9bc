"""Wire framing and the msgpack codec (fabric.wire): every malformed input is a MalformedFrame
with the right error code, never another exception; well-formed frames round-trip."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fabric import protocol as P
from fabric import wire
from fabric.errors import MalformedFrame

IDENT = b"\x00peer"
_DEFAULT = object()


def _frames(command: bytes = P.PING, header: object = _DEFAULT, *payloads: bytes, version: bytes = P.VERSION) -> list[bytes]:
    head = msgpack.packb({"id": 7} if header is _DEFAULT else header, use_bin_type=True)
    return [IDENT, b"", version, command, head, *payloads]


def _code(frames: list[bytes]) -> int:
    with pytest.raises(MalformedFrame) as e:
        wire.decode_request(frames)
    return e.value.code


def test_request_round_trip() -> None:
    frames = [IDENT, *wire.encode_request(P.PRODUCE, {"id": 5, "acks": -1, "parts": [["t", 0]]}, [b"batch"])]
    req = wire.decode_request(frames, received_ms=42)
    assert req.identity == [IDENT]
    assert req.command == P.PRODUCE
    assert req.id == 5
    assert req.header["parts"] == [["t", 0]]
    assert req.payloads == [b"batch"]
    assert req.received_ms == 42


def test_multi_frame_identity_is_kept_for_the_reply() -> None:
    frames = [b"hop1", b"hop2", b"", P.VERSION, P.PING, wire.pack({"id": 3})]
    req = wire.decode_request(frames)
    assert req.identity == [b"hop1", b"hop2"]
    reply = wire.encode_reply(req.identity, {"id": req.id, "ok": True}, [b"x"])
    assert reply[:3] == [b"hop1", b"hop2", b""]
    header, payloads = wire.decode_reply(reply[2:])
    assert header == {"id": 3, "ok": True}
    assert payloads == [b"x"]


def test_no_delimiter() -> None:
    assert _code([IDENT, P.VERSION, P.PING, wire.pack({"id": 1})]) == P.MALFORMED_REQUEST


def test_no_identity() -> None:
    assert _code([b"", P.VERSION, P.PING, wire.pack({"id": 1})]) == P.MALFORMED_REQUEST


@pytest.mark.parametrize("body_len", [0, 1, 2])
def test_truncated_body(body_len: int) -> None:
    body = [P.VERSION, P.PING, wire.pack({"id": 1})][:body_len]
    assert _code([IDENT, b"", *body]) == P.MALFORMED_REQUEST


@pytest.mark.parametrize("version", [b"\x00", b"\x02", b"", b"\x01\x01", b"v1"])
def test_wrong_version(version: bytes) -> None:
    assert _code(_frames(version=version)) == P.UNSUPPORTED_VERSION


@pytest.mark.parametrize("raw", [b"\xc1", b"\x92\x01", b"\xdc\xff", b"\x81\xa1"])
def test_header_not_msgpack(raw: bytes) -> None:
    assert _code([IDENT, b"", P.VERSION, P.PING, raw]) == P.MALFORMED_REQUEST


@pytest.mark.parametrize("header", [[1, 2], 5, "id", None, b"\x00", 1.5, True])
def test_header_not_a_map(header: object) -> None:
    assert _code(_frames(P.PING, header)) == P.MALFORMED_REQUEST


@pytest.mark.parametrize("rid", ["7", 1.0, None, True, [1], {"a": 1}])
def test_request_id_must_be_int(rid: object) -> None:
    assert _code(_frames(P.PING, {"id": rid})) == P.MALFORMED_REQUEST


def test_missing_id_means_zero() -> None:
    assert wire.decode_request(_frames(P.PING, {})).id == 0


def test_header_over_limit() -> None:
    big = wire.pack({"id": 1, "pad": b"x" * P.HEADER_BYTES_MAX})
    assert _code([IDENT, b"", P.VERSION, P.PING, big]) == P.REQUEST_TOO_LARGE


def test_too_many_frames() -> None:
    frames = _frames(P.PRODUCE, _DEFAULT, *([b"p"] * P.FRAMES_MAX))
    assert _code(frames) == P.REQUEST_TOO_LARGE


def test_msgpack_container_limits() -> None:
    # a map header that claims more entries than the limit must be refused cheaply
    huge_array = b"\xdd" + (P.MSGPACK_ARRAY_LEN_MAX + 1).to_bytes(4, "big")
    with pytest.raises(MalformedFrame) as e:
        wire.unpack(b"\x81\xa1a" + huge_array)
    assert e.value.code == P.MALFORMED_REQUEST


def test_typed_field_access() -> None:
    req = wire.decode_request(_frames(P.FETCH, {"id": 1, "n": 3, "b": True, "s": "x"}))
    assert req.get("n", int) == 3
    assert req.get("missing", int, 9) == 9
    with pytest.raises(MalformedFrame, match="missing field"):
        req.get("missing", int)
    with pytest.raises(MalformedFrame, match="must be int"):
        req.get("s", int)
    with pytest.raises(MalformedFrame, match="must be int"):
        req.get("b", int)  # bool is an int subclass but not a valid int field


@pytest.mark.parametrize("frames", [
    [],
    [b""],
    [b"", P.VERSION, P.REPLY],
    [b"x", P.VERSION, P.REPLY, wire.pack({"id": 1})],
    [b"", b"\x02", P.REPLY, wire.pack({"id": 1})],
    [b"", P.VERSION, P.PING, wire.pack({"id": 1})],
    [b"", P.VERSION, P.REPLY, wire.pack([1])],
    [b"", P.VERSION, P.REPLY, b"\xc1"],
])
def test_bad_replies(frames: list[bytes]) -> None:
    with pytest.raises(MalformedFrame):
        wire.decode_reply(frames)


def test_error_header() -> None:
    h = wire.error_header(4, P.NOT_LEADER, "moved", leader=2)
    assert h == {"id": 4, "error": P.NOT_LEADER, "message": "moved", "leader": 2}


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_decode_never_raises_anything_but_malformed(frames: list[bytes]) -> None:
    try:
        req = wire.decode_request([IDENT, *frames])
    except MalformedFrame as e:
        assert e.code in P.ERROR_NAMES
    else:
        assert isinstance(req.header, dict)
        assert isinstance(req.id, int)
