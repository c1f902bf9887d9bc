"""A REST consumer instance's committed offsets name the topic they are of, and a seek may name
it back: ``GET …/offsets`` (Confluent's shape) answered offsets without topic ids, so a client
that looked a committed offset up and sought to it after the topic was deleted and made again
under its name applied the old topic's offset to the new topic (its records below it skipped).
Now each committed entry carries ``topic_id`` (every other field as before), and
``POST …/positions`` takes an optional ``topic_id`` per entry: one of a topic the instance knows
was deleted is refused, 404 / 40401 (the coordinator's ``unknown_topic_id``, as a commit of such
a position is), and nothing is sought.

The consumer service's ``Instance`` on the fake broker and scripted coordinator of
tests/unit/builders_group_consumer.py, and the gateway app with a stub agent."""

from __future__ import annotations

from typing import Any

import pytest

from fabric import protocol as P
from fabric.apikeys import hash_key
from fabric.config import GatewayConfig, SecurityConfig
from fabric.errors import RemoteError
from nodes.consumer_instance import check_op_header
from nodes.gateway.translate import translated
from tests.unit.builders_group_consumer import T0, RestInstance
from tests.unit.fakes import KEYS, StubAgent
from webui.app import create_app
from webui.auth import KeyStore, RateLimiter
from webui.context import Gateway
from webui.events import EventHub

NEW_ID = "id-t2"


# -- the consumer service's instance -------------------------------------------------------------
def test_the_committed_offsets_name_the_topic_they_are_of() -> None:
    rest = RestInstance()
    rest.coordinator.committed[T0] = 20
    assert rest.request("committed", partitions=[["t", 0]]) == {"offsets": [["t", 0, 20]], "topic_ids": {"t": "id-t"}}


def _made_again_under_the_instance(rest: RestInstance) -> None:
    """t deleted and made again (NEW_ID); the instance's metadata learns of it."""
    rest.broker.make_topic_again(NEW_ID)
    rest.coordinator.topic_ids["t"] = NEW_ID
    rest.coordinator.committed.clear()
    consumer = rest.instance.consumer
    for _ in range(50):
        if consumer.metadata.topics["t"].topic_id == NEW_ID:
            return
        rest.fetch()
    raise AssertionError("the instance's metadata never named the new topic")


def test_a_seek_to_an_offset_of_a_topic_deleted_since_is_refused_and_nothing_is_sought() -> None:
    rest = RestInstance()
    rest.coordinator.committed[T0] = 500
    looked_up = rest.request("committed", partitions=[["t", 0]])
    assert rest.fetch()[:1] == [500]
    _made_again_under_the_instance(rest)
    position = rest.instance.consumer.position(T0)
    [[t, p, offset]] = looked_up["offsets"]
    with pytest.raises(RemoteError) as refused:
        rest.request("seek", to="offsets", offsets=[[t, p, offset, looked_up["topic_ids"][t]]])
    assert refused.value.code == P.UNKNOWN_TOPIC_ID
    assert rest.instance.consumer.position(T0) == position, "a refused seek moved the position"
    rest.request("seek", to="offsets", offsets=[["t", 0, 7, NEW_ID]])  # an offset of the topic there is now
    assert rest.fetch()[:1] == [7]


def test_a_seek_naming_an_id_the_instance_does_not_know_is_refused_and_the_metadata_asked_for() -> None:
    """An id that never was (or of a topic made again that the instance's metadata does not name
    yet): taken, the partition waited for metadata naming it -- forever for one that never was."""
    rest = RestInstance()
    rest.coordinator.committed[T0] = 500
    assert rest.fetch()[:1] == [500]
    position = rest.instance.consumer.position(T0)
    with pytest.raises(RemoteError) as refused:
        rest.request("seek", to="offsets", offsets=[["t", 0, 3, "no-such-id"]])
    assert refused.value.code == P.UNKNOWN_TOPIC_ID
    assert rest.instance.consumer.position(T0) == position
    assert rest.instance.consumer._md_in_flight, "the metadata was not asked for"
    assert rest.fetch()[:1] == [position], "the partition stopped being read"


