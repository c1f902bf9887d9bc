"""The produce routes' fast path (webui/fastpath.py) answers exactly as the Flask view does:
every case is sent once through the app as served (fast path in front) and once straight to
Flask, and status, body, headers and the request counters must be the same. The cases the
fast path serves itself must not reach Flask (its before_request hook does not run), so a
fast path that handed everything to Flask would fail here too."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from fabric.metadata import ClusterMetadata
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway, HttpRequestCounter
from webui.errors import ClusterError
from webui.events import EventHub
from webui.fastpath import ProduceFastPath

PRODUCE_KEY, READ_KEY = "loom_produce_key_0123456789", "loom_read_key_0123456789"
BINARY = "application/vnd.kafka.binary.v2+json"
EMBEDDED = "application/vnd.kafka.json.v2+json"
BODY_MAX = 4096


class ProduceAgent:
    """A topic ``t`` with 3 partitions; ``missing`` does not exist; ``down`` has no producer
    service; ``boom`` is a bug in the agent. A value ``fail`` is refused per record."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def metadata(self) -> Any:
        return ClusterMetadata.empty()

    def produce(self, topic: str, records: list, acks: Any, partition: int | None = None) -> list:
        self.calls.append((topic, records, acks, partition))
        if topic == "missing":
            raise ClusterError("topic_not_found", f"topic {topic!r} not found")
        if topic == "down":
            raise ClusterError("unavailable", "the producer service is down")
        if topic == "boom":
            raise RuntimeError("a bug")
        if partition is not None and partition >= 3:
            raise ClusterError("partition_not_found", f"topic {topic!r} has no partition {partition}")
        return [(r[3] or 0, -1, "NOT_ENOUGH_REPLICAS: 1 in sync", True) if r[1] == b"fail" else (r[3] or 0, i, None, False)
                for i, r in enumerate(records)]


def make_app(fast: bool, burst: int = 1000) -> tuple[Any, ProduceAgent, HttpRequestCounter, list[str]]:
    agent = ProduceAgent()
    counter = HttpRequestCounter()
    keys = KeyStore([("producer", hash_key(PRODUCE_KEY), ["produce"]), ("reader", hash_key(READ_KEY), ["read"])])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(1.0, burst, 100),
                 settings=GatewayConfig(request_bytes_max=BODY_MAX), security=SecurityConfig(rate_limit_per_s=1.0),
                 cluster_id="test", http_requests=counter)
    app = create_app(gw)
    assert isinstance(app.wsgi_app, ProduceFastPath)
    if not fast:
        app.wsgi_app = app.wsgi_app.app  # Flask alone
    flask_seen: list[str] = []
    app.before_request(lambda: flask_seen.append("flask") and None)
    return app.test_client(), agent, counter, flask_seen


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def binary(*values: bytes, **extra: Any) -> bytes:
    return json.dumps({"records": [{"value": b64(v), **extra} for v in values]}).encode()


