"""JSON nested too deeply -- a request body, a WebSocket message, or a stored record read in
the JSON format -- is bad input, answered with a 4xx, never a RecursionError: the gateway takes
any exception that is not an ApiError or a ClusterError for a programmer error and stops its
worker, so one authenticated request of nested brackets took the REST and WebSocket gateway
down (for good when the stopping worker hung on an open WebSocket). Checked through the app as
served (the produce fast path in front) and through Flask alone (every other route)."""

from __future__ import annotations

import io
from typing import Any

import pytest

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from fabric.metadata import ClusterMetadata
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.errors import ApiError
from webui.events import EventHub
from webui.routes_v2 import decode_value
from webui.json_text import dumps

KEY = "loom_admin_key_0123456789"
EMBEDDED = "application/vnd.kafka.json.v2+json"
JSON = "application/json"


class Agent:
    def __init__(self) -> None:
        self.produced: list = []

    def metadata(self) -> Any:
        return ClusterMetadata.empty()

    def produce(self, topic: str, records: list, acks: Any, partition: int | None = None) -> list:
        self.produced += records
        return [(0, i, None, False) for i, _ in enumerate(records)]


@pytest.fixture
def served() -> tuple[Any, Agent, list[int]]:
    bugs: list[int] = []
    agent = Agent()
    gw = Gateway(agent=agent, hub=EventHub(), keys=KeyStore([("admin", hash_key(KEY), ["admin"])]),
                 limiter=RateLimiter(1000.0, 1000, 100), settings=GatewayConfig(request_bytes_max=4 << 20),
                 security=SecurityConfig(), cluster_id="test", on_bug=lambda: bugs.append(1))
    return create_app(gw).test_client(), agent, bugs


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("content_type", [EMBEDDED, JSON])
@pytest.mark.parametrize("depth", [100_000, 5_000, 1_023, 990, 900, 500])
def test_a_produce_body_nested_deeply_is_answered_and_nothing_stops(served: Any, content_type: str, depth: int) -> None:
    client, agent, bugs = served
    body = '{"records": [{"value": %s}]}' % nested(depth)
    r = client.post("/topics/t", data=body, headers={"Authorization": f"Bearer {KEY}", "Content-Type": content_type})
    assert r.status_code in (200, 400, 422), (r.status_code, r.get_json())
    if r.status_code != 200:
        assert "nested too deeply" in r.get_json()["message"], r.get_json()
    else:
        assert agent.produced, "answered 200 without producing"
    r.close()
    assert bugs == [], "the worker was stopped for bad input"


def test_another_routes_body_nested_deeply_is_a_400(served: Any) -> None:
    client, _, bugs = served
    body = '{"topic_name": %s}' % nested(100_000)
    r = client.post("/v3/clusters/test/topics", data=body, headers={"Authorization": f"Bearer {KEY}", "Content-Type": JSON})
    assert r.status_code == 400 and r.get_json()["error_code"] == 40001, r.get_json()
    r.close()
    assert bugs == []


@pytest.mark.parametrize("depth", [100_000, 1_023, 500])
def test_a_stored_value_nested_deeply_reads_without_a_recursion_error(depth: int) -> None:
    value = decode_value(nested(depth).encode(), "json")
    try:
        dumps({"value": value})
    except ApiError as e:  # too deep to write as JSON: a clear error, not a crash
        assert e.error_code == 42202 and "binary" in e.message


@pytest.mark.parametrize("size, status", [(4 << 20, 413), (1000, 200)])
def test_a_chunked_body_over_the_limit_is_a_413_not_a_cut_body(served: Any, size: int, status: int) -> None:
    """A body without a Content-Length (chunked) over ``request_bytes_max`` was cut at the limit
    unseen and answered 400 (JSON that does not parse); the Flask path reads it itself."""
    client, agent, bugs = served
    body = ('{"records": [{"value": "%s"}]}' % ("x" * size)).encode()
    r = client.post("/topics/t", input_stream=io.BytesIO(body),
                    environ_overrides={"wsgi.input_terminated": True, "CONTENT_LENGTH": ""},
                    headers={"Authorization": f"Bearer {KEY}", "Content-Type": EMBEDDED, "Transfer-Encoding": "chunked"})
    assert r.status_code == status, (r.status_code, r.get_json())
    if status == 413:
        assert r.get_json()["error_code"] == 41301
    r.close()
    assert bugs == []
