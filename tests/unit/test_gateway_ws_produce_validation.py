"""A /ws/produce message is checked against the same schema as a REST produce body (the
``records`` of ``POST /topics/{t}``, json or binary): what REST answers 422 is answered
``{"error_code": 42204, "id": ...}`` on the socket, which stays open, and never reaches the
cluster agent. A message with a header name that is not a string, or a partition out of the
integers msgpack packs, passed the socket's own checks and failed inside the agent (a TypeError
sizing the request, an OverflowError packing it): a programmer error to the gateway, which
stopped its worker -- every WebSocket and consumer instance of the gateway dropped by one
message of a produce-role client. The real app is served by werkzeug on a loopback port; the
stub agent sizes and packs the records as the real agent does before they leave for the
producer service."""

from __future__ import annotations

import json
import threading
from typing import Any, Iterator

import pytest
import simple_websocket
from werkzeug.serving import make_server

from fabric.apikeys import hash_key
from fabric.client.services import pack_rows
from fabric.config import GatewayConfig, SecurityConfig
from nodes.gateway.agent_produce import _chunks
from tests.unit.fakes import KEYS, StubAgent
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub

DEADLINE_S = 10.0
B64_X = "eA=="  # b"x"


class PackingAgent(StubAgent):
    """Every topic exists; records are sized and packed as GatewayAgent.produce does, then
    land at the next offsets of partition 0."""

    def __init__(self) -> None:
        self.produced: list = []

    def topic(self, name: str) -> None:
        return None

    def produce(self, topic: str, records: list, acks: Any, partition: int | None = None) -> list:
        for chunk in _chunks(records):
            pack_rows(chunk)
        self.produced += records
        return [(0, len(self.produced) - len(records) + i, None, False) for i in range(len(records))]


@pytest.fixture
def served() -> Iterator[tuple[str, PackingAgent, list[int]]]:
    bugs: list[int] = []
    agent = PackingAgent()
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test", on_bug=lambda: bugs.append(1))
    srv = make_server("127.0.0.1", 0, create_app(gw), threaded=True)
    threading.Thread(target=srv.serve_forever, name="test-gateway", daemon=True).start()
    try:
        yield f"ws://127.0.0.1:{srv.server_port}", agent, bugs
    finally:
        srv.shutdown()
        srv.server_close()


BAD_BINARY = [
    {"value": B64_X, "headers": [{"name": 5, "value": B64_X}]},
    {"value": B64_X, "headers": [{"name": "h"}]},
    {"value": B64_X, "partition": 2 ** 70},
    {"value": B64_X, "partition": -2 ** 70},
    {"value": B64_X, "partition": -1},
    {"value": B64_X, "key": 5},
    {"records": []},
    {"records": [{"value": B64_X, "headers": [{"name": "h", "value": None}] * 101}]},
]
BAD_JSON = [
    {"value": "x", "headers": [{"name": 5, "value": "y"}]},
    {"value": "x", "headers": [{"name": "h", "value": 5}]},
    {"value": "x", "partition": 2 ** 64},
    {"value": "x", "partition": "1"},
    {"records": [{"key": "k"}]},
]


@pytest.mark.parametrize("fmt, bad", [("binary", m) for m in BAD_BINARY] + [("json", m) for m in BAD_JSON])
def test_a_message_rest_would_refuse_is_answered_42204_and_the_socket_goes_on(served: Any, fmt: str, bad: dict) -> None:
    url, agent, bugs = served
    good = {"value": B64_X if fmt == "binary" else "x", "headers": [{"name": "h", "value": B64_X if fmt == "binary" else "y"}]}
    c = simple_websocket.Client.connect(f"{url}/ws/produce?topic=t&format={fmt}",
                                        headers={"Authorization": f"Bearer {KEYS['produce']}"})
    try:
        c.send(json.dumps({"id": "bad", **bad}))
        refused = json.loads(c.receive(timeout=DEADLINE_S))
        c.send(json.dumps({"id": "good", **good}))
        accepted = json.loads(c.receive(timeout=DEADLINE_S))
    finally:
        c.close()
    assert bugs == [], "one bad message stopped the gateway's worker"
    assert refused.get("error_code") == 42204 and refused.get("id") == "bad", refused
    assert accepted.get("id") == "good" and accepted["offsets"][0]["error_code"] is None, accepted
    assert len(agent.produced) == 1, "a message REST would refuse reached the agent"


@pytest.mark.parametrize("text", ['{"id": "bad", "value": NaN}', '{"id": "bad", "value": [Infinity]}',
                                  '{"id": "bad", "records": [{"value": -Infinity}]}', '{"id": "bad", "value": 1e999}'])
def test_a_message_with_a_number_json_cannot_carry_is_refused_and_nothing_written(served: Any, text: str) -> None:
    """NaN, Infinity and numbers beyond a double are not JSON: refused as REST refuses such a
    body (they were stored as the text NaN or Infinity, read back as no JSON parser reads)."""
    url, agent, bugs = served
    c = simple_websocket.Client.connect(f"{url}/ws/produce?topic=t&format=json",
                                        headers={"Authorization": f"Bearer {KEYS['produce']}"})
    try:
        c.send(text)
        refused = json.loads(c.receive(timeout=DEADLINE_S))
    finally:
        c.close()
    assert refused.get("error_code") == 42204 and "not JSON" in refused["message"], refused
    assert agent.produced == [] and bugs == []