AUTH = {"Authorization": f"Bearer {PRODUCE_KEY}"}
# (name, path, headers, body, served by the fast path)
CASES = [
    ("ok binary", "/topics/t", {**AUTH, "Content-Type": BINARY}, binary(b"a", b"b"), True),
    ("ok binary, key, headers, partition", "/topics/t", {**AUTH, "Content-Type": BINARY},
     json.dumps({"records": [{"key": b64(b"k"), "value": b64(b"v"), "partition": 2,
                              "headers": [{"name": "h", "value": b64(b"x")}, {"name": "n", "value": None}]}]}).encode(), True),
    ("ok embedded json", "/topics/t", {**AUTH, "Content-Type": EMBEDDED},
     json.dumps({"records": [{"key": {"a": 1}, "value": [1, "x", None]}]}).encode(), True),
    ("ok plain json with charset", "/topics/t", {**AUTH, "Content-Type": "application/json; charset=utf-8"},
     json.dumps({"records": [{"value": "text"}]}).encode(), True),
    ("ok to a partition", "/topics/t/partitions/1", {**AUTH, "Content-Type": BINARY}, binary(b"a"), True),
    ("X-API-Key", "/topics/t", {"X-API-Key": PRODUCE_KEY, "Content-Type": BINARY}, binary(b"a"), True),
    ("acks=1", "/topics/t?acks=1", {**AUTH, "Content-Type": BINARY}, binary(b"a"), True),
    ("acks twice: the first counts", "/topics/t?acks=0&acks=bad", {**AUTH, "Content-Type": BINARY}, binary(b"a"), True),
    ("acks invalid", "/topics/t?acks=2", {**AUTH, "Content-Type": BINARY}, binary(b"a"), True),
    ("acks escaped (to Flask)", "/topics/t?acks=%61ll", {**AUTH, "Content-Type": BINARY}, binary(b"a"), False),
    ("a record refused", "/topics/t", {**AUTH, "Content-Type": BINARY}, binary(b"a", b"fail"), True),
    ("no key", "/topics/t", {"Content-Type": BINARY}, binary(b"a"), True),
    ("bad key", "/topics/t", {"Authorization": "Bearer nope", "Content-Type": BINARY}, binary(b"a"), True),
    ("wrong role", "/topics/t", {"Authorization": f"Bearer {READ_KEY}", "Content-Type": BINARY}, binary(b"a"), True),
    ("text/plain", "/topics/t", {**AUTH, "Content-Type": "text/plain"}, b"{}", True),
    ("no content type", "/topics/t", AUTH, b"{}", True),
    ("not json", "/topics/t", {**AUTH, "Content-Type": BINARY}, b"{nope", True),
    ("empty body, no Content-Length (to Flask)", "/topics/t", {**AUTH, "Content-Type": BINARY}, b"", False),
    ("no records", "/topics/t", {**AUTH, "Content-Type": BINARY}, b'{"values": []}', True),
    ("value not base64", "/topics/t", {**AUTH, "Content-Type": BINARY}, b'{"records": [{"value": "!!"}]}', True),
    ("key not base64", "/topics/t", {**AUTH, "Content-Type": BINARY}, b'{"records": [{"key": "%", "value": "YQ=="}]}', True),
    ("body too large", "/topics/t", {**AUTH, "Content-Type": BINARY}, binary(b"x" * BODY_MAX), True),
    ("topic missing", "/topics/missing", {**AUTH, "Content-Type": BINARY}, binary(b"a"), True),
    ("partition missing", "/topics/t/partitions/7", {**AUTH, "Content-Type": BINARY}, binary(b"a"), True),
    ("producer service down", "/topics/down", {**AUTH, "Content-Type": BINARY}, binary(b"a"), True),
    ("a bug in the agent", "/topics/boom", {**AUTH, "Content-Type": BINARY}, binary(b"a"), True),
    ("topic name invalid", "/topics/bad%20name", {**AUTH, "Content-Type": BINARY}, binary(b"a"), True),
    ("partition with a leading zero (to Flask)", "/topics/t/partitions/01", {**AUTH, "Content-Type": BINARY}, binary(b"a"), False),
    ("partition not a number (to Flask)", "/topics/t/partitions/x", {**AUTH, "Content-Type": BINARY}, binary(b"a"), False),
    ("trailing slash (to Flask)", "/topics/t/", {**AUTH, "Content-Type": BINARY}, binary(b"a"), False),
]


@pytest.mark.parametrize("name, path, headers, body, fast", CASES, ids=[c[0] for c in CASES])
def test_the_fast_path_answers_as_flask_does(name: str, path: str, headers: dict, body: bytes, fast: bool) -> None:
    answers = []
    for use_fast in (True, False):
        client, agent, counter, flask_seen = make_app(use_fast)
        r = client.post(path, data=body, headers={**headers, "X-Request-Id": "case-1"})
        answers.append((r.status, r.get_data(), {k: v for k, v in r.headers.items() if k != "Date"},
                        counter.totals(), agent.calls))
        if use_fast:
            assert flask_seen == ([] if fast else ["flask"]), "served by the wrong path"
    assert answers[0] == answers[1]
    status, data = answers[0][0], json.loads(answers[0][1])
    assert ("error_code" in data) == (not status.startswith("200")), data


def test_a_5xx_is_logged_with_its_request_id(caplog: pytest.LogCaptureFixture) -> None:
    client, *_ = make_app(True)
    r = client.post("/topics/boom", data=binary(b"a"), headers={**AUTH, "Content-Type": BINARY})
    rid = r.headers["X-Request-Id"]
    assert r.status_code == 500 and r.get_json() == {"error_code": 50001, "message": f"internal error (request id {rid})"}
    assert rid in caplog.text and "a bug" in caplog.text


def test_the_rate_limit_is_shared_with_every_other_route() -> None:
    client, _, _, flask_seen = make_app(True, burst=2)
    assert client.get("/topics", headers=AUTH).status_code == 403  # a token taken by Flask's route
    assert client.post("/topics/t", data=binary(b"a"), headers={**AUTH, "Content-Type": BINARY}).status_code == 200
    r = client.post("/topics/t", data=binary(b"a"), headers={**AUTH, "Content-Type": BINARY})
    assert r.status_code == 429 and r.get_json()["error_code"] == 42901 and r.headers["Retry-After"] == "1"
    assert flask_seen == ["flask"]


def test_a_bad_request_id_is_replaced() -> None:
    client, *_ = make_app(True)
    r = client.post("/topics/t", data=binary(b"a"), headers={**AUTH, "Content-Type": BINARY, "X-Request-Id": "a b"})
    assert r.status_code == 200 and len(r.headers["X-Request-Id"]) == 32 and r.headers["X-Request-Id"] != "a b"
