"""The gateway as a bad-input fuzz drives it: the real Flask app (the produce fast path in
front) over the real ``GatewayAgent``, whose cluster side is scripted -- the coordinator's
metadata, offsets, topic and group admin, the producer service and the consumer services --
each checking what it is sent as the node it stands for checks it (every header is packed
with msgpack as the wire packs it; the consumer service's own ``check_op_header``; the
coordinator's type checks). What no node would take is refused as that node refuses it, so a
request that gets past the gateway's validation reaches the agent's real code with whatever
it carries, and a value the gateway lets through that the wire cannot carry fails as it would
in production: a programmer error, answered 500 -- which the fuzz looks for.

Also the generators of seeded bad input: bodies made from the routes' own JSON Schemas and
then broken (wrong types at every level, missing and extra fields, huge and odd numbers,
long and odd strings), odd path segments, query strings, content types and headers.
"""

from __future__ import annotations

import json
import random
import re
import threading
import urllib.parse
from pathlib import Path
from typing import Any, Iterator, NamedTuple

from fabric import protocol as P
from fabric import wire
from fabric.apikeys import hash_key
from fabric.client.services import ConsumerInstance, pack_rows
from fabric.config import GatewayConfig, SecurityConfig, load_config
from fabric.errors import RemoteError
from nodes.consumer import CONFIG_TYPES
from nodes.consumer_instance import OPS, check_op_header
from nodes.coordinator.topics import validate_configs, validate_topic_name
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.fakes import KEYS, metadata_of
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub
from webui.schemas import produce_schema
from webui.spec import _inline

TOPICS = {"t": 3, "one": 1, "__consumer_offsets": 2}
GROUP, INSTANCE, CLUSTER = "g", "c1", "test"
ADMIN_KEY = KEYS["admin"]
LOG_END_OFFSET = 10
STREAM_POLL_MS_MAX = 50  # a stream's poll that finds no records waits this long at most
# stored keys and values a fetch answers: what a consumer may read that another client wrote
ODD_STORED = [b"1", b'"s"', b"\xff\xfe\x00", b"NaN", b"[" * 3000 + b"]" * 3000, b'{"a": 1e999}', b"9" * 5000,
              b"", "\u00e9\U0001F600".encode(), b'{"a": [1, 2, {"b": null}]}']


def _is_int(v: Any) -> bool:
    return type(v) is int


class ScriptedAdmin:
    """The coordinator and brokers as ``fabric.client.admin.Admin`` reaches them: metadata of
    TOPICS, offsets 0..LOG_END_OFFSET, topic and group admin checked as the coordinator checks
    them (msgpack-packed headers, its type checks and its name and config rules). A topic made
    is there from then on; TOPICS stay whatever is deleted, so later cases find them."""

    def __init__(self) -> None:
        self.topics = dict(TOPICS)

    def metadata(self, refresh: bool = True) -> Any:
        return metadata_of(self.topics)

    def list_offsets(self, topic: str, spec: int = -1, *, partitions: Any = None, partial: bool = False,
                     leader_wait_ms: int | None = None) -> dict[int, int]:
        wire.pack({"topic": topic, "spec": spec, "partitions": partitions})
        if topic not in self.topics:
            raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {topic!r}")
        if not _is_int(spec):  # as the broker's ListOffsetsInput.decode
            raise RemoteError(P.MALFORMED_REQUEST, "spec must be int")
        wanted = range(self.topics[topic]) if partitions is None else partitions
        return {p: 0 if spec == -2 else LOG_END_OFFSET for p in wanted}

    def create_topic(self, name: str, partitions: Any = None, replication_factor: Any = None,
                     configs: Any = None) -> dict:
        wire.pack({"topic": name, "partitions": partitions, "replication_factor": replication_factor,
                   "configs": configs})
        validate_topic_name(name)
        if name in self.topics:
            raise RemoteError(P.TOPIC_ALREADY_EXISTS, f"topic {name!r} already exists")
        if partitions is not None and not (_is_int(partitions) and 1 <= partitions <= P.PARTITIONS_MAX):
            raise RemoteError(P.INVALID_PARTITIONS, f"partitions must be an integer, not {partitions!r}")
        if replication_factor is not None and not (_is_int(replication_factor) and 1 <= replication_factor <= 1):
            raise RemoteError(P.INVALID_REPLICATION_FACTOR, f"replication factor {replication_factor!r}: 1 broker")
        validate_configs(configs, 1)
        self.topics[name] = partitions or 1
        return {"topic": name}

    def alter_topic(self, name: str, partitions: Any = None, configs: Any = None) -> dict:
        wire.pack({"topic": name, "partitions": partitions, "configs": configs})
        if name not in self.topics:
            raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        if partitions is not None and not (_is_int(partitions) and self.topics[name] < partitions <= P.PARTITIONS_MAX):
            raise RemoteError(P.INVALID_PARTITIONS, f"partitions can only grow, not to {partitions!r}")
        return {"topic": name}

    def delete_topic(self, name: str) -> dict:
        wire.pack({"topic": name})
        if name not in self.topics:
            raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"no topic {name!r}")
        if name not in TOPICS:
            del self.topics[name]
        return {"topic": name}

    def call_coordinator(self, command: bytes, header: dict, retries: int = 3) -> dict:
        wire.pack(header)
        if command == P.LIST_GROUPS:
            return {"groups": [{"group": GROUP, "state": "Stable", "generation": 3, "assignor": "range", "members": 1}]}
        if command == P.DESCRIBE_GROUPS:
            gid = header["groups"][0]
            if gid != GROUP:
                return {"groups": [{"group": gid, "state": "Dead", "members": [], "offsets": []}]}
            return {"groups": [{"group": gid, "state": "Empty", "generation": 3, "assignor": "range", "members": [],
                                "offsets": [["t", 0, 4], ["t", 1, 7]]}]}
        if command == P.OFFSET_FETCH:
            return {"offsets": [["t", 0, 4, "", -1], ["t", 1, 7, "", -1]]}
        if command == P.OFFSET_COMMIT:
            for e in header["offsets"]:  # as the coordinator's _on_offset_commit
                if not (isinstance(e, list) and isinstance(e[0], str) and _is_int(e[1]) and _is_int(e[2])):
                    raise RemoteError(P.MALFORMED_REQUEST, "each offset is [topic, partition, offset, ...]")
                if e[2] < 0:
                    raise RemoteError(P.INVALID_COMMIT_OFFSET, f"offset {e[2]} is negative")
            return {"group": header["group"], "committed": len(header["offsets"])}
        raise AssertionError(f"unscripted coordinator command {command!r}")

    def close(self) -> None:
        pass


