"""Bad input against every ROUTER port of a real cluster (the coordinator and each broker).

Malformed frames, wrong versions, oversized requests, unknown commands, bad PRODUCE / FETCH /
LIST_OFFSETS / CREATE_TOPIC requests: each gets an error reply with the right code from
``fabric.protocol`` (or is dropped) and is counted, and the node keeps serving -- records
acknowledged before are all still there and new ones are accepted. Raw DEALER sockets send
what the client library never would. A hypothesis fuzz of the header map ends the module.
"""

from __future__ import annotations

import itertools
import os
from typing import Any

import msgpack
import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fabric import protocol as P
from fabric import wire
from fabric.client import Admin, Consumer, Producer
from fabric.records import build_batch
from tests.harness import Cluster

pytestmark = pytest.mark.timeout(150)

BATCH_BYTES_MAX = 256 * 1024
REPLY_TIMEOUT_MS = 5000
_ids = itertools.count(1000)


class Raw:
    """A bare DEALER: sends any frames, reads one reply. Not thread-safe."""

    def __init__(self, endpoint: str) -> None:
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(endpoint)

    def send(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames, copy=False)

    def recv(self, timeout_ms: int = REPLY_TIMEOUT_MS) -> tuple[dict, list[bytes]] | None:
        if not self.sock.poll(timeout_ms):
            return None
        return wire.decode_reply(self.sock.recv_multipart())

    def call(self, command: bytes, header: dict, payloads: list[bytes] = (), timeout_ms: int = REPLY_TIMEOUT_MS) -> dict:
        rid = header.get("id", next(_ids))
        self.send(wire.encode_request(command, {**header, "id": rid}, payloads))
        while True:
            got = self.recv(timeout_ms)
            assert got is not None, f"no reply to {command!r} {header!r}"
            if got[0].get("id") == rid:
                return got[0]

    def close(self) -> None:
        self.sock.close(0)


CLUSTER_OPTIONS = {"brokers": 3, "overrides": {"limits": {"batch_bytes_max": BATCH_BYTES_MAX}}}  # tests/conftest.py


@pytest.fixture(scope="module", autouse=True)
def _prepared(module_cluster: Cluster) -> None:
    with Admin(module_cluster.bootstrap) as admin:
        admin.create_topic("good", partitions=3, replication_factor=3)
        admin.create_topic("fuzz", partitions=3, replication_factor=1)
        module_cluster.wait_topic_ready(admin, "good")
        module_cluster.wait_topic_ready(admin, "fuzz")


@pytest.fixture(scope="module")
def acked(module_cluster: Cluster) -> list[tuple[int, int, bytes]]:
    """Records acknowledged before any bad input: (partition, offset, value)."""
    with Producer(module_cluster.bootstrap, acks="all") as p:
        futures = [(b"before-%d" % i, p.send("good", b"before-%d" % i, key=b"k%d" % i)) for i in range(3000)]
        p.flush(30)
    return [(f.result(0).partition, f.result(0).offset, v) for v, f in futures]


def _leaders(cluster: Cluster) -> dict[str, int]:
    """broker node name -> a partition of "good" it leads."""
    with Admin(cluster.bootstrap) as admin:
        md = admin.metadata()
    out = {}
    for p in md.topics["good"].partitions:
        out.setdefault(f"broker-{p.leader}", p.partition)
    return out


def _batch(n: int = 2, value_bytes: int = 10, **kw: Any) -> bytes:
    return build_batch([(1_700_000_000_000, b"k", b"v" * value_bytes, None)] * n, **kw)


def _malformed(cluster: Cluster, name: str) -> int:
    return cluster.stats(name)["counters"].get("rpc_malformed", 0)


def _assert_serving(cluster: Cluster, name: str) -> None:
    assert cluster.procs[name].poll() is None, f"{name} died; see {cluster.log_dir}/{name}.log"
    assert cluster.ping(name, timeout_ms=3000)["node"] == name


# -- framing: every ROUTER port -------------------------------------------------------------
def _id(rid: int = 1) -> bytes:
    return wire.pack({"id": rid})


