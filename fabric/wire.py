"""Framing and the msgpack codec with explicit limits.

Pure functions; thread-safe. Decoding never trusts the peer: sizes are checked before work
is done, and every failure is a ``MalformedFrame`` with an error code to answer with.
"""

from __future__ import annotations

import operator
from typing import Any, NamedTuple

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
    """One decoded request as a ROUTER sees it. ``payloads`` are raw frames: bytes, or a large
    frame's own buffer (``fabric.buffers.OwnedFrame``, the request's to modify and keep)."""

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
    n = len(frames)
    if 4 < n <= P.FRAMES_MAX and frames[0] and not frames[1] and frames[2] == P.VERSION:
        # the common request, one identity frame and every limit kept: decoded with a call per
        # step; anything else, and every refusal, goes the general way below
        header = unpack(frames[4])
        if header.__class__ is dict:
            rid = header.get("id", 0)
            if rid.__class__ is int and frames[3].__class__ is bytes \
                    and sum(map(len, frames)) <= P.REQUEST_BYTES_MAX:
                return Request(frames[:1], frames[3], header, frames[5:], received_ms)
    return _decode_request_general(frames, received_ms)


def _decode_request_general(frames: list[bytes], received_ms: int) -> Request:
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
    command = body[1] if type(body[1]) is bytes else bytes(body[1])  # a dict key (a large frame is a bytearray)
    req = Request(identity, command, header, body[3:], received_ms)
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


# -- PUB/SUB messages: ``[topic-prefix, VERSION, kind, header, payload...]`` --------------------
class PubMessage(NamedTuple):
    """One PUB/SUB message; ``payloads`` are raw frames (replicated batches)."""

    topic: bytes
    kind: bytes
    header: dict
    payloads: list[bytes]


def encode_pub(topic: bytes, kind: bytes, header: dict, payloads: list | tuple = ()) -> list:
    """The frames of a PUB message (``fabric.protocol``'s ``PUB_*`` kinds)."""
    return [topic, P.VERSION, kind, pack(header), *payloads]


def decode_pub(frames: list[bytes], kind: bytes | tuple[bytes, ...]) -> PubMessage:
    """A SUB side's message of ``kind`` (or of one of the kinds of a tuple: the message's
    ``kind`` says which). Raises MalformedFrame (a subscriber counts and drops it: there is no
    one to answer)."""
    if len(frames) < 4:
        raise MalformedFrame(P.MALFORMED_REQUEST, f"a PUB message has at least 4 frames, not {len(frames)}")
    if frames[1] != P.VERSION:
        raise MalformedFrame(P.UNSUPPORTED_VERSION, f"protocol version {frames[1][:8]!r} is not {P.VERSION!r}")
    got = bytes(frames[2])
    if got not in (kind if isinstance(kind, tuple) else (kind,)):
        raise MalformedFrame(P.MALFORMED_REQUEST, f"PUB kind {got[:8]!r} where {kind!r} was expected")
    header = unpack(frames[3])
    if not isinstance(header, dict):
        raise MalformedFrame(P.MALFORMED_REQUEST, "PUB header must be a map")
    return PubMessage(frames[0], got, header, frames[4:])


def _field(header: dict, name: str, kind: type, optional: bool = False) -> Any:
    value = header.get(name)
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise MalformedFrame(P.MALFORMED_REQUEST, f"PUB field {name!r} must be {kind.__name__}")
    return value


class Heartbeat(NamedTuple):
    """``PUB_HEARTBEAT`` on ``TOPIC_HEARTBEAT``: every node, every heartbeat interval; brokers add
    their id, incarnation and metadata version (the coordinator's liveness input)."""

    node: str
    role: str
    pid: int
    ts_ms: int                          # the sender's wall clock, ms
    broker_id: int | None = None
    incarnation: str | None = None
    metadata_version: int | None = None
    cluster_id: str | None = None       # brokers: the cluster they belong to
    directory_id: str | None = None     # brokers: the id of their data directory (meta.properties)

    def to_header(self) -> dict:
        return {k: v for k, v in self._asdict().items() if v is not None}

    @classmethod
    def from_header(cls, h: dict) -> "Heartbeat":
        return cls(_field(h, "node", str), _field(h, "role", str), _field(h, "pid", int), _field(h, "ts_ms", int),
                   _field(h, "broker_id", int, True), _field(h, "incarnation", str, True),
                   _field(h, "metadata_version", int, True), _field(h, "cluster_id", str, True),
                   _field(h, "directory_id", str, True))