class ScriptedProducer:
    """The producer service: the request frame packed as ``ServiceProducer.produce_rows``
    packs it, every record written at the next offset of its partition (or 0)."""

    def __init__(self) -> None:
        self.written = 0

    def produce_rows(self, topic: str, records: list, acks: Any, is_down: Any = None) -> tuple:
        pack_rows(records)
        wire.pack({"topic": topic, "acks": acks, "count": len(records)})
        first, self.written = self.written, self.written + len(records)
        return tuple((r[3] if r[3] is not None else 0, first + i, 0, "") for i, r in enumerate(records))

    def close(self) -> None:
        pass


def fetched_rows(n: int = len(ODD_STORED)) -> list[tuple]:
    """A fetch's records: keys, values and header values a consumer may find stored."""
    return [("t", i % 3, i, 1_700_000_000_000 + i, ODD_STORED[-1 - i % len(ODD_STORED)], ODD_STORED[i % len(ODD_STORED)],
             [["h", ODD_STORED[i % len(ODD_STORED)]], ["n", None]]) for i in range(n)]


class ScriptedConsumers:
    """The consumer services as ``fabric.client.services.ServiceConsumer`` reaches them: each
    call's header packed with msgpack and checked by the service's own ``check_op_header``;
    every instance knows topic t and answers plausibly."""

    def __init__(self) -> None:
        self.made: set[tuple[str, str]] = set()
        self.streamed: set[tuple[str, str]] = set()  # instances whose stream had its records
        self.serial = 0

    def create(self, group: str, name: str | None = None, config: dict | None = None) -> ConsumerInstance:
        wire.pack({"group": group, "instance": name, "config": config})
        if not name:
            self.serial += 1
            name = f"consumer-1-{self.serial}"
        if not 1 <= len(group) <= P.GROUP_ID_LEN_MAX or len(name) > P.GROUP_ID_LEN_MAX:
            raise RemoteError(P.MALFORMED_REQUEST, "group and instance names have 1 to 249 characters")
        for key, value in (config or {}).items():
            kind = CONFIG_TYPES.get(key)
            if kind is None or not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise RemoteError(P.INVALID_CONFIG, f"consumer config {key}")
        self.made.add((group, name))
        return ConsumerInstance(self, group, name, "tcp://127.0.0.1:1", pid=1)  # type: ignore[arg-type]

    def instance(self, group: str, name: str, endpoint: str) -> ConsumerInstance:
        return ConsumerInstance(self, group, name, endpoint, pid=1)  # type: ignore[arg-type]

    def call(self, endpoint: str, command: bytes, header: dict, timeout_ms: int = 0) -> dict:
        wire.pack(header)
        if command == P.PING:
            return {"pid": 1}
        op = OPS[command]
        check_op_header(op, header)
        if (header.get("group"), header.get("instance")) not in self.made:
            raise RemoteError(P.UNKNOWN_CONSUMER_INSTANCE, "no such instance")
        for t, p, *_ in (header.get("offsets") or []) + (header.get("partitions") or []):
            if t not in TOPICS or p >= TOPICS[t]:
                raise RemoteError(P.UNKNOWN_TOPIC_OR_PARTITION, f"no partition {t}-{p}")
        if op == "assign" and not (isinstance(header.get("partitions"), list) and all(
                isinstance(tp, list) and len(tp) == 2 and isinstance(tp[0], str) and _is_int(tp[1])
                for tp in header["partitions"])):  # as the service's own _assign
            raise RemoteError(P.MALFORMED_REQUEST, "partitions must be a list of [topic, partition]")
        if op == "delete":
            self.made.discard((header["group"], header["instance"]))
        if op == "subscription":
            return {"topics": ["t"]}
        if op == "assignment":
            return {"partitions": [["t", 0], ["t", 1]], "positions": [["t", 0, 3], ["t", 1, 5]]}
        if op == "committed":
            asked = header.get("partitions") or [["t", 0]]
            return {"offsets": [[t, p, 4] for t, p in asked], "topic_ids": {}}
        return {}

    def call_frames(self, endpoint: str, command: bytes, header: dict, timeout_ms: int = 0) -> tuple[dict, list]:
        self.call(endpoint, command, header, timeout_ms)
        rows = fetched_rows()[:header["max_records"]]
        stream = (header["group"], header["instance"])
        if header.get("positions"):  # a /ws/consume stream's: records once, then a poll that finds none
            if stream in self.streamed:
                threading.Event().wait(min(header["timeout_ms"], STREAM_POLL_MS_MAX) / 1000)
                rows = []
            self.streamed.add(stream)
        return {"count": len(rows), "positions": [["t", 0, 9]], "generation": 1, "topic_ids": {"t": "id-t"}}, \
            [pack_rows(rows)]

    def list_instances(self) -> dict[str, list[dict]]:
        return {"tcp://127.0.0.1:1": [{"group": g, "instance": i} for g, i in sorted(self.made)]}

    def close(self) -> None:
        pass


