"""The gateway's produce trusts topic metadata at most PRODUCE_METADATA_MAX_AGE_MS old instead of
asking the coordinator on every request, and still answers a missing topic with 404: a topic
not in the cached metadata is looked up afresh, and a request whose every record fails with an
unknown topic (deleted since the cached look) is answered 404 after a fresh look. Checked
through the real ``GatewayAgent`` with scripted metadata and a scripted producer service."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fabric import protocol as P
from fabric.config import load_config
from fabric.errors import RemoteError
from nodes.gateway.agent import GatewayAgent
from nodes.local_cluster import GATEWAY_NODES, make_config
from tests.unit.fakes import metadata_of
from webui.errors import ClusterError


class _Admin:
    """Metadata with the topics in ``topics`` (name -> partition count); counts the asks."""

    def __init__(self, topics: dict[str, int]) -> None:
        self.topics = topics
        self.asks = 0

    def metadata(self) -> Any:
        self.asks += 1
        return metadata_of(self.topics)


class _Service:
    """A producer service: every record lands at offset 7, or fails with ``error``."""

    def __init__(self) -> None:
        self.error = 0

    def produce_rows(self, topic: str, records: list, acks: Any, is_down: Any = None) -> tuple:
        return tuple((0, -1 if self.error else 7, self.error, "gone" if self.error else "") for _ in records)


@pytest.fixture
def agent(tmp_path: Path) -> tuple[GatewayAgent, _Admin, _Service]:
    admin, service = _Admin({"t": 2}), _Service()
    a = GatewayAgent(load_config(str(make_config(tmp_path, 1, extra_nodes=GATEWAY_NODES))),
                     make_admin=lambda: admin, make_producer=lambda: service)
    return a, admin, service


RECORD = (None, b"v", None, None)


def test_produce_asks_for_metadata_once_per_max_age_not_per_request(agent: Any) -> None:
    a, admin, _ = agent
    for _ in range(20):
        assert a.produce("t", [RECORD], "all") == [(0, 7, None, False)]
    assert admin.asks == 1


def test_a_topic_missing_from_the_cached_metadata_is_looked_up_afresh(agent: Any) -> None:
    a, admin, _ = agent
    a.produce("t", [RECORD], "all")
    admin.topics["new"] = 1  # created since the cached look
    assert a.produce("new", [RECORD], "all") == [(0, 7, None, False)]
    with pytest.raises(ClusterError) as e:
        a.produce("never", [RECORD], "all")
    assert e.value.kind == "topic_not_found"


def test_a_partition_beyond_the_cached_count_is_looked_up_afresh(agent: Any) -> None:
    a, admin, _ = agent
    a.produce("t", [RECORD], "all")
    admin.topics["t"] = 3  # partitions added since
    assert a.produce("t", [RECORD], "all", partition=2) == [(0, 7, None, False)]
    with pytest.raises(ClusterError) as e:
        a.produce("t", [RECORD], "all", partition=3)
    assert e.value.kind == "partition_not_found"


def test_a_topic_deleted_since_the_cached_look_is_404_not_per_record_errors(agent: Any) -> None:
    a, admin, service = agent
    a.produce("t", [RECORD], "all")
    del admin.topics["t"]
    service.error = P.UNKNOWN_TOPIC_OR_PARTITION  # what the service answers for every record
    with pytest.raises(ClusterError) as e:
        a.produce("t", [RECORD, RECORD], "all")
    assert e.value.kind == "topic_not_found"


def test_per_record_unknown_topic_errors_stay_per_record_while_the_topic_exists(agent: Any) -> None:
    a, _, service = agent
    service.error = P.UNKNOWN_TOPIC_OR_PARTITION  # e.g. a partition the service's metadata lacks
    outcomes = a.produce("t", [RECORD], "all")
    assert outcomes[0][2].startswith("unknown_topic_or_partition") and outcomes[0][:2] == (0, -1)
    # the record names no partition: the service placed it on one its older metadata had, and
    # places it again, under the metadata that failed it, when the client retries
    assert outcomes[0][3] is True


def test_a_named_partition_gone_since_the_cached_look_is_404_not_per_record_errors(agent: Any) -> None:
    """The topic was re-created with fewer partitions within the cached metadata's age: the
    service fails every record, and a fresh look shows the partition is gone."""
    a, admin, service = agent
    assert a.produce("t", [RECORD], "all", partition=1) == [(0, 7, None, False)]
    admin.topics["t"] = 1
    service.error = P.UNKNOWN_TOPIC_OR_PARTITION
    with pytest.raises(ClusterError) as e:
        a.produce("t", [RECORD, RECORD], "all", partition=1)
    assert e.value.kind == "partition_not_found" and "1" in e.value.message, e.value
    with pytest.raises(ClusterError) as e:
        a.produce("t", [RECORD, (None, b"v", None, 1)], "all")
    assert e.value.kind == "partition_not_found", e.value


@pytest.mark.parametrize("partition", [1.5, True, "1"])
def test_a_record_whose_partition_is_no_integer_is_refused_as_invalid(agent: Any, partition: Any) -> None:
    """Such a record reached the producer service, whose refusal came back as a 500. (1.0,
    which JSON Schema counts as an integer, is partition 1:
    tests/unit/test_gateway_integers_written_as_floats.py.)"""
    a, _, _ = agent
    with pytest.raises(ClusterError) as e:
        a.produce("t", [RECORD, (None, b"v", None, partition)], "all")
    assert e.value.kind == "invalid" and "partition" in e.value.message, e.value


def test_a_record_naming_a_partition_the_topic_lacks_is_refused_whole(agent: Any) -> None:
    a, _, _ = agent
    with pytest.raises(ClusterError) as e:
        a.produce("t", [RECORD, (None, b"v", None, 1), (None, b"v", None, 2)], "all")
    assert e.value.kind == "partition_not_found" and "2" in e.value.message, e.value
    assert a.produce("t", [RECORD, (None, b"v", None, 1)], "all") == [(0, 7, None, False)] * 2


def test_the_offsets_topic_is_described_and_its_produce_refused_with_invalid_topic(agent: Any) -> None:
    """README: a client's produce to ``__consumer_offsets`` is refused with invalid_topic and
    reading it is allowed. Over REST both were 404 (topic not found)."""
    a, admin, _ = agent
    admin.topics["__consumer_offsets"] = 4
    assert a.topic("__consumer_offsets").name == "__consumer_offsets"
    for partition in (None, 0):
        with pytest.raises(ClusterError) as e:
            a.produce("__consumer_offsets", [RECORD], "all", partition)
        assert e.value.kind == "invalid" and e.value.message.startswith("invalid_topic:")
        assert e.value.to_api().error_code == 42204


@pytest.mark.parametrize("route", [None, 1])
def test_a_later_chunk_refused_is_reported_per_record_with_one_error_prefix(agent: Any, route: Any) -> None:
    """A request over P.SERVICE_RECORDS_PER_REQUEST_MAX goes in chunks; one refused after an
    earlier one was written is answered per record, its message prefixed by the error's name
    once (it read ``not_leader: unavailable: not_leader: …``), with the route's partition when
    it named one (-1 otherwise: nothing placed the records)."""
    a, _, service = agent
    calls = []

    def produce_rows(topic: str, records: list, acks: Any, is_down: Any = None) -> tuple:
        calls.append(len(records))
        if len(calls) > 1:
            raise RemoteError(P.NOT_LEADER, "broker 2 does not lead t-0")
        return tuple((route or 0, 7, 0, "") for _ in records)
    service.produce_rows = produce_rows
    outcomes = a.produce("t", [RECORD] * (P.SERVICE_RECORDS_PER_REQUEST_MAX + 1), "all", route)
    assert len(calls) == 2 and outcomes[0] == (route or 0, 7, None, False)
    assert outcomes[-1] == (-1 if route is None else route, -1, "not_leader: broker 2 does not lead t-0", True)


def test_unknown_partition_is_final_only_for_a_record_naming_a_partition_gone() -> None:
    """Per record (the request partly written): unknown_topic_or_partition is retriable unless
    the record names (itself or by the route) a partition the fresh metadata lacks."""
    from types import SimpleNamespace

    from nodes.gateway.agent_produce import _gone_in, _retriable
    t = SimpleNamespace(partitions=[0, 1])  # made again with 2 partitions
    records = [(None, b"a", None, None), (None, b"b", None, 1), (None, b"c", None, 3)]
    gone = _gone_in("t", None, records, t)
    assert [_retriable(P.UNKNOWN_TOPIC_OR_PARTITION, gone, i) for i in range(3)] == [True, True, False]
    assert _retriable(P.UNKNOWN_TOPIC_OR_PARTITION, _gone_in("t", 2, records, t), 0) is False  # the route's partition
    assert _retriable(P.NOT_LEADER, gone, 2) is True and _retriable(P.INVALID_RECORD, gone, 0) is False


@pytest.mark.parametrize("route, own, reported", [
    (1, [None, None], [1, 1]),        # POST /topics/t/partitions/1
    (None, [1, None], [1, -1]),       # a record naming its partition; one the service places
])
def test_a_failed_record_reports_the_partition_the_request_named(agent: Any, route: Any, own: list,
                                                                 reported: list) -> None:
    """The producer service fails a record with partition -1; the route's partition, or the
    record's own, is known all the same and reported (it said -1 in every per-record error)."""
    a, _, service = agent
    service.produce_rows = lambda topic, records, acks, is_down=None: tuple(
        (-1, -1, P.NOT_ENOUGH_REPLICAS, "isr too small") for _ in records)
    records = [(None, b"v", None, p) for p in own]
    outcomes = a.produce("t", records, "all", route)
    assert [o[0] for o in outcomes] == reported and all(o[1] == -1 and o[2] for o in outcomes)