def test_a_partition_named_twice_in_a_seek_is_judged_by_its_last_entry_only() -> None:
    """The instance's side of ``POST …/positions`` (and of any client of CONSUMER_SEEK): the last
    entry of a partition wins, and an earlier one's id neither refuses the seek nor goes with it."""
    rest = RestInstance()
    rest.coordinator.committed[T0] = 500
    assert rest.fetch()[:1] == [500]
    rest.request("seek", to="offsets", offsets=[["t", 0, 3, "no-such-id"], ["t", 0, 7]])
    assert rest.fetch()[:1] == [7]
    with pytest.raises(RemoteError) as refused:
        rest.request("seek", to="offsets", offsets=[["t", 0, 3], ["t", 0, 9, "no-such-id"]])
    assert refused.value.code == P.UNKNOWN_TOPIC_ID


@pytest.mark.parametrize("entry, ok", [(["t", 0, 5], True), (["t", 0, 5, "id-t"], True), (["t", 0, 5, 7], False),
                                       (["t", 0, 5, "id-t", "x"], False)])
def test_a_seeks_entries_may_name_a_topic_id(entry: list, ok: bool) -> None:
    if ok:
        check_op_header("seek", {"to": "offsets", "offsets": [entry]})
        return
    with pytest.raises(RemoteError) as refused:
        check_op_header("seek", {"to": "offsets", "offsets": [entry]})
    assert refused.value.code == P.MALFORMED_REQUEST


@pytest.mark.parametrize("topic_id", [None, "id-t"])
def test_a_seek_naming_a_partition_not_assigned_among_others_is_refused_and_nothing_is_sought(
        topic_id: str | None) -> None:
    """``POST …/positions`` with t-0 (assigned) and t-1 (not): refused, and t-0 not moved either --
    sought before the refusal came, the client was told the seek failed while its position moved."""
    rest = RestInstance()
    rest.coordinator.committed[T0] = 500
    assert rest.fetch()[:1] == [500]
    position = rest.instance.consumer.position(T0)
    first = ["t", 0, 7] if topic_id is None else ["t", 0, 7, topic_id]
    with pytest.raises(RemoteError) as refused:
        rest.request("seek", to="offsets", offsets=[first, ["t", 1, 3]])
    assert refused.value.code == P.PARTITION_NOT_ASSIGNED
    assert rest.instance.consumer.position(T0) == position, "a refused seek moved t-0"


# -- the REST routes ------------------------------------------------------------------------------
class _Instance(StubAgent):
    """Consumer instance g/c1: t-0 committed at 20 (topic id-t), t-1 nothing; seeks naming a
    topic id other than id-t are refused as the instance refuses one of a deleted topic."""

    def __init__(self) -> None:
        self.sought: list[tuple[dict, dict | None]] = []

    def instance(self, group: str, name: str) -> Any:
        return None

    def call_instance(self, group: str, name: str, op: Any) -> Any:
        with translated("consumer-1"):
            return op(self)

    def committed_with_topic_ids(self, partitions: list | None = None) -> tuple[dict, dict]:
        return {("t", 0): 20, ("t", 1): -1}, {"t": "id-t"}

    def seek(self, offsets: dict, topic_ids: dict | None = None) -> None:
        if any(i != "id-t" for i in (topic_ids or {}).values()):
            raise RemoteError(P.UNKNOWN_TOPIC_ID, "t-0: topic id id-t0 was deleted")
        self.sought.append((offsets, topic_ids))


@pytest.fixture
def served() -> tuple[Any, _Instance]:
    agent = _Instance()
    keys = KeyStore([(role, hash_key(k), [role]) for role, k in KEYS.items()])
    gw = Gateway(agent=agent, hub=EventHub(), keys=keys, limiter=RateLimiter(1000.0, 1000, 100),
                 settings=GatewayConfig(), security=SecurityConfig(), cluster_id="test",
                 on_bug=lambda: pytest.fail("a bug in the gateway"))
    return create_app(gw).test_client(), agent


HEADERS = {"Authorization": f"Bearer {KEYS['consume']}", "Content-Type": "application/vnd.kafka.v2+json"}
BASE = "/consumers/g/instances/c1"


def test_get_offsets_answers_the_topic_id_of_each_committed_offset(served: Any) -> None:
    client, _ = served
    r = client.get(BASE + "/offsets", headers=HEADERS)
    assert r.status_code == 200, r.data
    assert r.get_json() == {"offsets": [
        {"topic": "t", "partition": 0, "offset": 20, "metadata": "", "topic_id": "id-t"},
        {"topic": "t", "partition": 1, "offset": -1, "metadata": ""}]}