class FuzzAgent(GatewayAgent):
    """The real agent over the scripted cluster. The records browser (which reads with a
    client consumer of the brokers) and the monitor are scripted at the agent's edge."""

    def __init__(self, tmp: Path) -> None:
        self.admin_, self.producer_, self.consumers_ = ScriptedAdmin(), ScriptedProducer(), ScriptedConsumers()
        super().__init__(load_config(str(make_config(tmp, 1, extra_nodes=GATEWAY_NODES))),
                         make_admin=lambda: self.admin_, make_producer=lambda: self.producer_)

    def _consumers(self) -> Any:
        return self.consumers_

    def read(self, topic: str, partition: int, offset: int | None, count: int, max_bytes: int,
             timeout_ms: int) -> list:
        from fabric.records import Record
        t = self.topic(topic)
        if not 0 <= partition < len(t.partitions):
            raise AssertionError("the route lets no missing partition through")
        wire.pack([topic, partition, offset, count, max_bytes, timeout_ms])
        return [Record(*r) for r in fetched_rows()][:count]

    def monitor_metrics(self) -> tuple[bytes, str]:
        return b"loom_up 1\n", "text/plain; version=0.0.4"

    def monitor_history(self, since_ms: int) -> dict:
        wire.pack(since_ms)
        return {"interval_ms": 1000, "t": [1, 2], "series": {"a": [1.0, None]}}

    def ensure_instance(self) -> None:
        """The instance the consumer routes name exists (a fuzzed DELETE may have taken it)."""
        if self.holder(GROUP, INSTANCE) is None:
            self.create_instance(GROUP, INSTANCE, {}, "json")


class FuzzGateway(NamedTuple):
    app: Any
    agent: FuzzAgent
    bugs: list[int]  # one entry per programmer error met (the worker would have stopped)
    gw: Gateway


def fuzz_gateway(tmp: Path) -> FuzzGateway:
    """The app over a FuzzAgent: keys per role (KEYS) and a generous rate limit."""
    bugs: list[int] = []
    agent = FuzzAgent(tmp)
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(1e6, 10**6, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id=CLUSTER,
                 on_bug=lambda: bugs.append(1))
    agent.ensure_instance()
    return FuzzGateway(create_app(gw), agent, bugs, gw)


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
