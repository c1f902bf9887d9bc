"""Seeded bad input for the gateway's bad-input fuzz (tests/unit/test_gateway_bad_input_fuzz.py,
tests/fuzz_gateway.py): bodies made from the routes' own JSON Schemas and then broken (wrong
types at every level, missing and extra fields, huge and odd numbers, long and odd strings) or
taken to the edges of what they allow, odd path segments, query strings, content types and
headers; WebSocket messages, queries and first-message keys.
"""

from __future__ import annotations

import json
import random
import re
import urllib.parse
from typing import Any, Iterator, NamedTuple

from tests.unit.builders_gateway_fuzz import ADMIN_KEY, CLUSTER, GROUP, INSTANCE
from webui.schemas import produce_schema
from webui.spec import _inline


# -- bad input -------------------------------------------------------------------------------
HUGE_NUMBERS = [2**63, 2**64, -2**63 - 1, 10**30, -1, 1.0, 1.5, -0.0, 1e300, 2**62 + 1, 10**4000]
ODD_STRINGS = ["", " ", "a" * 300, "x" * 70_000, "..", ".", "\u00e9", "\U0001F600", "\x00", "\ud800", "t\n",
               "NaN", "-1", "1e3", "0x10", "true", "null", "a/b", "%2F", "%FF"]
BAD_VALUES: list[Any] = [None, True, False, 0, [], {}, [[[]]], {"a": {}}, *HUGE_NUMBERS, *ODD_STRINGS[:12]]
ODD_SEGMENTS = ["", "..", ".", "%2e%2e", "%FF", "%2F", "%C3%A9", "%F0%9F%98%80", "%00", "a" * 300, "a%20b",
                "t;x", "-1", "00", "9" * 30, "2147483648", "%E2%80%AE", "~", "t%0Ax", "%25", "+"]
CONTENT_TYPES = ["text/plain", "", "application/json; charset=latin-1", "APPLICATION/JSON", "application/xml",
                 "application/vnd.kafka.binary.v2+json;x=y", "multipart/form-data; boundary=x",
                 "application/x-www-form-urlencoded", "application/vnd.kafka.avro.v2+json", "*/*", "application/"]
RAW_BODIES = [b"", b"null", b"[]", b"{", b"\xff\xfe\xfd", b"{}", b'"x"', b"1", b"NaN", b'{"a": Infinity}',
              b"\xef\xbb\xbf{}", b"[" * 5000 + b"]" * 5000, b'{"a": 1e999}', b"9" * 5000, b'{"a":1}{"a":2}',
              b'{"records": "\\ud800"}', b"\x00", b'{"records": [{"value": "\\udfff"}]}']
AUTH_VARIANTS = [f"Bearer {ADMIN_KEY}", f"bearer {ADMIN_KEY}", f"BEARER  {ADMIN_KEY}  ", f"Basic {ADMIN_KEY}", "Bearer",
                 "Bearer ", "Bearer " + "x" * 5000, f"Bearer {ADMIN_KEY}\u00e9", "Token abc", "\u00ff\u00fe"]


def sample(schema: dict, components: dict, rng: random.Random, depth: int = 0, edge: bool = False) -> Any:
    """A value ``schema`` accepts (most of the time: what a generator this small can make);
    with ``edge``, one at its edges: bounds, integers written as 1.0, the longest strings and
    lists, names of dots and dashes, any text where any is allowed."""
    schema = _inline(schema, components)
    if "allOf" in schema:
        merged: dict = {}
        for part in schema["allOf"]:
            merged.update(part)
        schema = {**{k: v for k, v in schema.items() if k != "allOf"}, **merged}
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if "anyOf" in schema:
        return sample(rng.choice(schema["anyOf"]), components, rng, depth, edge)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = rng.choice(kind)
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", ()))
        return {k: sample(s, components, rng, depth + 1, edge) for k, s in props.items()
                if k in required or rng.random() < 0.6}
    if kind == "array":
        n = max(schema.get("minItems", 0), rng.randint(0, 3))
        if edge and rng.random() < 0.3:
            n = min(schema.get("maxItems", 300), 300)  # long: of one item repeated, or of many
            one = sample(schema.get("items", {}), components, rng, depth + 1, edge)
            return [one] * n if rng.random() < 0.5 else \
                [sample(schema.get("items", {}), components, rng, depth + 1, edge) for _ in range(n)]
        return [sample(schema.get("items", {}), components, rng, depth + 1, edge) for _ in range(n)]
    if kind == "integer":
        lo, hi = schema.get("minimum", 0), schema.get("maximum", 20)
        if edge:
            return rng.choice([lo, hi, float(lo), float(hi), -0.0 if lo <= 0 else lo, lo + 1, hi - 1])
        return rng.randint(lo, min(hi, lo + 20))
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    if kind == "string" or "pattern" in schema:
        return _string_for(schema, rng, edge)
    if edge:  # any JSON (an embedded value)
        return rng.choice(["", "\u00e9\U0001F600", 2**70, -0.0, 1e308, [[[[]]]], {"": None}, "x" * 5000])
    return rng.choice(["v", 1, {"k": [1, None]}, None])


