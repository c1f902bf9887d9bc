"""A programmer error in a gateway request (not an ApiError or a ClusterError) is answered 500
with its request id -- the client gets an answer -- and then stops the worker, as a bug stops
every other node: gunicorn's master starts a fresh worker. An operating error (a missing topic,
a service down) is answered and nothing stops. Checked through the app as served (the produce
fast path in front) and through Flask alone (every other route)."""

from __future__ import annotations

import errno
import io
import signal
from typing import Any

import pytest

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from fabric.metadata import ClusterMetadata
from nodes import gateway as gateway_node
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.errors import ClusterError
from webui.events import EventHub

KEY = "loom_admin_key_0123456789"
AUTH = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/vnd.kafka.json.v2+json"}
BODY = b'{"records": [{"value": 1}]}'


class BuggyAgent:
    """Topic ``boom``: a bug in the agent; ``missing``: no such topic."""

    def metadata(self) -> Any:
        return ClusterMetadata.empty()

    def produce(self, topic: str, records: list, acks: Any, partition: int | None = None) -> list:
        if topic == "boom":
            raise TypeError("a bug")
        raise ClusterError("topic_not_found", f"topic {topic!r} not found")

    def topic(self, name: str) -> Any:
        if name == "boom":
            raise AssertionError("a broken invariant")
        raise ClusterError("topic_not_found", f"topic {name!r} not found")


@pytest.fixture
def served() -> tuple[Any, list[int]]:
    bugs: list[int] = []
    gw = Gateway(agent=BuggyAgent(), hub=EventHub(), keys=KeyStore([("admin", hash_key(KEY), ["admin"])]),
                 limiter=RateLimiter(1000.0, 1000, 100), settings=GatewayConfig(), security=SecurityConfig(),
                 cluster_id="test", on_bug=lambda: bugs.append(1))
    return create_app(gw).test_client(), bugs


@pytest.mark.parametrize("method, path", [
    ("POST", "/topics/boom"),                      # the produce fast path
    ("GET", "/v3/clusters/test/topics/boom"),      # Flask
])
def test_a_bug_is_answered_500_then_stops_the_worker(served: Any, method: str, path: str) -> None:
    client, bugs = served
    r = client.open(path, method=method, headers=AUTH, data=BODY if method == "POST" else None)
    assert r.status_code == 500 and r.get_json()["error_code"] == 50001
    assert r.headers["X-Request-Id"] in r.get_json()["message"]
    r.close()
    assert bugs == [1]


@pytest.mark.parametrize("method, path", [("POST", "/topics/missing"), ("GET", "/v3/clusters/test/topics/missing")])
def test_an_operating_error_is_answered_and_nothing_stops(served: Any, method: str, path: str) -> None:
    client, bugs = served
    r = client.open(path, method=method, headers=AUTH, data=BODY if method == "POST" else None)
    assert r.status_code == 404
    r.close()
    assert bugs == []


def test_the_gateway_node_stops_its_worker_on_a_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[tuple[int, int]] = []
    monkeypatch.setattr(gateway_node.os, "kill", lambda pid, sig: sent.append((pid, sig)))
    gateway_node.stop_worker()
    assert sent == [(gateway_node.os.getpid(), signal.SIGTERM)]


class ResetSocket:
    """The socket of a client that reset the connection: every send fails."""

    def send(self, data: bytes) -> int:
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


class ResetBody(io.RawIOBase):
    """A request body whose client reset the connection half way: every read fails."""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        raise ConnectionResetError(errno.ECONNRESET, "Connection reset by peer")


UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


@pytest.mark.parametrize("drop", ["Sec-WebSocket-Key", "Sec-WebSocket-Version"])
def test_a_malformed_websocket_upgrade_is_the_clients_error(served: Any, drop: str) -> None:
    """wsproto refuses the handshake before any route code runs (no key, no rate limit yet):
    that was a 500 and the worker's end, so any client could restart the gateway at will."""
    client, bugs = served
    headers = {k: v for k, v in UPGRADE.items() if k != drop}
    r = client.get("/ws/events", headers=headers, environ_base={"werkzeug.socket": ResetSocket()})
    assert r.status_code == 400 and r.get_json()["error_code"] == 40001, r.get_data()
    r.close()
    assert bugs == []


def test_a_client_gone_during_the_websocket_handshake_stops_nothing(served: Any) -> None:
    client, bugs = served
    r = client.get("/ws/events", headers=UPGRADE, environ_base={"werkzeug.socket": ResetSocket()})
    assert r.status_code == 400 and r.get_json()["error_code"] == 40001, r.get_data()
    r.close()
    assert bugs == []


@pytest.mark.parametrize("path, content_type", [
    ("/topics/t", AUTH["Content-Type"]),                 # the produce fast path
    ("/consumers/g", "application/vnd.kafka.v2+json"),   # Flask
])
def test_a_client_gone_while_its_body_is_read_stops_nothing(served: Any, path: str, content_type: str) -> None:
    """A connection reset while the body is read (a client's network, not a bug) used to be a
    500 and the worker's end: every other client's WebSockets and consumer instances with it."""
    client, bugs = served
    r = client.post(path, headers={**AUTH, "Content-Type": content_type}, data=BODY, environ_overrides={"wsgi.input": io.BufferedReader(ResetBody())})
    assert r.status_code == 400 and r.get_json()["error_code"] == 40001, r.get_data()
    r.close()
    assert bugs == []
