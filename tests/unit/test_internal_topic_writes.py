"""Only the coordinator appends to an internal topic (``__consumer_offsets``), as only Kafka's
group coordinator appends to its own: a client's PRODUCE there -- a tool copying every topic of
a cluster, ``loom produce __consumer_offsets`` -- would have the coordinator load forged commits
or tombstones at its next start. The broker refuses such a write with ``invalid_topic`` unless
the request says it is the coordinator's (``internal: true``, which the client library never
sends); reading an internal topic stays allowed."""

from __future__ import annotations

from pathlib import Path

from fabric import protocol as P
from fabric.metadata import ClusterMetadata, TopicInfo
from fabric.replies import decode_produce_results
from tests.unit.fakes import broker_core, loom_handlers, make_batch, request

OFFSETS = "__consumer_offsets"


def _leader_of_the_offsets_topic(tmp_path: Path):  # noqa: ANN202
    core = broker_core(tmp_path, 1)
    core.metadata = ClusterMetadata(1, "test", {}, {OFFSETS: TopicInfo(OFFSETS, (), {}), "t": TopicInfo("t", (), {})})
    for topic in (OFFSETS, "t"):
        core.open_partition(topic, 0, {}).become_leader(1, [1], [1], now_ms=0)
    handlers, server = loom_handlers(core)
    return core, handlers, server


def _produce(handlers, server, topic: str, **header):  # noqa: ANN001, ANN003, ANN202
    req = request(P.PRODUCE, [make_batch(2)], acks=1, timeout_ms=1000, parts=[[topic, 0]], **header)
    handlers.on_produce(req)
    handlers.after_pass()
    [result] = decode_produce_results(server.answer(req))
    return result


def test_a_clients_produce_to_an_internal_topic_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    core, handlers, server = _leader_of_the_offsets_topic(tmp_path)
    result = _produce(handlers, server, OFFSETS)
    assert result.error == P.INVALID_TOPIC, result
    assert "internal" in result.message
    assert core.partitions[(OFFSETS, 0)].log_end_offset == 0, "the refused batch was written"
    assert _produce(handlers, server, OFFSETS, internal=False).error == P.INVALID_TOPIC
    assert _produce(handlers, server, OFFSETS, internal=1).error == P.INVALID_TOPIC, "only true marks the coordinator"


def test_the_coordinators_append_and_other_topics_are_written(tmp_path: Path) -> None:
    core, handlers, server = _leader_of_the_offsets_topic(tmp_path)
    result = _produce(handlers, server, OFFSETS, internal=True)
    assert (result.error, result.base_offset) == (0, 0), result
    assert core.partitions[(OFFSETS, 0)].log_end_offset == 2
    assert _produce(handlers, server, "t").error == 0


def test_the_coordinators_offsets_client_marks_its_appends_internal() -> None:
    from fabric.records import build_batch
    from nodes.coordinator.offsets_client import OffsetsTopicClient

    sent: list[tuple[bytes, dict]] = []

    class Requester:
        def request(self, command: bytes, header: dict, payloads=(), *, callback, timeout_ms: int) -> None:  # noqa: ANN001
            sent.append((command, header))

    class Context:  # the coordinator's state: one offsets partition led by live broker 1
        class state:  # noqa: N801
            topics = {OFFSETS: type("T", (), {"partitions": [type("P", (), {"leader": 1})()]})()}
        brokers = {1: type("B", (), {"endpoint": "tcp://127.0.0.1:1"})()}
        alive = {1}

    client = OffsetsTopicClient(Context(), lambda endpoint: Requester())  # type: ignore[arg-type]
    assert client.append(0, build_batch([(1_700_000_000_000, b"k", b"v", None)]), False, lambda outcome: None)
    [(command, header)] = sent
    assert command == P.PRODUCE and header.get("internal") is True, header
