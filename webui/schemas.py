"""JSON Schemas shared by the routes (published in /openapi.json under components)."""

from __future__ import annotations

import re
from typing import NamedTuple

from fabric import protocol as P


class NameRule(NamedTuple):
    """A naming rule: its schema (a path parameter's), the same as a regex for what no schema
    checks (a WebSocket's query), and how a 40002 message words it."""

    schema: dict
    regex: re.Pattern  # fullmatch: the name keeps the rule
    len_max: int
    text: str  # "a name has <text>"

    @classmethod
    def of(cls, schema: dict, text: str) -> "NameRule":
        """The rule of ``schema`` (a string's: minLength, maxLength, and a pattern anchored by
        ^...$), its regex made from the schema's pattern and bounds: written once, the two
        cannot say different things."""
        pattern = schema["pattern"].removeprefix("^").removesuffix("$")
        bounds = rf"(?=.{{{schema['minLength']},{schema['maxLength']}}}\Z)"  # a lookahead: the pattern's own length
        return cls(schema, re.compile(f"{bounds}(?:{pattern})", re.DOTALL), schema["maxLength"], text)


# a name: of a topic, a consumer instance, a cluster -- in a path or a body
NAME_LEN_MAX = P.TOPIC_NAME_LEN_MAX  # as the coordinator's
NAME_CHARS = "[A-Za-z0-9._-]"
NAME = {"type": "string", "minLength": 1, "maxLength": NAME_LEN_MAX, "pattern": f"^{NAME_CHARS}+$"}
NAME_RULE = NameRule.of(NAME, f"1 to {NAME_LEN_MAX} characters of {NAME_CHARS}")
# a consumer group's name: every group id the coordinator takes (1 to P.GROUP_ID_LEN_MAX
# characters, any: nodes/coordinator/groups.py), so that a group a client library made can be
# addressed, but "/": a URL path cannot carry it inside one segment (%2F is decoded before
# routing). A WebSocket's group= keeps the same rule, so that a group it makes can be looked at
# and reset over REST.
GROUP_NAME_LEN_MAX = P.GROUP_ID_LEN_MAX
# Nor "." or "..": dot segments, which HTTP clients, browsers and proxies remove from a path (also
# percent-encoded: RFC 3986 6.2.2), so that a URL naming such a group reaches another route or none.
GROUP_NAME = {"type": "string", "minLength": 1, "maxLength": GROUP_NAME_LEN_MAX,
              "pattern": r"^(?:[^/.]|\.[^/.]|\.\.[^/])[^/]*$"}  # no lookahead: not every schema engine has one
GROUP_NAME_RULE = NameRule.of(GROUP_NAME, f"1 to {GROUP_NAME_LEN_MAX} characters, any but '/', and not '.' or '..' "
                                          "(percent-encoded in a URL)")
# the rule of a name parameter (in a path or a WebSocket's query) other than NAME_RULE
NAME_RULES = {"group_name": GROUP_NAME_RULE, "group": GROUP_NAME_RULE}
PARTITION = {"type": "integer", "minimum": 0, "maximum": P.PARTITIONS_MAX - 1}
PARTITIONS_COUNT = {"type": "integer", "minimum": 1, "maximum": P.PARTITIONS_MAX}  # the coordinator's limit
OFFSET = {"type": "integer", "minimum": 0, "maximum": 2 ** 62}
BASE64 = {"type": "string", "maxLength": 16 * 1024 * 1024,
          "pattern": "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"}
RECORDS_PER_REQUEST_MAX = 10_000
HEADERS_MAX = 100
TOPIC_CONFIGS = ["retention.ms", "retention.bytes", "min.insync.replicas", "max.message.bytes", "cleanup.policy",
                 "unclean.leader.election.enable"]
NULLABLE_STR = {"type": ["string", "null"]}


def headers_schema(value: dict) -> dict:
    return {"type": "array", "maxItems": HEADERS_MAX, "items": {
        "type": "object", "required": ["name", "value"], "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 255}, "value": {"anyOf": [value, {"type": "null"}]}}}}


def produce_schema(binary: bool) -> dict:
    value = BASE64 if binary else {}
    header_value = BASE64 if binary else {"type": "string", "maxLength": 65536}
    return {"type": "object", "required": ["records"], "properties": {
        "records": {"type": "array", "minItems": 1, "maxItems": RECORDS_PER_REQUEST_MAX, "items": {
            "type": "object", "required": ["value"], "properties": {
                "key": {"anyOf": [value, {"type": "null"}]} if binary else {},
                "value": value,
                "partition": {"anyOf": [PARTITION, {"type": "null"}]},
                "headers": headers_schema(header_value)}}}}}


PRODUCE_RESPONSE = {"type": "object", "required": ["offsets"], "properties": {
    "key_schema_id": {"type": "null"}, "value_schema_id": {"type": "null"},
    "offsets": {"type": "array", "items": {"type": "object", "required": ["partition", "offset", "error_code", "error"],
                                           "properties": {"partition": {"type": "integer"}, "offset": {"type": "integer"},
                                                          "error_code": {"type": ["integer", "null"], "enum": [None, 1, 2]},
                                                          "error": NULLABLE_STR}}}}}

# format=json: beside a key, value or header value that is not UTF-8 (so given in base64)
ENCODING = {"const": "base64", "description": "the field beside it is in base64 (its bytes are not UTF-8)"}
RECORD_OUT = {"type": "object", "required": ["topic", "partition", "offset", "timestamp", "key", "value", "headers"],
              "properties": {"topic": {"type": "string"}, "partition": {"type": "integer"}, "offset": {"type": "integer"},
                             "timestamp": {"type": "integer"}, "key": {}, "value": {},
                             "key_encoding": ENCODING, "value_encoding": ENCODING,
                             "headers": {"type": "array", "items": {"type": "object", "properties": {
                                 "name": {"type": "string"}, "value": NULLABLE_STR, "value_encoding": ENCODING}}}}}

REPLICA_V2 = {"type": "object", "required": ["broker", "leader", "in_sync"], "properties": {
    "broker": {"type": "integer"}, "leader": {"type": "boolean"}, "in_sync": {"type": "boolean"}}}
PARTITION_V2 = {"type": "object", "required": ["partition", "leader", "replicas"], "properties": {
    "partition": {"type": "integer"}, "leader": {"type": "integer"}, "replicas": {"type": "array", "items": REPLICA_V2}}}
TOPIC_V2 = {"type": "object", "required": ["name", "configs", "partitions"], "properties": {
    "name": {"type": "string"}, "configs": {"type": "object"}, "partitions": {"type": "array", "items": PARTITION_V2}}}
TOPIC_PARTITION = {"type": "object", "required": ["topic", "partition"], "properties": {"topic": NAME, "partition": PARTITION}}
TOPIC_PARTITION_OFFSET = {"type": "object", "required": ["topic", "partition", "offset"],
                          "properties": {"topic": NAME, "partition": PARTITION, "offset": OFFSET}}
# the id of the topic an offset is of (a topic deleted and made again under its name is another)
TOPIC_ID = {"type": "string", "minLength": 1, "maxLength": 64,
            "description": "the id of the topic the offset is of, as GET …/offsets answers it: an id of a topic "
                           "deleted since (made again under its name) is refused, 404 / 40401"}
SEEK_OFFSET = {"type": "object", "required": ["topic", "partition", "offset"],
               "properties": {**TOPIC_PARTITION_OFFSET["properties"], "topic_id": TOPIC_ID}}