FRAMING_CASES: list[tuple[str, list[bytes], int]] = [
    ("random-bytes", [b"\x07" + os.urandom(63)], P.MALFORMED_REQUEST),
    ("random-frames", [b"", b"\x07" + os.urandom(15), os.urandom(16), os.urandom(16)], P.UNSUPPORTED_VERSION),
    ("no-delimiter", [P.VERSION, P.PING, _id()], P.MALFORMED_REQUEST),
    ("version-2", [b"", b"\x02", P.PING, _id()], P.UNSUPPORTED_VERSION),
    ("version-empty", [b"", b"", P.PING, _id()], P.UNSUPPORTED_VERSION),
    ("only-delimiter", [b""], P.MALFORMED_REQUEST),
    ("no-command", [b"", P.VERSION], P.MALFORMED_REQUEST),
    ("no-header", [b"", P.VERSION, P.PING], P.MALFORMED_REQUEST),
    ("header-not-msgpack", [b"", P.VERSION, P.PING, b"\xc1\xc1\xc1"], P.MALFORMED_REQUEST),
    ("header-truncated-msgpack", [b"", P.VERSION, P.PING, b"\x82\xa2id"], P.MALFORMED_REQUEST),
    ("header-a-list", [b"", P.VERSION, P.PING, msgpack.packb([1, 2, 3])], P.MALFORMED_REQUEST),
    ("header-an-int", [b"", P.VERSION, P.PING, msgpack.packb(7)], P.MALFORMED_REQUEST),
    ("id-a-string", [b"", P.VERSION, P.PING, wire.pack({"id": "7"})], P.MALFORMED_REQUEST),
    ("header-over-limit", [b"", P.VERSION, P.PING, wire.pack({"id": 1, "pad": b"x" * (P.HEADER_BYTES_MAX + 1)})],
     P.REQUEST_TOO_LARGE),
    ("too-many-frames", [b"", P.VERSION, P.PING, _id(), *([b"p"] * P.FRAMES_MAX)], P.REQUEST_TOO_LARGE),
    ("request-over-limit", [b"", P.VERSION, P.PING, _id(), *([b"\0" * (P.REQUEST_BYTES_MAX // 3 + 1)] * 3)],
     P.REQUEST_TOO_LARGE),
]


@pytest.mark.parametrize("node", ["coordinator", "broker-1", "broker-2", "broker-3"])
def test_malformed_frames_get_an_error_and_are_counted(cluster: Cluster, node: str, acked: list) -> None:
    before = _malformed(cluster, node)
    raw = Raw(cluster.endpoint(node))
    try:
        for what, frames, code in FRAMING_CASES:
            raw.send(frames)
            got = raw.recv()
            assert got is not None, f"{node}: no reply to {what}"
            assert got[0].get("error") == code, f"{node}: {what}: {got[0]}"
            assert got[0].get("message")
        # an unknown command keeps its request id so the client can match the error
        for cmd in (b"NOPE", b"", b"\xff" * 100):
            h = raw.call(cmd, {"id": 77})
            assert h["error"] == P.UNKNOWN_COMMAND, h
        # a command this role does not serve is unknown to it too
        other = P.CREATE_TOPIC if node.startswith("broker") else P.PRODUCE
        assert raw.call(other, {})["error"] == P.UNKNOWN_COMMAND
    finally:
        raw.close()
    assert _malformed(cluster, node) >= before + len(FRAMING_CASES) + 4
    _assert_serving(cluster, node)


def test_frame_over_the_request_limit_is_discarded_and_answered(cluster: Cluster) -> None:
    raw = Raw(cluster.endpoint("broker-1"))
    try:
        raw.send([b"", P.VERSION, P.PING, _id(9), b"\0" * (P.REQUEST_BYTES_MAX + 1)])
        got = raw.recv()  # the frame is dropped as it arrives (fabric.zmtp), never buffered
        assert got is not None and got[0]["error"] == P.REQUEST_TOO_LARGE and got[0]["id"] == 9, got
        assert raw.call(P.PING, {})["node"] == "broker-1"  # the same connection goes on
    finally:
        raw.close()
    _assert_serving(cluster, "broker-1")


# -- PRODUCE / FETCH / LIST_OFFSETS on every broker -------------------------------------------
@pytest.mark.parametrize("node", ["broker-1", "broker-2", "broker-3"])
def test_bad_produce(cluster: Cluster, node: str, acked: list) -> None:
    p = _leaders(cluster)[node]
    raw = Raw(cluster.endpoint(node))
    try:
        corrupt = bytearray(_batch())
        corrupt[-1] ^= 0x55
        too_big = _batch(1, BATCH_BYTES_MAX)

        def results(header: dict, payloads: list[bytes]) -> list:
            h = raw.call(P.PRODUCE, header, payloads)
            assert "error" not in h, h
            return h["results"]

        res = results({"acks": 1, "parts": [["good", p]] * 5}, [bytes(corrupt), too_big, b"junk", _batch()[:-3], b""])
        assert [r[1] for r in res] == [P.CORRUPT_MESSAGE, P.RECORD_TOO_LARGE, P.CORRUPT_MESSAGE, P.CORRUPT_MESSAGE,
                                       P.CORRUPT_MESSAGE]
        assert all(r[0] == -1 for r in res)
        res = results({"acks": 1, "parts": [["good", 99], ["nope", 0], [1, "a"], ["good"], "x"]}, [_batch()] * 5)
        assert [r[1] for r in res] == [P.UNKNOWN_TOPIC_OR_PARTITION, P.UNKNOWN_TOPIC_OR_PARTITION,
                                       P.MALFORMED_REQUEST, P.MALFORMED_REQUEST, P.MALFORMED_REQUEST]
        not_mine = next(q for q in range(3) if q != p)
        assert results({"acks": 1, "parts": [["good", not_mine]]}, [_batch()])[0][1] == P.NOT_LEADER
        bad_headers = [
            ({"acks": 1, "parts": [["good", p]] * 2}, [_batch()]),            # parts/payloads mismatch
            ({"acks": 1, "parts": [["good", p]]}, []),
            ({"acks": 1, "parts": "good"}, [_batch()]),
            ({"acks": 1}, [_batch()]),
            ({"acks": "all", "parts": [["good", p]]}, [_batch()]),
            ({"acks": 2, "parts": [["good", p]]}, [_batch()]),
            ({"acks": -1, "timeout_ms": "soon", "parts": [["good", p]]}, [_batch()]),
            ({"acks": -1, "timeout_ms": [1], "parts": [["good", p]]}, [_batch()]),
        ]
        for header, payloads in bad_headers:
            h = raw.call(P.PRODUCE, header, payloads)
            assert h.get("error") == P.MALFORMED_REQUEST, (header, h)
        # after all that, a normal acks=all produce works on the same socket
        res = results({"acks": -1, "timeout_ms": 5000, "parts": [["good", p]]}, [_batch(3)])
        assert res[0][1] == 0 and res[0][0] >= 0
    finally:
        raw.close()
    _assert_serving(cluster, node)


@pytest.mark.parametrize("node", ["broker-1", "broker-2", "broker-3"])
def test_bad_fetch_and_list_offsets(cluster: Cluster, node: str, acked: list) -> None:
    p = _leaders(cluster)[node]
    raw = Raw(cluster.endpoint(node))
    try:
        for header in ({"parts": "good"}, {"parts": [["good", p, 0]], "wait_ms": "x"},
                       {"parts": [["good", p, 0]], "max_bytes": "lots"},
                       {"parts": [["good", p, 0]], "replica_id": "me"}, {}):
            h = raw.call(P.FETCH, header)
            assert h.get("error") == P.MALFORMED_REQUEST, (header, h)
        h = raw.call(P.FETCH, {"wait_ms": 0, "parts": [["good"], [1, 2, 3], ["good", p, "0"], None, 5, [None, p, 0],
                                                       ["nope", 0, 0], ["good", p, -5], ["good", p, 1 << 40]]})
        codes = [e[2] for e in h["parts"]]
        assert codes == [P.MALFORMED_REQUEST] * 6 + [P.UNKNOWN_TOPIC_OR_PARTITION] + [P.OFFSET_OUT_OF_RANGE] * 2, h
        h = raw.call(P.LIST_OFFSETS, {"parts": [["good", p, "x"], [["good"], p, -1], ["good", p], 3, ["good", p, -1]]})
        codes = [e[2] for e in h["parts"]]
        assert codes == [P.MALFORMED_REQUEST] * 4 + [0], h
        assert raw.call(P.LIST_OFFSETS, {"parts": "x"})["error"] == P.MALFORMED_REQUEST
        # a good fetch on the same socket still returns data
        h = raw.call(P.FETCH, {"wait_ms": 0, "parts": [["good", p, 0, 1 << 20]]})
        assert h["parts"][0][2] == 0 and h["parts"][0][3] > 0
    finally:
        raw.close()
    _assert_serving(cluster, node)


# -- CREATE_TOPIC and friends on the coordinator -----------------------------------------------
@pytest.mark.parametrize("header, code", [
    ({"topic": "."}, P.INVALID_TOPIC),
    ({"topic": ".."}, P.INVALID_TOPIC),
    ({"topic": "a/b"}, P.INVALID_TOPIC),
    ({"topic": "x" * 250}, P.INVALID_TOPIC),
    ({"topic": "__x"}, P.INVALID_TOPIC),
    ({"topic": ""}, P.INVALID_TOPIC),
    ({"topic": 5}, P.INVALID_TOPIC),
    ({}, P.INVALID_TOPIC),
    ({"topic": "ok", "partitions": 0}, P.INVALID_PARTITIONS),
    ({"topic": "ok", "partitions": -1}, P.INVALID_PARTITIONS),
    ({"topic": "ok", "partitions": "3"}, P.INVALID_PARTITIONS),
    ({"topic": "ok", "partitions": True}, P.INVALID_PARTITIONS),
    ({"topic": "ok", "partitions": P.PARTITIONS_MAX + 1}, P.INVALID_PARTITIONS),
    ({"topic": "ok", "replication_factor": 4}, P.INVALID_REPLICATION_FACTOR),
    ({"topic": "ok", "replication_factor": 0}, P.INVALID_REPLICATION_FACTOR),
    ({"topic": "ok", "replication_factor": "3"}, P.INVALID_REPLICATION_FACTOR),
    ({"topic": "ok", "configs": {"no.such.key": 1}}, P.INVALID_CONFIG),
    ({"topic": "ok", "configs": "retention.ms=1"}, P.INVALID_CONFIG),
    ({"topic": "ok", "configs": {"retention.ms": "soon"}}, P.INVALID_CONFIG),
    ({"topic": "ok", "configs": {"retention.ms": [1]}}, P.INVALID_CONFIG),
    ({"topic": "ok", "replication_factor": 3, "configs": {"min.insync.replicas": 4}}, P.INVALID_CONFIG),
    ({"topic": "good"}, P.TOPIC_ALREADY_EXISTS),
])
def test_bad_create_topic(cluster: Cluster, header: dict, code: int) -> None:
    raw = Raw(cluster.endpoint("coordinator"))
    try:
        h = raw.call(P.CREATE_TOPIC, header)
    finally:
        raw.close()
    assert h.get("error") == code, h
    with Admin(cluster.bootstrap) as admin:
        assert admin.list_topics() == ["fuzz", "good"]


def test_bad_topic_admin_requests(cluster: Cluster) -> None:
    raw = Raw(cluster.endpoint("coordinator"))
    try:
        for cmd, header in ((P.DELETE_TOPIC, {"topic": ["good"]}), (P.DELETE_TOPIC, {"topic": {"a": 1}}),
                            (P.DELETE_TOPIC, {"topic": "missing"}), (P.ALTER_TOPIC, {"topic": ["good"]}),
                            (P.ALTER_TOPIC, {"topic": "missing"})):
            assert raw.call(cmd, header).get("error") == P.UNKNOWN_TOPIC_OR_PARTITION, (cmd, header)
        for header in ({"topic": "good", "partitions": 2}, {"topic": "good", "partitions": "9"}):
            assert raw.call(P.ALTER_TOPIC, header).get("error") == P.INVALID_PARTITIONS, header
        assert raw.call(P.ALTER_TOPIC, {"topic": "good", "configs": {"bogus": 1}}).get("error") == P.INVALID_CONFIG
        for header in ({}, {"topic": 1, "partition": 0}, {"topic": "good", "partition": "0"},
                       {"topic": "good", "partition": 0, "broker_id": 1, "leader_epoch": 0, "isr": "1"}):
            assert raw.call(P.ALTER_ISR, header).get("error") in (P.MALFORMED_REQUEST, P.FENCED_LEADER_EPOCH), header
    finally:
        raw.close()
    with Admin(cluster.bootstrap) as admin:
        assert admin.list_topics() == ["fuzz", "good"]
        assert len(admin.metadata().topics["good"].partitions) == 3
    _assert_serving(cluster, "coordinator")


# -- a header fuzz against one broker -----------------------------------------------------------
_scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 64 - 1), st.integers(-3, 5),
                     st.floats(allow_nan=True), st.text(max_size=12), st.binary(max_size=12))
_values = st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=6), kids, max_size=3),
                       max_leaves=12)
