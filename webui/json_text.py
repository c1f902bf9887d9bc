"""Strict JSON in and out of the gateway (RFC 8259): the bodies and WebSocket messages it reads,
the answers it writes, and a body's integers as its schema reads them.

Answers are written with orjson (C), and so are the bodies of the binary embedded format parsed
(its numbers are only partitions: orjson reads integers beyond 64 bits as floats, which the
JSON embedded format would store changed, so other bodies keep the standard library); a body
orjson refuses is parsed again with the standard library, so that what is accepted and the
errors given stay as they were (``loads_body``, ``dumps``).

NaN, Infinity, -Infinity and numbers that overflow a double (1e999) are not JSON, so a body
holding one is refused (40001), never stored as the text NaN that no JSON parser reads back, and
nothing the gateway writes holds one. Nor is a string holding a lone surrogate (``"\\ud800"``, or
its bytes ED A0 80): it is no Unicode text (JSON text is UTF-8, RFC 8259 8.1) and nothing can
write it as UTF-8 -- taken in, it failed wherever it was encoded next (a header value for the
producer service, a topic id packed for the consumer service, an API key hashed, the
validator's own error message) as a programmer error.

Pure functions; thread-safe.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Iterator

import orjson

from webui.errors import ApiError

FAST_JSON_TYPES = frozenset({"application/vnd.kafka.binary.v2+json"})  # bodies parsed with orjson


def loads_body(data: bytes, content_type: str) -> Any:
    """A request body as strict JSON. Raises ValueError. orjson first for FAST_JSON_TYPES; the
    standard library otherwise, and again for what orjson refuses, so that what is accepted and
    the errors are the same whatever the content type."""
    if content_type in FAST_JSON_TYPES:
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as e:
            if "recursion" in str(e):  # nested over orjson's 1,024 levels
                raise ValueError(NESTED_TOO_DEEPLY) from None
    return loads_json(data)


NESTED_TOO_DEEPLY = "nested too deeply"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (math.inf, -math.inf):
        raise ValueError(f"{text[:40]} is not JSON (beyond a double: read as infinity)")
    return value


def loads_json(data: bytes | str) -> Any:
    """``json.loads`` of strict JSON: ValueError for NaN, Infinity, -Infinity and numbers that
    overflow a double (the standard library reads them all), for a string holding a lone
    surrogate (which it reads too), and for nesting too deep for the interpreter's stack (a
    RecursionError would be taken for a programmer error and stop the gateway's worker).
    Integers of any size are kept exact."""
    try:
        value = json.loads(data, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(NESTED_TOO_DEEPLY) from None
    if _may_hold_surrogate(data):  # only then is the value walked
        _refuse_lone_surrogates(value)
    return value


# what a JSON text holding a surrogate has: a \uD800-\uDFFF escape, or the character itself
# (its bytes ED A0..BF xx: the standard library decodes bytes with "surrogatepass"). A pair of
# escapes is one character once read: only the value read tells a lone one.
_ESCAPED_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")
_ESCAPED_SURROGATE_TEXT = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE_BYTES = re.compile(rb"\xed[\xa0-\xbf]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _may_hold_surrogate(data: bytes | str) -> bool:
    """Whether JSON text ``data`` may hold a surrogate. One-character tests first (the text
    of most bodies has neither a backslash nor the byte ED): a regex over a produce body cost
    half its parse."""
    if type(data) is str:
        if not data.isascii():
            try:
                data.encode("utf-8")
            except UnicodeEncodeError:
                return True
        return "\\" in data and _ESCAPED_SURROGATE_TEXT.search(data) is not None
    return (b"\xed" in data and _SURROGATE_BYTES.search(data) is not None) \
        or (b"\\" in data and _ESCAPED_SURROGATE.search(data) is not None)


def _refuse_lone_surrogates(value: Any) -> None:
    """Raise ValueError when a string of ``value`` (a key too) holds a lone surrogate. Walks
    without recursion: ``value`` may be nested as deep as the parser went."""
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            found = _SURROGATE.search(v)
            if found:
                raise ValueError(f"a string holds a lone surrogate ({found.group().encode('unicode_escape').decode()}), "
                                 "which is no Unicode text: JSON text is UTF-8")
        elif isinstance(v, dict):
            stack += v
            stack += v.values()
        elif isinstance(v, list):
            stack += v


def dumps(value: Any) -> bytes:
    """Compact strict JSON (orjson; the standard library for what orjson cannot write, e.g.
    integers beyond 64 bits). Raises ValueError for a NaN or infinite float that orjson did
    not write (as null): the routes hand it none (``loads_json`` reads none)."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError (also nesting over its 254 levels)
        try:
            return json.dumps(value, separators=(",", ":"), allow_nan=False).encode()
        except RecursionError:  # a stored value nested too deeply for the interpreter's stack
            raise ApiError(42202, "a value is nested too deeply to write as JSON: read it in the binary format") from None


def _branches(schema: dict) -> Iterator[dict]:
    """``schema`` (inlined) and every schema it holds under anyOf, oneOf or allOf."""
    yield schema
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, ()):
            yield from _branches(sub)


def _says_integer(schema: dict) -> bool:
    return any(b.get("type") == "integer" or (isinstance(b.get("type"), list) and "integer" in b["type"])
               for b in _branches(schema))


def integers_read(schema: dict, value: Any) -> Any:
    """``value``, valid against ``schema`` (inlined), with each float where the schema has an
    integer made that int, in place: JSON Schema's integers include 1.0 and 1e2 (a number whose
    fraction is zero), so the routes let them through as the document promises, and then a
    node refused the float (the consumer service's seek, commit or assignment; the
    coordinator's partition count) or an answer carried it on (a dry-run reset's 5.0)."""
    if type(value) is float:
        return int(value) if value.is_integer() and _says_integer(schema) else value
    if isinstance(value, dict):
        for b in _branches(schema):
            for name, sub in b.get("properties", {}).items():
                if name in value:
                    value[name] = integers_read(sub, value[name])
    elif isinstance(value, list):
        for b in _branches(schema):
            items = b.get("items")
            if isinstance(items, dict):
                for i, v in enumerate(value):
                    value[i] = integers_read(items, v)
    return value