class ReplicaPosition(NamedTuple):
    """The header of ``PUB_REPLICA`` on ``replica_topic(topic, partition)``: the leader's position,
    with appended batches as payloads or, alone, as an idle heartbeat."""

    node: str                           # the leader's node name
    topic: str
    partition: int
    epoch: int                          # the leader epoch
    hw: int                             # high watermark (offset)
    leo: int                            # log end offset
    topic_id: str = ""                  # the leader's replica's topic id ("" if unknown)

    def to_header(self) -> dict:
        return self._asdict()

    @classmethod
    def from_header(cls, h: dict) -> "ReplicaPosition":
        get = h.get
        node, topic, partition, epoch, hw, leo = get("node", ""), get("topic"), get("partition"), get("epoch"), \
            get("hw"), get("leo")
        topic_id = get("topic_id")
        if node.__class__ is str and topic.__class__ is str and partition.__class__ is int and epoch.__class__ is int \
                and hw.__class__ is int and leo.__class__ is int and topic_id.__class__ is str:
            return cls(node, topic, partition, epoch, hw, leo, topic_id)  # every replicated batch: no call per field
        if not isinstance(node, str):
            raise MalformedFrame(P.MALFORMED_REQUEST, "PUB field 'node' must be str")
        return cls(node, _field(h, "topic", str), _field(h, "partition", int), _field(h, "epoch", int),
                   _field(h, "hw", int), _field(h, "leo", int), _field(h, "topic_id", str, True) or "")


_REPLICA_POSITION_FIELDS = operator.itemgetter(*ReplicaPosition._fields)  # a header's, in one call


def encode_heartbeat(hb: Heartbeat | dict) -> list:
    return encode_pub(P.TOPIC_HEARTBEAT, P.PUB_HEARTBEAT, hb.to_header() if isinstance(hb, Heartbeat) else hb)


def decode_heartbeat(frames: list[bytes]) -> Heartbeat:
    """Raises MalformedFrame."""
    return Heartbeat.from_header(decode_pub(frames, P.PUB_HEARTBEAT).header)


def encode_replica(position: ReplicaPosition, batches: list | tuple = ()) -> list:
    return encode_pub(P.replica_topic(position.topic, position.partition), P.PUB_REPLICA, position.to_header(), batches)


def decode_replica(frames: list[bytes]) -> tuple[ReplicaPosition, list[bytes]]:
    """(the leader's position, the batches: none for an idle heartbeat). Raises MalformedFrame."""
    msg = decode_pub(frames, P.PUB_REPLICA)
    return ReplicaPosition.from_header(msg.header), msg.payloads


def encode_metadata_push(metadata_wire: dict) -> list:
    return encode_pub(P.TOPIC_METADATA, P.PUB_METADATA, metadata_wire)


def decode_metadata_push(frames: list[bytes]) -> dict:
    """The coordinator's metadata in wire form (``ClusterMetadata.from_wire`` reads it), with
    its version checked. Raises MalformedFrame."""
    header = decode_pub(frames, P.PUB_METADATA).header
    _field(header, "version", int)
    return header


