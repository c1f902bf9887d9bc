"""The gateway reads and writes strict JSON only (RFC 8259: no NaN, Infinity or -Infinity). A
produce body naming one of them, or a number too large for a double (1e999, read as
infinity), was accepted and stored as the text NaN or Infinity; reading it back in the JSON
format answered ``"value": NaN`` -- which no JSON parser reads -- when a big integer in the
same answer sent it through the standard library, and ``null`` otherwise. Now such a body is
refused as not JSON (400 / 40001) with nothing written, and a stored value that is not strict
JSON comes back as text, as every stored value that is not JSON does; integers beyond 64 bits
still round-trip unchanged. Checked through the app as served (the produce fast path in front)
with a stub agent that keeps what is produced and serves it to the records browser."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fabric.config import GatewayConfig, SecurityConfig
from fabric.records import Record
from tests.unit.fakes import KEYS, StubAgent, metadata_of
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub
from fabric.apikeys import hash_key
from webui.routes_v2 import decode_value, records_json
from webui.json_text import dumps, loads_json

EMBEDDED = "application/vnd.kafka.json.v2+json"
BINARY = "application/vnd.kafka.binary.v2+json"
BIG = 12345678901234567890123  # over 64 bits: orjson cannot read or write it exactly


def strict_loads(data: bytes | str) -> Any:
    """``json.loads`` as a browser's JSON.parse reads: NaN and Infinity are errors."""
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")
    return json.loads(data, parse_constant=refuse)


class StoringAgent(StubAgent):
    """Topic ``clicks`` (3 partitions); what is produced is stored in partition 0's log, and
    ``stored`` values (bytes another client wrote) can be put there directly."""

    def __init__(self) -> None:
        self.log: list[Record] = []

    def metadata(self) -> Any:
        return metadata_of({"clicks": 3})

    def topic(self, name: str) -> Any:
        md = self.metadata()
        if name not in md.topics:
            return super().topic(name)
        return md.topics[name]

    def store(self, key: bytes | None, value: bytes) -> None:
        self.log.append(Record("clicks", 0, len(self.log), 0, key, value, None))

    def produce(self, topic: str, records: list, acks: Any, partition: int | None = None) -> list:
        first = len(self.log)
        for key, value, _, _ in records:
            self.store(key, value)
        return [(0, first + i, None, False) for i in range(len(records))]

    def offsets(self, topic: str, partitions: list[int]) -> dict[int, tuple[int, int]]:
        return {p: (0, len(self.log) if p == 0 else 0) for p in partitions}

    def read(self, topic: str, partition: int, offset: int | None, count: int, max_bytes: int, timeout_ms: int) -> list:
        start = offset or 0
        return self.log[start:start + count]


@pytest.fixture
def served() -> tuple[Any, StoringAgent, list[int]]:
    bugs: list[int] = []
    agent = StoringAgent()
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test", on_bug=lambda: bugs.append(1))
    return create_app(gw).test_client(), agent, bugs


def produce(client: Any, body: str, content_type: str = EMBEDDED) -> Any:
    return client.post("/topics/clicks/partitions/0", data=body,
                       headers={"Authorization": f"Bearer {KEYS['admin']}", "Content-Type": content_type})


def browse(client: Any, count: int = 10) -> Any:
    r = client.get(f"/topics/clicks/partitions/0/records?offset=0&count={count}&format=json",
                   headers={"Authorization": f"Bearer {KEYS['admin']}"})
    assert r.status_code == 200, r.data
    return strict_loads(r.data)


NOT_JSON_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999", "1.5e400"]


@pytest.mark.parametrize("content_type", [EMBEDDED, "application/json"])
@pytest.mark.parametrize("number", NOT_JSON_NUMBERS)
def test_a_produce_body_with_a_number_json_cannot_carry_is_refused_and_nothing_written(
        served: Any, content_type: str, number: str) -> None:
    client, agent, bugs = served
    for body in ('{"records":[{"value":%s}]}' % number, '{"records":[{"key":%s,"value":1}]}' % number,
                 '{"records":[{"value":1},{"value":{"a":[1,%s]}}]}' % number):
        r = produce(client, body, content_type)
        assert r.status_code == 400, (body, r.status_code, r.data)
        assert r.get_json()["error_code"] == 40001 and "not JSON" in r.get_json()["message"], r.get_json()
    assert agent.log == [] and bugs == []