_part_entry = st.lists(st.one_of(st.just("fuzz"), st.integers(-2, 4), st.sampled_from([0, 1 << 20, -1, -2]), _scalars),
                       max_size=7)
_keys = st.sampled_from(["id", "parts", "acks", "timeout_ms", "wait_ms", "max_bytes", "replica_id", "topic",
                         "partition", "broker_id", "leader_epoch", "isr", "configs"]) | st.text(max_size=6)
_header = st.dictionaries(_keys, _values, max_size=6).flatmap(
    lambda h: st.one_of(st.just(h), st.lists(_part_entry, max_size=4).map(lambda parts: {**h, "parts": parts})))
_payloads = st.lists(st.one_of(st.binary(max_size=80), st.builds(lambda n: _batch(n), st.integers(1, 3))), max_size=4)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(command=st.sampled_from([P.PRODUCE, P.FETCH, P.LIST_OFFSETS, P.METADATA, P.PING, P.STATS, P.ALTER_ISR, b"X"]),
       header=_header, payloads=_payloads)
def test_fuzzed_headers_never_break_a_broker(cluster: Cluster, command: bytes, header: dict, payloads: list[bytes]) -> None:
    wait_ms = header.get("wait_ms")
    if isinstance(wait_ms, int) and not isinstance(wait_ms, bool):
        header["wait_ms"] = wait_ms % 50  # long polls would only slow the fuzz down
    rid = next(_ids)
    header["id"] = rid
    raw = Raw(cluster.endpoint("broker-2"))
    try:
        try:
            frames = wire.encode_request(command, header, payloads)
        except (TypeError, ValueError, OverflowError):
            return  # msgpack cannot express it; nor can a peer
        raw.send(frames)
        got = raw.recv(REPLY_TIMEOUT_MS)
    finally:
        raw.close()
    assert got is not None, "no reply"
    reply = got[0]
    assert reply.get("id") == rid, reply
    code = reply.get("error", 0)
    assert code in P.ERROR_NAMES, reply
    assert code != P.UNKNOWN, f"a handler failed on {command!r} {header!r}: {reply.get('message')}"


def test_after_the_abuse_nothing_is_lost_and_all_nodes_serve(cluster: Cluster, acked: list) -> None:
    for name in cluster.node_names:
        _assert_serving(cluster, name)
    assert all(cluster.stats(n)["counters"].get("rpc_malformed", 0) > 0 for n in cluster.node_names)
    with Producer(cluster.bootstrap, acks="all") as p:
        after = [p.send("good", b"after-%d" % i, key=b"k%d" % i) for i in range(300)]
        p.flush(30)
    wanted = {(pt, off): v for pt, off, v in acked}
    wanted.update({(f.result(0).partition, f.result(0).offset): b"after-%d" % i for i, f in enumerate(after)})
    got = {}
    with Consumer(cluster.bootstrap, auto_offset_reset="earliest") as c:
        c.assign([("good", i) for i in range(3)])
        for _ in range(100):
            for r in c.poll(200):
                got[(r.partition, r.offset)] = r.value
            if all(k in got for k in wanted):
                break
    assert {k: got.get(k) for k in wanted} == wanted
