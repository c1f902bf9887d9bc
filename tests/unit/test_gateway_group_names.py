"""A consumer group's name in a REST path (v2 ``/consumers/{group}``, v3
``…/consumer-groups/{group}``) and in ``/ws/consume``'s ``group=``: the gateway held it to the
topic naming rule ([A-Za-z0-9._-]), while the coordinator takes any group id of 1 to 249
characters, so a group a client library made ("orders service", "billing:eu", "équipe") was
refused 40002 and could not be looked at, reset or consumed over REST. Every such name a URL
path can carry (percent-encoded; not "/") is accepted now; only what the coordinator refuses is
40002 -- and what a URL cannot carry to the group it names: "." and ".." (dot segments, which
clients remove), escapes that are no UTF-8 (read with replacement: another group). Through the
Flask app with a stub agent."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, unquote

import pytest
from werkzeug.test import EnvironBuilder

from fabric import protocol as P
from tests.unit.fakes import KEYS, StubAgent, gateway_test_client
from webui.errors import ApiError, ClusterError
from webui.ws_consume import name_param, query_args

# names the coordinator takes (1 to 249 characters, any) that the old rule refused
GROUPS = ["orders service", "billing:eu", "équipe-1", "a*b?c#d%e&f", "g+h=i@j!", "\u4e2d\u6587", "x" * 249,
          "...", ".x", "x.", "\ufffd"]


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


CREATE = {**_auth("consume"), "Content-Type": "application/vnd.kafka.v2+json"}


def _refused(client: Any, raw: str) -> str:
    """The 40002 message of a group named ``raw`` (as it goes in the path), which both a v3
    lookup and a v2 instance create must answer so."""
    r = client.get(f"/v3/clusters/test/consumer-groups/{raw}", headers=_auth("read"))
    assert (r.status_code, r.get_json()["error_code"]) == (400, 40002), r.get_json()
    created = client.post(f"/consumers/{raw}", headers=CREATE, json={"name": "c1"})
    assert (created.status_code, created.get_json()["error_code"]) == (400, 40002), created.get_json()
    return r.get_json()["message"]


@pytest.mark.parametrize("raw", ["%FF", "a%FFb", "%ED%A0%80", "%C0%AE"], ids=["ff", "inside", "surrogate", "overlong"])
def test_a_group_name_whose_escapes_are_not_utf8_is_40002_not_another_group(served: tuple[Any, GroupsAgent],
                                                                            raw: str) -> None:
    """Percent-escapes that are no UTF-8 name no group (a group id is text). Decoded with
    replacement, they named the group of U+FFFD characters -- another group, created, consumed
    and committed for a client that asked for something else."""
    client, agent = served
    assert "UTF-8" in _refused(client, raw)
    with pytest.raises(ApiError) as e:  # /ws/consume?group=
        query_args(EnvironBuilder(query_string=f"topic=t&group={raw}").get_environ())
    assert e.value.error_code == 40002 and "UTF-8" in e.value.message
    assert agent.asked == []


def test_a_websockets_query_of_utf8_names_is_read_as_given() -> None:
    q = query_args(EnvironBuilder(query_string="topic=t&group=%C3%A9quipe+1%EF%BF%BD").get_environ())
    assert q == {"topic": "t", "group": "\u00e9quipe 1\ufffd"}


@pytest.mark.parametrize("raw", [".", "..", "%2E", "%2e%2E", ".%2E"])
def test_a_group_named_as_a_dot_segment_is_40002(served: tuple[Any, GroupsAgent], raw: str) -> None:
    """"." and ".." are dot segments: HTTP clients, browsers and proxies remove them from a path
    (also percent-encoded, RFC 3986 6.2.2), so a URL with such a group -- the base_uri the create
    answers -- reaches another route or none. Refused, saying why, wherever a group is named."""
    client, agent = served
    assert "'.' or '..'" in _refused(client, raw)
    with pytest.raises(ApiError) as e:
        name_param({"group": unquote(raw)}, "group")
    assert e.value.error_code == 40002
    assert agent.asked == []


class RecordingAgent(GroupsAgent):
    """Notes every group whose lags are asked for and every produce."""

    def group_lag(self, group: str) -> list:
        self.asked.append(group)
        return []

    def produce(self, topic: str, records: list, acks: Any) -> list:
        self.asked.append(topic)
        return [(0, 0, None, False)] * len(records)


@pytest.mark.parametrize("method, path", [
    ("GET", "/v3/clusters/test/consumer-groups/g%2Flags"),          # the lags of group "g"
    ("GET", "/v3/clusters/test/consumer-groups/g%2flag-summary"),
    ("POST", "/consumers/g%2Finstances"),                           # no route: a 404 that said nothing
    ("POST", "/topics/t%2Fpartitions%2F0"),                         # served ahead of Flask: t-0 written
], ids=["lags", "lag-summary", "no-route", "produce"])
def test_an_encoded_slash_in_a_name_is_40002_not_another_route(method: str, path: str) -> None:
    """%2F is decoded before routing: a name holding "/" (a group id the coordinator takes) made
    the path another route's -- the lags of group "g" for the group "g/lags", a produce to
    topic t partition 0 for the topic "t/partitions/0" -- or none. No name in a path can hold
    "/": 40002, saying so, and nothing asked of the cluster."""
    agent = RecordingAgent()
    client = gateway_test_client(agent)
    headers = {**_auth("admin"), "Content-Type": "application/vnd.kafka.json.v2+json"}
    r = client.open(path, method=method, headers=headers, json={"records": [{"value": 1}]})
    assert (r.status_code, r.get_json()["error_code"]) == (400, 40002), r.get_json()
    assert "'/'" in r.get_json()["message"]
    assert agent.asked == []


@pytest.mark.parametrize("rule", ["name", "group"])
def test_a_name_rules_regex_says_what_its_schema_says(rule: str) -> None:
    """The regex that checks a WebSocket's query is made from the schema that checks a path
    (``NameRule.of``): on the edges -- dot segments, "/", a newline, the length bounds -- the
    two take and refuse the same names."""
    import jsonschema_rs

    from webui.schemas import GROUP_NAME_RULE, NAME_RULE
    r = NAME_RULE if rule == "name" else GROUP_NAME_RULE
    schema = jsonschema_rs.Draft202012Validator(r.schema)  # as the routes check a path (webui/spec.py)
    names = ["", ".", "..", "...", ".x", "..x", "x.", "a/b", "/", "a\n", "\n.", "a b", "équipe",
             "x" * r.len_max, "x" * (r.len_max + 1), "." + "x" * (r.len_max - 1), *GROUPS]
    assert [r.regex.fullmatch(n) is not None for n in names] == [schema.is_valid(n) for n in names]