EDGE_STRINGS = [".", "..", "-", "_", "a.", "-.-", " ", "\u00e9", "\U0001F600", "a\nb", "%", "+", "\x00", "",
                "9" * 9, "0" * 6, "100", "999999", "AAAA", "+/+/", "////", "====", "__x", "\u202e"]


def _string_for(schema: dict, rng: random.Random, edge: bool = False) -> str:
    pattern = schema.get("pattern")
    lo, hi = schema.get("minLength", 0), min(schema.get("maxLength", 5000), 5000)  # bounded: lists of them
    candidates = ["t", "eA==", "1000", "g", "one"]
    if edge:
        candidates = rng.sample(EDGE_STRINGS, len(EDGE_STRINGS)) + ["a" * hi, "A" * (hi - hi % 4), "9" * hi] + candidates
    for s in candidates:
        if (pattern is None or re.search(pattern, s)) and lo <= len(s) <= hi:
            return s
    return "t"


def _paths(value: Any, at: tuple = ()) -> Iterator[tuple]:
    yield at
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _paths(v, at + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _paths(v, at + (i,))


def _replace(value: Any, at: tuple, new: Any) -> Any:
    if not at:
        return new
    head, rest = at[0], at[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


def mutate(value: Any, rng: random.Random) -> Any:
    """``value`` broken at one place: a wrong type or odd value, a field dropped or added, a
    list made long or wrapped."""
    at = rng.choice(list(_paths(value)))
    node: Any = value
    for step in at:
        node = node[step]
    how = rng.random()
    if how < 0.6:
        return _replace(value, at, rng.choice(BAD_VALUES))
    if how < 0.7 and isinstance(node, dict) and node:
        return _replace(value, at, {k: v for k, v in node.items() if k != rng.choice(list(node))})
    if how < 0.8 and isinstance(node, dict):
        return _replace(value, at, {**node, rng.choice(["extra", "", "\u00e9", "id"]): rng.choice(BAD_VALUES)})
    if how < 0.9 and isinstance(node, list) and node:
        return _replace(value, at, node * rng.choice([2, 50]))
    return _replace(value, at, [node] if rng.random() < 0.5 else {"x": node})


def to_json(value: Any) -> bytes:
    """``value`` as JSON text, lone surrogates escaped; a float that is not finite stays as
    Python writes it (NaN, Infinity: what a sloppy client sends)."""
    try:
        return json.dumps(value).encode()
    except (ValueError, RecursionError):
        return b"{}"


class Case(NamedTuple):
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes | None


PATH_VALUES = {"topic_name": "t", "partition_id": "0", "group_name": GROUP, "instance": INSTANCE, "cluster_id": CLUSTER}


def rest_cases(api: Any, rng: random.Random, per_op: int) -> Iterator[tuple[Any, Case]]:
    """``per_op`` seeded bad requests of each of ``api``'s operations."""
    for op in api.ops:
        for _ in range(per_op):
            yield op, _case(api, op, rng)


def _case(api: Any, op: Any, rng: random.Random) -> Case:
    path = op.path
    for name in op.path_params:
        value = PATH_VALUES[name] if rng.random() < 0.6 else rng.choice(ODD_SEGMENTS)
        if name == "partition_id" and rng.random() < 0.2:
            value = str(rng.choice([3, 9999, 10_000, 2**31, 2**63, 2**64]))
        path = path.replace("{" + name + "}", value)
    query = _query(op, rng)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"} if rng.random() < 0.9 else \
        {"Authorization": rng.choice(AUTH_VARIANTS)}
    if rng.random() < 0.1:
        headers["X-API-Key"] = rng.choice([ADMIN_KEY, "", "x" * 300])
    if rng.random() < 0.1:
        headers["X-Request-Id"] = rng.choice(["", "x" * 100, "a b", "\u00e9", "<script>"])
    body = None
    if op.body is not None or rng.random() < 0.1:
        types = list(op.body or {"application/json": {}})
        content_type = rng.choice(types) if rng.random() < 0.8 else rng.choice(CONTENT_TYPES)
        if content_type:
            headers["Content-Type"] = content_type
        schema = (op.body or {}).get(content_type) or next(iter((op.body or {"x": {}}).values()))
        roll = rng.random()
        if roll < 0.15:
            body = rng.choice(RAW_BODIES)
        elif roll < 0.45:  # what the schema allows, at its edges: it gets past validation
            body = to_json(sample(schema, api.components, rng, edge=True))
        else:
            value = sample(schema, api.components, rng)
            for _ in range(1 if roll < 0.8 else 3):
                value = mutate(value, rng)
            body = to_json(value)
    return Case(op.method, path, query, headers, body)


def _query(op: Any, rng: random.Random) -> str:
    pairs: list[tuple[str, str]] = []
    for name, schema in op.query.items():
        if rng.random() < 0.5:
            continue
        if rng.random() < 0.4:
            pairs.append((name, str(sample(schema, {}, rng)).lower()))
        else:
            pairs.append((name, rng.choice(["", "-1", "1.5", "1e3", "x", str(2**63), str(2**64), "9" * 5000, "0x1",
                                            " 1", "\u0661", "true", "%FF", "NaN", "00"])))
        if rng.random() < 0.1:
            pairs.append((name, "x"))  # repeated
    if rng.random() < 0.1:
        pairs.append((rng.choice(["", "extra", "\u00e9"]), rng.choice(["", "1"])))
    text = "&".join(f"{urllib.parse.quote(k, safe='%')}={urllib.parse.quote(v, safe='%')}" for k, v in pairs)
    return rng.choice([text, text, text, "&&", "=", "a=%ZZ", "%FF=1"]) if rng.random() < 0.1 else text


# -- WebSocket messages ----------------------------------------------------------------------
WS_PRODUCE_SCHEMAS = {fmt: produce_schema(fmt == "binary") for fmt in ("json", "binary")}
WS_COMMITS: list[Any] = [{"commit": "all"}, {"commit": "all", "through": 1},
                         {"commit": [{"topic": "t", "partition": 0, "offset": 3}]}]
WS_QUERIES = ["", "topic=", "topic=%FF", "topic=..", "topic=" + "a" * 300, "topic=missing", "topic=t&topic=x",
              "topic=t&format=xml", "topic=t&format=", "topic=t&acks=2", "topic=t&acks=", "topic=%2F",
              "topic=t&group=.", "topic=t&group=%2F", "topic=t&group=%FF", "topic=t&group=" + "g" * 300,
              "topic=t&group=%C3%A9", "topic=t&from=middle", "topic=t&auto_commit=maybe", "topic=t&group=g%00",
              "topic=t%00", "topic=t&group=", "%FF=1&topic=t", "topic=t&&&", "topic=__consumer_offsets"]


def ws_produce_frames(rng: random.Random, fmt: str, n: int) -> Iterator[str | bytes]:
    """``n`` seeded /ws/produce messages in format ``fmt``: records or one record, broken or at
    the edges of what is allowed, odd ids, text that is no JSON, binary frames."""
    schema = WS_PRODUCE_SCHEMAS[fmt]
    for _ in range(n):
        roll = rng.random()
        if roll < 0.1:
            raw = rng.choice(RAW_BODIES)
            yield raw if rng.random() < 0.5 else raw.decode("utf-8", "replace")
            continue
        body = sample(schema, {}, rng, edge=roll < 0.4)
        msg: Any = body if rng.random() < 0.5 else body["records"][0]
        if roll >= 0.4:
            msg = mutate(msg, rng)
        if isinstance(msg, dict) and rng.random() < 0.5:
            msg = {**msg, "id": rng.choice(["m", 7, *BAD_VALUES])}
        text = to_json(msg).decode()
        yield text.encode() if rng.random() < 0.15 else text


def ws_commit_frames(rng: random.Random, n: int) -> Iterator[str | bytes]:
    """``n`` seeded /ws/consume messages: commits, broken or not, and text that is no JSON."""
    for _ in range(n):
        if rng.random() < 0.15:
            raw = rng.choice(RAW_BODIES)
            yield raw if rng.random() < 0.5 else raw.decode("utf-8", "replace")
            continue
        msg = rng.choice(WS_COMMITS)
        if rng.random() < 0.7:
            msg = mutate(msg, rng)
        yield to_json(msg).decode()


def ws_first_frames(rng: random.Random, n: int) -> Iterator[str | bytes]:
    """The first messages of a socket without a key header: ``{"api_key": ...}`` with each odd
    key (and a good one), and ``n`` seeded others: other JSON, text that is no JSON."""
    for key in [*BAD_VALUES, ADMIN_KEY + "\u00e9", ADMIN_KEY * 100, [ADMIN_KEY], "\ud800", "\udfff" * 3, ADMIN_KEY]:
        yield to_json({"api_key": key}).decode()
    for _ in range(n):
        yield rng.choice(RAW_BODIES) if rng.random() < 0.5 else to_json(mutate({"api_key": ADMIN_KEY}, rng)).decode()