class ReplicaHeartbeat(NamedTuple):
    """``PUB_REPLICA_HEARTBEAT`` on ``REPLICA_HEARTBEAT_TOPIC``: a leader's idle heartbeat for many
    partitions in one message; each position as in ``ReplicaPosition`` (its ``node`` is this
    message's). On the wire: ``{"node", "parts": [[topic, partition, epoch, hw, leo, topic_id]]}``."""

    node: str
    positions: list[ReplicaPosition]

    def to_header(self) -> dict:
        return replica_heartbeat_header(self.node, [[p.topic, p.partition, p.epoch, p.hw, p.leo, p.topic_id]
                                                    for p in self.positions])

    @classmethod
    def from_header(cls, h: dict) -> "ReplicaHeartbeat":
        node, parts = h.get("node", ""), h.get("parts")
        if not isinstance(node, str) or not isinstance(parts, list):
            raise MalformedFrame(P.MALFORMED_REQUEST, "PUB fields 'node' and 'parts' must be str and list")
        positions = []
        new = tuple.__new__  # ReplicaPosition's own __new__ is Python: a heartbeat has thousands
        for p in parts:
            # the usual part, checked with type() (msgpack makes exact ints and strs); anything
            # else goes through the full check
            if not (type(p) is list and len(p) == 6 and type(p[0]) is str and type(p[1]) is int
                    and type(p[2]) is int and type(p[3]) is int and type(p[4]) is int and type(p[5]) is str):
                p = _replica_heartbeat_part(p)
            positions.append(new(ReplicaPosition, (node, *p)))
        return cls(node, positions)


def _replica_heartbeat_part(p: Any) -> list:
    """A heartbeat part other than the usual six fields: checked, with the topic id "" when
    it has none. Raises MalformedFrame."""
    if not (isinstance(p, list) and len(p) >= 5 and isinstance(p[0], str)
            and all(isinstance(v, int) and not isinstance(v, bool) for v in p[1:5])
            and (len(p) == 5 or isinstance(p[5], str))):
        raise MalformedFrame(P.MALFORMED_REQUEST, "a replica heartbeat part is [topic, partition, epoch, "
                                                  "hw, leo, topic_id]")
    return [p[0], p[1], p[2], p[3], p[4], p[5] if len(p) > 5 else ""]


def replica_heartbeat_header(node: str, parts: list[list]) -> dict:
    """The header of a ``ReplicaHeartbeat`` whose positions are given as their wire parts."""
    return {"node": node, "parts": parts}


def encode_replica_heartbeat(hb: ReplicaHeartbeat) -> list:
    return encode_pub(P.REPLICA_HEARTBEAT_TOPIC, P.PUB_REPLICA_HEARTBEAT, hb.to_header())


def encode_replica_heartbeat_parts(node: str, parts: list[list]) -> list:
    """``encode_replica_heartbeat`` of positions given as their wire parts, ``[topic,
    partition, epoch, hw, leo, topic_id]`` (a leader builds them without an object each)."""
    return encode_pub(P.REPLICA_HEARTBEAT_TOPIC, P.PUB_REPLICA_HEARTBEAT, replica_heartbeat_header(node, parts))


def decode_replication(frames: list[bytes]) -> tuple[str, list[ReplicaPosition], list[bytes]]:
    """A follower's SUB message, ``PUB_REPLICA`` or ``PUB_REPLICA_HEARTBEAT``: (the sender's node
    name, the leader positions in it, the batches -- of the one partition of a ``PUB_REPLICA``).
    Raises MalformedFrame."""
    if len(frames) > 3 and frames[2] == P.PUB_REPLICA and frames[1] == P.VERSION:
        # a partition's batches, the stream's common message: its header read with one call
        # per step (decode_pub's and from_header's checks, the same MalformedFrame otherwise)
        header = unpack(frames[3])
        if header.__class__ is dict:
            try:
                fields = _REPLICA_POSITION_FIELDS(header)
            except KeyError:
                fields = None
            if fields is not None and fields[0].__class__ is str and fields[1].__class__ is str \
                    and fields[2].__class__ is int and fields[3].__class__ is int and fields[4].__class__ is int \
                    and fields[5].__class__ is int and fields[6].__class__ is str:
                return fields[0], [tuple.__new__(ReplicaPosition, fields)], frames[4:]
    if len(frames) > 2 and frames[2] == P.PUB_REPLICA_HEARTBEAT:
        hb = ReplicaHeartbeat.from_header(decode_pub(frames, P.PUB_REPLICA_HEARTBEAT).header)
        return hb.node, hb.positions, []
    position, batches = decode_replica(frames)
    return position.node, [position], batches
