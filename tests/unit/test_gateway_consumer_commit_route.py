"""``POST /consumers/{g}/instances/{i}/offsets``: a commit without offsets commits everything
fetched, whether the body is ``{}``, ``{"offsets": []}`` or empty -- an empty body was answered
415 without a Content-Type and 422 ("null is not of type object") with one. A commit naming a
partition its topic lacks is 404 / 40402 (partition not found); it was 40401 (topic not found),
the code of the cluster's unknown_topic_or_partition. Through the app with a stub agent whose
instance commits as the coordinator answers: refused for a topic or partition it lacks."""

from __future__ import annotations

from typing import Any

import pytest

from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from tests.unit.fakes import KEYS, StubAgent, metadata_of
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.errors import ClusterError
from webui.events import EventHub

V2 = "application/vnd.kafka.v2+json"
OFFSETS = "/consumers/g/instances/c1/offsets"


class CommittingAgent(StubAgent):
    """Topic ``clicks`` (3 partitions) and consumer instance g/c1, whose commits are listed
    (None: everything fetched)."""

    def __init__(self) -> None:
        self.commits: list[dict | None] = []

    def metadata(self) -> Any:
        return metadata_of({"clicks": 3})

    def instance(self, group: str, name: str) -> Any:
        return None

    def call_instance(self, group: str, name: str, op: Any) -> Any:
        return op(self)

    def commit(self, offsets: dict | None = None) -> None:
        topics = self.metadata().topics
        for t, p in offsets or {}:
            if t not in topics or p >= len(topics[t].partitions):  # as the coordinator refuses it
                raise ClusterError("topic_not_found", f"unknown_topic_or_partition: no partition {t}-{p}")
        self.commits.append(offsets)


@pytest.fixture
def served() -> tuple[Any, CommittingAgent]:
    agent = CommittingAgent()
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test",
                 on_bug=lambda: pytest.fail("a bug in the gateway"))
    return create_app(gw).test_client(), agent


AUTH = {"Authorization": f"Bearer {KEYS['consume']}"}


@pytest.mark.parametrize("body, headers", [
    (b"", {}), (b"", {"Content-Type": V2}), (b"", {"Content-Type": "application/json"}),
    (b"{}", {"Content-Type": V2}), (b'{"offsets": []}', {"Content-Type": V2})])
def test_a_commit_without_offsets_commits_everything_fetched(served: Any, body: bytes, headers: dict) -> None:
    client, agent = served
    r = client.post(OFFSETS, data=body, headers={**AUTH, **headers})
    assert r.status_code == 204, (r.status_code, r.data)
    assert agent.commits == [None]
    assert "Content-Type" not in r.headers and r.data == b""  # no content: no type (it said text/html)


def test_an_empty_body_is_documented_as_optional(served: Any) -> None:
    client, _ = served
    op = client.get("/openapi.json").get_json()["paths"]["/consumers/{group_name}/instances/{instance}/offsets"]["post"]
    assert op["requestBody"]["required"] is False


@pytest.mark.parametrize("topic, partition, code", [("clicks", 99, 40402), ("clicks", 3, 40402), ("nope", 0, 40401)])
def test_a_commit_naming_a_partition_the_cluster_lacks_says_which(served: Any, topic: str, partition: int,
                                                                   code: int) -> None:
    client, agent = served
    r = client.post(OFFSETS, json={"offsets": [{"topic": "clicks", "partition": 0, "offset": 5},
                                               {"topic": topic, "partition": partition, "offset": 5}]}, headers=AUTH)
    assert r.status_code == 404 and r.get_json()["error_code"] == code, r.get_json()
    assert (topic if code == 40401 else f"partition {partition}") in r.get_json()["message"]
    assert agent.commits == []
