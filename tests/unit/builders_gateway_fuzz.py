"""The gateway as the bad-input fuzz drives it (tests/unit/test_gateway_bad_input_fuzz.py): the real
Flask app (the produce fast path in front) over the real ``GatewayAgent``, whose cluster side is
scripted -- the coordinator's metadata, offsets, topic and group admin, the producer service and
the consumer services -- each checking what it is sent as the node it stands for checks it
(every header is packed with msgpack as the wire packs it; the consumer service's own
``check_op_header``; the coordinator's type checks and rules). What no node would take is refused
as that node refuses it, so a request that gets past the gateway's validation reaches the
agent's real code with whatever it carries, and a value the gateway lets through that the wire
cannot carry fails as it would in production: a programmer error, answered 500 -- which the
fuzz looks for. The bad input itself is made by tests/unit/builders_bad_input.py.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, NamedTuple

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

    def monitor_events(self) -> list:
        return [{"type": "node", "kind": "health", "node": "broker-1", "state": "down", "previous": "healthy",
                 "seq": 1, "ts_ms": 1000}, {"type": "recovery", "kind": "recovery", "node": "broker-1",
                                             "action": "restarted", "seq": 2, "ts_ms": 2000}]

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
