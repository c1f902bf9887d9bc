"""A string holding a lone surrogate (``"\\ud800"``, or its bytes ``ED A0 80``) is no Unicode
text: nothing can write it as UTF-8. The standard library's JSON parser reads it anyway, and
the gateway took it into a body or a WebSocket message, where it failed whatever met it next
-- the schema validator naming it in a 422, a header value or name encoded for the producer
service, a topic id packed for the consumer service, an API key hashed -- as a programmer
error: answered 500 and the worker stopped (a WebSocket's first message could do it without
any key). Such a body is not JSON to the gateway (RFC 8259 8.1: JSON text is UTF-8), refused
as any body that does not parse, 400 / 40001; a message on a socket gets its error. Found by
tests/unit/test_gateway_bad_input_fuzz.py; checked through the real app and agent over a
scripted cluster."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import pytest
import simple_websocket

from tests.unit.builders_gateway_fuzz import fuzz_gateway
from tests.unit.fakes import KEYS, served_wsgi
from webui.json_text import loads_json

ADMIN = {"Authorization": f"Bearer {KEYS['admin']}"}
JSON_V2 = "application/vnd.kafka.json.v2+json"
BINARY = "application/vnd.kafka.binary.v2+json"
V2 = "application/vnd.kafka.v2+json"
DEADLINE_S = 10.0


@pytest.fixture
def gateway(tmp_path: Path) -> tuple[Any, Any, list[int]]:
    app, agent, bugs, _ = fuzz_gateway(tmp_path)
    return app, agent, bugs


CASES = [  # (method, path, content type, body): each holds a lone surrogate somewhere the gateway reads it
    ("POST", "/v3/clusters/test/topics", "application/json", rb'{"topic_name": "\ud800"}'),
    ("POST", "/v3/clusters/test/topics", "application/json", rb'{"topic_name": "t", "configs": [{"name": "\udfff"}]}'),
    ("POST", "/topics/t", JSON_V2, rb'{"records": [{"value": 1, "headers": [{"name": "h", "value": "\ud800"}]}]}'),
    ("POST", "/topics/t", BINARY, rb'{"records": [{"value": "eA==", "headers": [{"name": "\ud800", "value": null}]}]}'),
    ("POST", "/topics/t/partitions/0", JSON_V2, b'{"records": [{"value": "\xed\xa0\x80"}]}'),
    ("POST", "/consumers/g/instances/c1/positions", V2,
     rb'{"offsets": [{"topic": "t", "partition": 0, "offset": 1, "topic_id": "\udfff"}]}'),
    ("POST", "/consumers/g", V2, rb'{"name": "\ud800x"}'),
]


@pytest.mark.parametrize("method, path, content_type, body", CASES)
def test_a_body_with_a_lone_surrogate_is_not_json(gateway: Any, method: str, path: str, content_type: str,
                                                  body: bytes) -> None:
    app, agent, bugs = gateway
    r = app.test_client().open(path, method=method, headers={**ADMIN, "Content-Type": content_type}, data=body)
    assert r.status_code == 400 and r.get_json()["error_code"] == 40001, (r.status_code, r.get_data())
    assert "surrogate" in r.get_json()["message"]
    r.close()
    assert bugs == [], "a body stopped the gateway's worker"
    assert agent.producer_.written == 0


def test_a_surrogate_pair_is_one_character_and_taken(gateway: Any) -> None:
    app, agent, bugs = gateway
    r = app.test_client().post("/topics/t", headers={**ADMIN, "Content-Type": JSON_V2},
                               data=rb'{"records": [{"value": "\ud83d\ude00", "headers": [{"name": "h", "value": "\ud83d\ude00"}]}]}')
    assert r.status_code == 200, r.get_data()
    assert agent.producer_.written == 1 and bugs == []


def test_loads_json_refuses_a_lone_surrogate_in_keys_and_deep_values() -> None:
    for text in [r'{"\ud800": 1}', r'[[[["\udc00"]]]]', b'"\xed\xb0\x80"', '"\ud800"']:
        with pytest.raises(ValueError, match="surrogate"):
            loads_json(text)
    assert loads_json(r'"\ud83d\ude00 \u00e9"') == "\U0001F600 \u00e9"


@pytest.fixture
def served(gateway: Any) -> Iterator[tuple[str, Any, list[int]]]:
    app, agent, bugs = gateway
    with served_wsgi(app) as port:
        yield f"ws://127.0.0.1:{port}", agent, bugs


def test_a_first_message_key_with_a_lone_surrogate_closes_the_socket_and_stops_nothing(served: Any) -> None:
    """The browser's first-message auth: the key was hashed as UTF-8 -- with no key at all, any
    client could stop the worker."""
    url, _, bugs = served
    c = simple_websocket.Client.connect(f"{url}/ws/events")
    try:
        c.send(r'{"api_key": "\ud800"}')
        with pytest.raises(simple_websocket.ConnectionClosed) as closed:
            while True:
                c.receive(timeout=DEADLINE_S)
    finally:
        with contextlib.suppress(simple_websocket.ConnectionClosed):
            c.close()
    assert closed.value.reason == 1008, closed.value
    assert bugs == []


def test_a_produce_message_with_a_lone_surrogate_is_answered_and_the_socket_goes_on(served: Any) -> None:
    url, agent, bugs = served
    c = simple_websocket.Client.connect(f"{url}/ws/produce?topic=t", headers={"Authorization": f"Bearer {KEYS['produce']}"})
    try:
        c.send(r'{"id": 1, "value": "x", "headers": [{"name": "h", "value": "\udfff"}]}')
        refused = json.loads(c.receive(timeout=DEADLINE_S))
        c.send('{"id": 2, "value": "x"}')
        accepted = json.loads(c.receive(timeout=DEADLINE_S))
    finally:
        c.close()
    assert refused["error_code"] == 42204 and "surrogate" in refused["message"], refused
    assert accepted["id"] == 2 and accepted["offsets"][0]["error_code"] is None, accepted
    assert agent.producer_.written == 1 and bugs == []
