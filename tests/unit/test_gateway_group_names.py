"""A consumer group's name in a REST path (v2 ``/consumers/{group}``, v3
``…/consumer-groups/{group}``) and in ``/ws/consume``'s ``group=``: the gateway held it to the
topic naming rule ([A-Za-z0-9._-]), while the coordinator takes any group id of 1 to 249
characters, so a group a client library made ("orders service", "billing:eu", "équipe") was
refused 40002 and could not be looked at, reset or consumed over REST. Every such name a URL
path can carry (percent-encoded; not "/") is accepted now; only what the coordinator refuses is
40002. Through the Flask app with a stub agent."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from fabric import protocol as P
from tests.unit.fakes import KEYS, StubAgent, gateway_test_client
from webui.errors import ApiError, ClusterError
from webui.ws_consume import name_param

# names the coordinator takes (1 to 249 characters, any) that the old rule refused
GROUPS = ["orders service", "billing:eu", "équipe-1", "a*b?c#d%e&f", "g+h=i@j!", "\u4e2d\u6587", "x" * 249]


class GroupsAgent(StubAgent):
    """Knows no group; notes the names asked for."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def describe_group(self, group: str) -> dict:
        self.asked.append(group)
        raise ClusterError("group_not_found", f"consumer group {group!r} not found")

    def create_instance(self, group: str, name: str | None, config: dict, fmt: str) -> Any:
        self.asked.append(group)

        class Entry:
            pass
        entry = Entry()
        entry.name = name or "i-1"  # type: ignore[attr-defined]
        return entry


@pytest.fixture
def served() -> tuple[Any, GroupsAgent]:
    agent = GroupsAgent()
    return gateway_test_client(agent), agent


def _auth(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[role]}"}


@pytest.mark.parametrize("group", GROUPS)
def test_a_group_name_the_coordinator_takes_reaches_the_cluster(served: tuple[Any, GroupsAgent], group: str) -> None:
    client, agent = served
    r = client.get(f"/v3/clusters/test/consumer-groups/{quote(group, safe='')}", headers=_auth("read"))
    assert (r.status_code, r.get_json()["error_code"]) == (404, 40405), r.get_json()
    r = client.post(f"/consumers/{quote(group, safe='')}", headers={**_auth("consume"), "Content-Type": "application/vnd.kafka.v2+json"},
                    json={"name": "c1"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["base_uri"].endswith(f"/consumers/{quote(group, safe='')}/instances/c1")
    assert agent.asked == [group, group]
    assert name_param({"group": group}, "group") == group  # /ws/consume?group= takes it too


@pytest.mark.parametrize("bad", ["", "x" * (P.GROUP_ID_LEN_MAX + 1)], ids=["empty", "too long"])
def test_what_the_coordinator_refuses_is_40002(served: tuple[Any, GroupsAgent], bad: str) -> None:
    client, agent = served
    if bad:  # an empty segment is another route
        r = client.get(f"/v3/clusters/test/consumer-groups/{bad}", headers=_auth("read"))
        assert (r.status_code, r.get_json()["error_code"]) == (400, 40002), r.get_json()
        assert str(P.GROUP_ID_LEN_MAX) in r.get_json()["message"]
    with pytest.raises(ApiError) as e:
        name_param({"group": bad}, "group")
    assert e.value.error_code == (40002 if bad else 42206)
    assert agent.asked == []


def test_topic_names_keep_their_rule() -> None:
    with pytest.raises(ApiError) as e:
        name_param({"topic": "orders service"}, "topic")
    assert e.value.error_code == 40002
