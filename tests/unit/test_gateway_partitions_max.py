"""A topic may have up to ``fabric.protocol.PARTITIONS_MAX`` partitions (the coordinator's
limit, which ``loom topic create`` states); the REST create and PATCH schemas capped it at
1000, so a count the cluster takes was refused over REST. Checked through the app's
validation, with a stub agent that takes any topic."""

from __future__ import annotations

from typing import Any

import pytest

from fabric import protocol as P
from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from tests.unit.fakes import KEYS, StubAgent, metadata_of
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub

TOPICS = "/v3/clusters/test/topics"


class TopicsAgent(StubAgent):
    """Every topic exists with the last partition count asked for."""

    def __init__(self) -> None:
        self.counts: list[int] = []

    def create_topic(self, name: str, partitions: int | None, replication_factor: int | None, configs: dict) -> None:
        self.counts.append(partitions or 1)

    def alter_topic(self, name: str, partitions: int | None = None, configs: dict | None = None) -> None:
        self.counts.append(partitions or 1)

    def topic(self, name: str) -> Any:
        return metadata_of({name: self.counts[-1] if self.counts else 1}).topics[name]


@pytest.fixture
def client() -> Any:
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=TopicsAgent(), hub=EventHub(), keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test",
                 on_bug=lambda: pytest.fail("a bug in the gateway"))
    return create_app(gw).test_client()


AUTH = {"Authorization": f"Bearer {KEYS['admin']}"}


@pytest.mark.parametrize("count, status", [(1000, 201), (1001, 201), (P.PARTITIONS_MAX, 201), (P.PARTITIONS_MAX + 1, 422)])
def test_create_takes_up_to_the_clusters_partition_limit(client: Any, count: int, status: int) -> None:
    r = client.post(TOPICS, json={"topic_name": "t", "partitions_count": count}, headers=AUTH)
    assert r.status_code == status, r.get_json()


@pytest.mark.parametrize("count, status", [(1001, 200), (P.PARTITIONS_MAX, 200), (P.PARTITIONS_MAX + 1, 422)])
def test_patch_takes_up_to_the_clusters_partition_limit(client: Any, count: int, status: int) -> None:
    r = client.patch(f"{TOPICS}/t", json={"partitions_count": count}, headers=AUTH)
    assert r.status_code == status, r.get_json()