def test_a_seek_names_the_topic_id_and_one_of_a_deleted_topic_is_404(served: Any) -> None:
    client, agent = served
    r = client.post(BASE + "/positions", headers=HEADERS,
                    json={"offsets": [{"topic": "t", "partition": 0, "offset": 20, "topic_id": "id-t"},
                                      {"topic": "t", "partition": 1, "offset": 3}]})
    assert r.status_code == 204, r.data
    assert agent.sought == [({("t", 0): 20, ("t", 1): 3}, {("t", 0): "id-t"})]
    r = client.post(BASE + "/positions", headers=HEADERS,
                    json={"offsets": [{"topic": "t", "partition": 0, "offset": 20, "topic_id": "id-t0"}]})
    assert r.status_code == 404 and r.get_json()["error_code"] == 40401, r.data
    assert len(agent.sought) == 1


def test_a_seek_without_topic_ids_is_as_before(served: Any) -> None:
    client, agent = served
    r = client.post(BASE + "/positions", headers=HEADERS,
                    json={"offsets": [{"topic": "t", "partition": 0, "offset": 9}]})
    assert r.status_code == 204, r.data
    assert agent.sought == [({("t", 0): 9}, None)]


@pytest.mark.parametrize("second", [{"offset": 7}, {"offset": 7, "topic_id": "id-t"}])
def test_a_partition_named_twice_in_a_seek_takes_offset_and_topic_id_from_the_same_entry(
        served: Any, second: dict) -> None:
    """The last entry of a partition wins, as in a commit's body -- its offset with its own
    topic_id (or none): the offset of the last entry was sought with the topic_id of an earlier
    one, naming a topic the offset may not be of (a spurious 404, or the wrong topic's check)."""
    client, agent = served
    r = client.post(BASE + "/positions", headers=HEADERS,
                    json={"offsets": [{"topic": "t", "partition": 0, "offset": 20, "topic_id": "id-t0"},
                                      {"topic": "t", "partition": 0, **second}]})
    assert r.status_code == 204, r.data
    ids = {("t", 0): second["topic_id"]} if "topic_id" in second else None
    assert agent.sought == [({("t", 0): 7}, ids)]


@pytest.mark.parametrize("entries, sought", [
    ([{"offset": 20, "topic_id": "id-t0"}, {"offset": 7}, {"offset": 9, "topic_id": "id-t"}], (9, "id-t")),
    ([{"offset": 20, "topic_id": "id-t0"}, {"offset": 7, "topic_id": "id-t"}, {"offset": 9}], (9, None)),
    ([{"offset": 20}, {"offset": 7, "topic_id": "id-t0"}, {"offset": 9}], (9, None)),
])
def test_a_partition_named_three_times_with_mixed_topic_ids_takes_its_last_entry(
        served: Any, entries: list[dict], sought: tuple[int, str | None]) -> None:
    client, agent = served
    r = client.post(BASE + "/positions", headers=HEADERS,
                    json={"offsets": [{"topic": "t", "partition": 0, **e} for e in entries]})
    assert r.status_code == 204, r.data
    offset, topic_id = sought
    assert agent.sought == [({("t", 0): offset}, {("t", 0): topic_id} if topic_id else None)]


def test_an_instance_seek_naming_a_partition_three_times_takes_its_last_entry() -> None:
    rest = RestInstance()
    rest.coordinator.committed[T0] = 500
    assert rest.fetch()[:1] == [500]
    rest.request("seek", to="offsets", offsets=[["t", 0, 3, "no-such-id"], ["t", 0, 5, "id-t"], ["t", 0, 7]])
    assert rest.fetch()[:1] == [7]
    before = rest.instance.consumer.position(T0)
    with pytest.raises(RemoteError) as refused:
        rest.request("seek", to="offsets", offsets=[["t", 0, 3], ["t", 0, 5, "id-t"], ["t", 0, 9, "no-such-id"]])
    assert refused.value.code == P.UNKNOWN_TOPIC_ID
    assert rest.instance.consumer.position(T0) == before, "a refused seek moved the position"