@pytest.mark.parametrize("number", NOT_JSON_NUMBERS)
def test_a_binary_produce_body_with_such_a_number_is_refused_too(served: Any, number: str) -> None:
    client, agent, _ = served
    r = produce(client, '{"records":[{"value":"eA==","partition":%s}]}' % number, BINARY)
    assert r.status_code == 400 and r.get_json()["error_code"] == 40001, r.data
    assert agent.log == []


def test_big_integers_round_trip_exactly(served: Any) -> None:
    client, agent, _ = served
    r = produce(client, '{"records":[{"key":%d,"value":1},{"value":{"n":[-%d,1.5]}}]}' % (BIG, BIG))
    assert r.status_code == 200, r.data
    assert [rec.key for rec in agent.log] == [str(BIG).encode(), None]
    got = browse(client)
    assert got[0]["key"] == BIG and got[0]["value"] == 1
    assert got[1]["value"] == {"n": [-BIG, 1.5]}


@pytest.mark.parametrize("big_integer_too", [False, True])
def test_a_stored_value_that_is_not_strict_json_reads_back_as_text(served: Any, big_integer_too: bool) -> None:
    """Another client may have written the text NaN: it is answered as the text it is (as any
    stored value that is not JSON), never as NaN (not JSON) nor null (another value)."""
    client, agent, _ = served
    texts = [b"NaN", b"Infinity", b"-Infinity", b"1e999", b'{"a":NaN}', b"[1,Infinity]"]
    for text in texts:
        agent.store(None, text)
    if big_integer_too:
        agent.store(str(BIG).encode(), str(BIG).encode())
    got = browse(client, 20)
    assert [r["value"] for r in got[:len(texts)]] == [t.decode() for t in texts]
    if big_integer_too:
        assert got[-1]["key"] == got[-1]["value"] == BIG


def test_the_shared_json_functions_are_strict() -> None:
    """What REST, /ws/produce, /ws/consume and consumer instances share: loads_json refuses
    what is not JSON, decode_value gives such bytes as text, dumps never writes NaN."""
    for text in NOT_JSON_NUMBERS + ['{"a":NaN}']:
        with pytest.raises(ValueError):
            loads_json(text)
        assert decode_value(text.encode(), "json") == text
    assert loads_json(str(BIG)) == BIG and loads_json("1e-999") == 0.0
    rows = [Record("t", 0, 0, 0, str(BIG).encode(), b"NaN", None)]
    assert strict_loads(dumps({"records": records_json(rows, "json")}))["records"][0]["value"] == "NaN"
    for value in (float("nan"), float("inf"), [BIG, float("-inf")]):
        try:
            written = dumps({"v": value})
        except ValueError:
            continue  # refused to write: no programmer error reaches a client as NaN
        strict_loads(written)


def test_bytes_that_are_not_utf8_are_marked_base64_in_the_json_format(served: Any) -> None:
    """A value that is not UTF-8 comes back in base64, which alone cannot be told from a stored
    JSON string: ``value_encoding`` / ``key_encoding`` / a header's ``value_encoding`` say
    "base64" then, as ``loom consume --format json`` does; other fields have none."""
    client, agent, _ = served
    agent.store(b"\xff\xfe", b"\x00\xffbin")
    agent.store(b'"k"', b'"//4AYmlu"')  # JSON strings that look like base64
    agent.log.append(Record("clicks", 0, 2, 0, None, b"plain text", [("h", b"\xff"), ("t", b"text"), ("n", None)]))
    first, second, third = browse(client)
    assert first["key"] == "//4=" and first["key_encoding"] == "base64"
    assert first["value"] == "AP9iaW4=" and first["value_encoding"] == "base64"
    assert second["key"] == "k" and second["value"] == "//4AYmlu"
    assert "key_encoding" not in second and "value_encoding" not in second
    assert third["value"] == "plain text" and "value_encoding" not in third and third["key"] is None
    assert third["headers"] == [{"name": "h", "value": "/w==", "value_encoding": "base64"},
                                {"name": "t", "value": "text"}, {"name": "n", "value": None}]
    binary = records_json(agent.log[:1], "binary")[0]
    assert "value_encoding" not in binary and "key_encoding" not in binary, "binary: everything is base64"


@pytest.mark.parametrize("content_type", [EMBEDDED, BINARY, "application/json"])
def test_an_empty_produce_body_is_not_json(served: Any, content_type: str) -> None:
    """It was answered 422 ("(body): null is not of type object"): an empty body is no JSON."""
    client, agent, _ = served
    r = produce(client, "", content_type)
    assert r.status_code == 400 and r.get_json()["error_code"] == 40001, r.data
    assert "empty" in r.get_json()["message"] and agent.log == []
