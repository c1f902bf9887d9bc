"""Data plane, Confluent REST Proxy v2: topics, partitions, offsets, produce, the records
browser (Loom's extension) and brokers. Consumer instances are in routes_consumers.py."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable, Iterable

from webui import schemas as S
from webui.context import Gateway
from webui.errors import CODES, ApiError, ClusterError
from webui.json_text import loads_json
from webui.spec import Api

BINARY = "application/vnd.kafka.binary.v2+json"
JSON_EMBEDDED = "application/vnd.kafka.json.v2+json"
PLAIN_JSON = "application/json"
ACKS = {"0": 0, "1": 1, "all": "all", "-1": "all"}
BROWSE_COUNT_MAX = 1000
BROWSE_TIMEOUT_MS_MAX = 5000
BYTES_MAX = 16 * 1024 * 1024


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(bytes(data)).decode("ascii")


def unb64(text: str | None, what: int) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(what, "not valid base64") from None


def encode_records(body: dict, binary: bool, partition: int | None = None) -> list[tuple]:
    """Request records as (key, value, headers, partition) bytes tuples; ``partition``, when
    given, replaces each record's own. Raises ApiError 42201 (key), 42202 (value) or 42204
    (header) for base64 that does not decode."""
    if binary:
        try:
            return _decode_binary(body["records"], partition)
        except (binascii.Error, ValueError):
            pass  # one of them does not decode: the slow loop below names which
    out = []
    for r in body["records"]:
        if binary:
            key, value = unb64(r.get("key"), 42201), unb64(r["value"], 42202) or b""
            headers = [[h["name"], unb64(h["value"], 42204)] for h in r.get("headers") or []]
        else:
            key = None if r.get("key") is None else _embedded(r["key"], 42201)
            value = _embedded(r["value"], 42202)
            headers = [[h["name"], None if h["value"] is None else h["value"].encode()] for h in r.get("headers") or []]
        out.append((key, value, headers or None, r.get("partition") if partition is None else partition))
    return out


def _embedded(value: Any, error_code: int) -> bytes:
    """An embedded JSON key or value as the bytes stored: strict JSON. Raises ApiError
    ``error_code`` when it is nested too deeply for the interpreter's stack (not a programmer
    error) or holds a NaN or infinity (the bodies are read strictly: none should)."""
    what = CODES[error_code].split()[-1]
    try:
        return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
    except RecursionError:
        raise ApiError(error_code, f"{what} nested too deeply") from None
    except ValueError:
        raise ApiError(error_code, f"{what} holds NaN or an infinity: not JSON") from None


def _decode_binary(records: list[dict], partition: int | None) -> list[tuple]:
    """The binary format's hot path (a 500-record body is decoded here, ~1 µs a record):
    raises binascii.Error or ValueError at the first field that does not decode."""
    a2b = binascii.a2b_base64
    if sum(map(len, records)) == len(records):  # each record only its value (the schema requires it): no .get
        return [(None, a2b(r["value"], strict_mode=True), None, partition) for r in records]
    out = []
    append = out.append
    for r in records:
        key, headers = r.get("key"), r.get("headers")
        if headers:
            headers = [[h["name"], None if h["value"] is None else a2b(h["value"], strict_mode=True)] for h in headers]
        append((None if key is None else a2b(key, strict_mode=True), a2b(r["value"], strict_mode=True),
                headers or None, r.get("partition") if partition is None else partition))
    return out


def decode_value(data: bytes | None, fmt: str) -> Any:
    """A stored key or value in the consumer's format: base64 (binary) or JSON (json: values
    that are not strict JSON come as text, or base64 when not UTF-8)."""
    if data is None:
        return None
    if fmt == "binary":
        return b64(data)
    return _json_field(data)[0]


def _json_field(data: bytes) -> tuple[Any, bool]:
    """(the bytes as JSON, or else as text, or else in base64; whether base64)."""
    try:
        return loads_json(bytes(data)), False
    except ValueError:  # not JSON, or nested too deeply to read: as text
        return text_or_base64(data)


def text_or_base64(data: bytes) -> tuple[str, bool]:
    """(``data`` as UTF-8 text, or in base64 when it is not UTF-8; whether base64)."""
    try:
        return bytes(data).decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(bytes(data)).decode("ascii"), True


def _put_json(out: dict, name: str, data: bytes | None, read: Callable[[bytes], tuple[Any, bool]]) -> dict:
    """``out[name]`` in the JSON format (``read``: _json_field or text_or_base64), with
    ``name + "_encoding": "base64"`` beside it when it is base64 -- which alone cannot be told
    from a JSON string -- as ``loom consume --format json`` marks it."""
    if data is None:
        out[name] = None
        return out
    out[name], encoded = read(data)
    if encoded:
        out[name + "_encoding"] = "base64"
    return out


def record_json(r: Any) -> dict:
    """A record in the JSON format (keys and values JSON, or text, or base64; header values
    text or base64)."""
    out = {"topic": r.topic, "partition": r.partition, "offset": r.offset, "timestamp": r.timestamp_ms}
    _put_json(out, "key", r.key, _json_field)
    _put_json(out, "value", r.value, _json_field)
    out["headers"] = [_put_json({"name": n}, "value", v, text_or_base64) for n, v in (r.headers or [])]
    return out


def records_json(records: list, fmt: str) -> list[dict]:
    """The records in ``fmt``: ``record_json`` of each, or for the binary format (everything
    base64) one comprehension (the WebSocket stream's hot path: a dict and a base64 per record)."""
    if fmt != "binary":
        return [record_json(r) for r in records]
    b2a = binascii.b2a_base64
    return [{"topic": t, "partition": p, "offset": o, "timestamp": ts,
             "key": None if k is None else b2a(k, newline=False).decode("ascii"),
             "value": b2a(v, newline=False).decode("ascii"),
             "headers": [{"name": n, "value": None if hv is None else b2a(hv, newline=False).decode("ascii")}
                         for n, hv in h] if h else []}
            for t, p, o, ts, k, v, h in records]


def offsets_json(outcomes: list) -> list[dict]:
    """Produce outcomes (partition, offset, error, retriable) as Confluent's ``offsets``:
    error_code 1 (not retriable) or 2 (retriable)."""
    return [{"partition": p, "offset": o, "error_code": None, "error": None} if e is None else
            {"partition": p, "offset": o, "error_code": 2 if retriable else 1, "error": e}
            for p, o, e, retriable in outcomes]


def partition_v2(p: Any) -> dict:
    return {"partition": p.partition, "leader": p.leader,
            "replicas": [{"broker": b, "leader": b == p.leader, "in_sync": b in p.isr} for b in p.replicas]}


def check_partitions(metadata: Any, partitions: Iterable[tuple[str, int]]) -> None:
    """Raises ClusterError topic_not_found or partition_not_found for the first of
    ``partitions`` that ``metadata`` lacks."""
    for topic, partition in partitions:
        t = metadata.topics.get(topic)
        if t is None:
            raise ClusterError("topic_not_found", f"topic {topic!r} not found")
        if partition >= len(t.partitions):
            raise ClusterError("partition_not_found",
                               f"topic {topic!r} has no partition {partition} (it has {len(t.partitions)})")


def register(api: Api, gw: Gateway) -> None:
    topic_path = {"topic_name": api.schema("TopicName", S.NAME)}
    part_path = {**topic_path, "partition_id": api.schema("PartitionId", S.PARTITION)}
    tp_errors = (40401, 40402)

    @api.op("GET", "/topics", role="read", tag="v2", summary="List topic names",
            response={"type": "array", "items": {"type": "string"}})
    def list_topics() -> list[str]:
        return sorted(t for t in gw.agent.metadata().topics if not t.startswith("__"))

    @api.op("GET", "/topics/{topic_name}", role="read", tag="v2", summary="Describe a topic",
            path_params=topic_path, response=api.schema("TopicV2", S.TOPIC_V2), errors=(40401,))
    def get_topic(topic_name: str) -> dict:
        t = gw.agent.topic(topic_name)
        return {"name": t.name, "configs": {k: str(v) for k, v in t.configs.items()},
                "partitions": [partition_v2(p) for p in t.partitions]}

    @api.op("GET", "/topics/{topic_name}/partitions", role="read", tag="v2", summary="A topic's partitions",
            path_params=topic_path, response={"type": "array", "items": api.schema("PartitionV2", S.PARTITION_V2)},
            errors=(40401,))
    def list_partitions(topic_name: str) -> list[dict]:
        return [partition_v2(p) for p in gw.agent.topic(topic_name).partitions]

    def one_partition(topic: str, partition: int) -> Any:
        t = gw.agent.topic(topic)
        if partition >= len(t.partitions):
            raise ApiError(40402, f"topic {topic!r} has no partition {partition} (it has {len(t.partitions)})")
        return t.partitions[partition]

    @api.op("GET", "/topics/{topic_name}/partitions/{partition_id}", role="read", tag="v2",
            summary="One partition", path_params=part_path, response={"$ref": "#/components/schemas/PartitionV2"},
            errors=tp_errors)
    def get_partition(topic_name: str, partition_id: int) -> dict:
        return partition_v2(one_partition(topic_name, partition_id))

    @api.op("GET", "/topics/{topic_name}/partitions/{partition_id}/offsets", role="read", tag="v2",
            summary="First and next offset of a partition (end_offset is the high watermark)", path_params=part_path,
            response={"type": "object", "required": ["beginning_offset", "end_offset"],
                      "properties": {"beginning_offset": {"type": "integer"}, "end_offset": {"type": "integer"}}},
            errors=tp_errors)
    def partition_offsets(topic_name: str, partition_id: int) -> dict:
        one_partition(topic_name, partition_id)
        start, end = gw.agent.offsets(topic_name, [partition_id])[partition_id]
        return {"beginning_offset": start, "end_offset": end}

    @api.op("GET", "/topics/{topic_name}/partitions/{partition_id}/records", role="read", tag="v2",
            summary="Read records of one partition (the message browser)", path_params=part_path,
            description="Records from `offset` (default: the log start) up to the high watermark; values, keys "
                        "and headers base64 (`format=binary`, the default) or JSON (`format=json`). With nothing "
                        "there yet it waits up to `timeout` ms for records, unless the gateway's long-poll "
                        "budget is taken: then it answers at once (maybe with none; poll again).",
            query={"offset": S.OFFSET, "count": {"type": "integer", "minimum": 1, "maximum": BROWSE_COUNT_MAX},
                   "max_bytes": {"type": "integer", "minimum": 1, "maximum": BYTES_MAX},
                   "timeout": {"type": "integer", "minimum": 0, "maximum": BROWSE_TIMEOUT_MS_MAX},
                   "format": {"type": "string", "enum": ["binary", "json"]}},
            response={"type": "array", "items": api.schema("Record", S.RECORD_OUT)}, errors=tp_errors)
    def browse(topic_name: str, partition_id: int, query: dict) -> list[dict]:
        one_partition(topic_name, partition_id)
        with gw.long_polls.wait_ms(query.get("timeout", 0)) as timeout_ms:  # over the budget: no wait
            records = gw.agent.read(topic_name, partition_id, query.get("offset"), query.get("count", 100),
                                    query.get("max_bytes", 1024 * 1024), timeout_ms)
        return records_json(records, query.get("format", "binary"))

    produce_body = {BINARY: api.schema("ProduceBinary", S.produce_schema(True)),
                    JSON_EMBEDDED: api.schema("ProduceJson", S.produce_schema(False)),
                    PLAIN_JSON: {"$ref": "#/components/schemas/ProduceJson"}}
    produce_query = {"acks": {"type": "string", "enum": sorted(ACKS)}}
    # produce reads its body's integers itself: a record's partition is its only one, which the
    # agent reads as an integer (1.0 as 1) -- walking 500 records here costs as much as decoding them
    produce_response = api.schema("ProduceResponse", S.PRODUCE_RESPONSE)

    def produce(topic: str, partition: int | None, query: dict, body: dict, content_type: str) -> dict:
        records = encode_records(body, content_type == BINARY, partition)
        return {"key_schema_id": None, "value_schema_id": None,
                "offsets": offsets_json(gw.agent.produce(topic, records, ACKS[query.get("acks", "all")], partition))}

    @api.op("POST", "/topics/{topic_name}", role="produce", tag="v2", summary="Produce records to a topic",
            description="Records are partitioned by key (or sticky without a key) unless they name a partition. "
                        "Per-record failures come back in `offsets` with error_code 1 (not retriable) or 2 (retriable).",
            path_params=topic_path, query=produce_query, body=produce_body, response=produce_response,
            errors=(40401, 42201, 42202, 50302), body_integers=False)
    def produce_topic(topic_name: str, query: dict, body: dict, content_type: str) -> dict:
        return produce(topic_name, None, query, body, content_type)

    @api.op("POST", "/topics/{topic_name}/partitions/{partition_id}", role="produce", tag="v2",
            summary="Produce records to one partition", path_params=part_path, query=produce_query,
            body=produce_body, response=produce_response, errors=(40401, 40402, 42201, 42202, 50302),
            body_integers=False)
    def produce_partition(topic_name: str, partition_id: int, query: dict, body: dict, content_type: str) -> dict:
        return produce(topic_name, partition_id, query, body, content_type)

    @api.op("GET", "/brokers", role="read", tag="v2", summary="Broker ids",
            response={"type": "object", "required": ["brokers"],
                      "properties": {"brokers": {"type": "array", "items": {"type": "integer"}}}})
    def brokers() -> dict:
        return {"brokers": sorted(gw.agent.metadata().brokers)}


__all__ = ["register", "ClusterError"]
